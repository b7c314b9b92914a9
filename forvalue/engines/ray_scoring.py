"""Stored scoring on Ray: one task per shard.

The valuation set's token table (:class:`forvalue.scoring.MeanTable`) is built once on the driver and
put in Ray's object store; each task reads one shard of the training features (memory-mapped for the
bounded format) and returns (raw, normalized, norm) of its samples. At most ``workers`` tasks run at
a time, so the driver holds the per-sample results only. The tasks only read, so a retried task
changes nothing. Values equal :meth:`forvalue.valuator.Valuator.score_stored` (same kernel).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..features import FeatureConfig
from . import EngineConfig, EngineStats
from .ray_session import import_ray, start, stop


def _score_shard(root: str, folder: str, info: dict, ids: list[str], table):
    import os

    import torch

    from ..feature_source import ordered
    from ..store import FeatureStore

    torch.set_num_threads(1)
    feats = ordered(FeatureStore(root)._read_shard(Path(folder), info))
    if len(ids) != len(feats):
        feats = ordered(feats.select(ids))
    raw, normalized, norms = table.values(feats)
    return list(feats.sample_ids), raw, normalized, norms, os.getpid()


def score_stored(store, fingerprint, config: FeatureConfig, train_ids: Sequence[str], val_ids: Sequence[str],
                 engine: EngineConfig, *, num_cpus: float | None = None):
    """(:class:`forvalue.scoring.ScoreResult`, :class:`EngineStats`): the stored training features of
    ``train_ids`` scored against the stored valuation features of ``val_ids``, one Ray task per shard;
    results in the order of ``train_ids``. KeyError when some features are missing."""
    from ..feature_source import StoreSource
    from ..scoring import MeanTable, ScoreResult

    t0 = time.perf_counter()
    source = StoreSource(store, fingerprint, config, train_ids)    # the shard plan: each sample once
    val = store.load(fingerprint, config, list(val_ids))
    table = MeanTable(val, dtype=np.float64 if val.vectors.dtype == np.float64 else np.float32)
    session = start(engine.ray_address, num_cpus=num_cpus)
    try:
        ray = import_ray()
        cpus = max(0.1, min(1.0, (max(session.cpus, 1.0) - 0.5) / engine.workers))
        task = ray.remote(num_cpus=cpus, max_retries=3)(_score_shard)
        t_ref = ray.put(table)
        root, folder = str(Path(store.root).resolve()), str(store.folder(fingerprint, config))
        results: dict[str, tuple] = {}
        pending, plan, pids = [], list(source._shards), set()
        t_run = time.perf_counter()
        while plan or pending:
            while plan and len(pending) < engine.workers:
                info, ids = plan.pop(0)
                pending.append(task.remote(root, folder, info, ids, t_ref))
            done, pending = ray.wait(pending, num_returns=1)
            for ids, raw, normalized, norms, pid in ray.get(done):
                pids.add(pid)
                for j, sid in enumerate(ids):
                    results[sid] = (raw[j], normalized[j], norms[j])
        run_s = time.perf_counter() - t_run
    finally:
        stop(session)
    out = np.array([results[s] for s in train_ids], dtype=np.float64).reshape(len(train_ids), 3)
    stats = EngineStats(engine="ray", workers=engine.workers, processes=len(pids), batches=len(source._shards),
                        startup_s=session.startup_s, seconds=time.perf_counter() - t0,
                        rows_per_s=len(train_ids) / run_s if run_s > 0 else 0.0)
    res = ScoreResult(values=out[:, 0], matrix=None, method="sparse", config=config, train_ids=list(train_ids),
                      val_ids=list(val_ids), seconds=time.perf_counter() - t0,
                      info={"streamed": True, "shards": len(source._shards), "engine": "ray"},
                      normalized=out[:, 1], norms=out[:, 2])
    return res, stats


__all__ = ["score_stored"]
