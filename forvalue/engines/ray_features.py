"""Feature extraction on Ray Data.

The samples become a Ray dataset of pickled samples; ``map_batches`` streams batches of ``shard_size``
samples through a fixed pool of :class:`FeatureActor` (``compute=ActorPoolStrategy``): each actor
loads the model once and writes each batch through :class:`forvalue.store.feature_store.FeatureStore`, so the
shards and manifests are those of the in-process engine. Exactly once: every batch is computed under
the store's claims (a sample already stored is skipped, one claimed by a live writer is waited for,
and a dead writer's claim frees itself with its process), so a retried batch (a killed actor's, which
Ray restarts and retries) or a duplicated one stores nothing twice. Each actor returns one summary row
per batch; the driver never holds the features. Each start of a batch leaves an empty file in a
folder of the store root (``.attempts-*``, removed when the run ends), from which the driver counts
the retried batches (:func:`count_retries`).

The store must be a folder every actor can reach (one machine, or a shared file system with working
``flock``: NFSv4, CephFS, Lustre; docs/scale-out.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import DataError, ForValueError
from ..valuation.features import FeatureConfig
from ..models.loading import ModelConfig, ModelFingerprint
from ..store.feature_store import DEFAULT_SHARD_SIZE
from . import EngineConfig, EngineStats
from .ray_session import EngineError, import_ray, start, stop


@dataclass
class RayFeatureResult:
    computed: int                  # samples computed by this run
    reused: int                    # samples found stored (or stored by another writer meanwhile)
    shards_written: list[Path]
    n_rows: int                    # feature rows in the shards written
    fingerprint: ModelFingerprint | None
    folder: Path | None
    stats: EngineStats = field(default_factory=EngineStats)
    samples: int = 0               # samples the actors handled (each batch's distinct ids)


ATTEMPTS = ".attempts-"   # the store root's folder of a run's batch starts (removed when the run ends)


def count_retries(folder: Path) -> int:
    """Batch starts beyond the first per batch: each start of a batch left one empty file named
    ``<batch key>.<random>`` in ``folder`` (a retried batch, a killed actor's, counts twice)."""
    from collections import Counter

    starts = Counter(name.split(".", 1)[0] for name in os.listdir(folder))
    return sum(n - 1 for n in starts.values())


class FeatureActor:
    """One model copy: computes and stores the features of the batches Ray Data hands it."""

    def __init__(self, model: dict, config: dict, store_root: str, batch_size: int, on_error: str,
                 extra: dict | None, threads: int, device_map: str | None, attempts=None):
        import torch

        from ..models.loading import load_model
        from ..store.feature_store import FeatureStore

        torch.set_num_threads(max(1, threads))
        mc = ModelConfig(**model)
        self.lm = load_model(mc.model, device=mc.device, dtype=mc.dtype, trust_remote_code=mc.trust_remote_code,
                             device_map=device_map)
        self.config = FeatureConfig.from_dict(config)
        self.store = FeatureStore(store_root)
        self.folder = self.store.folder(self.lm.fingerprint, self.config)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.batch_size, self.on_error, self.extra, self.attempts = batch_size, on_error, extra, attempts
        self.model_json = json.dumps(self.lm.fingerprint.to_dict())

    def __call__(self, batch: dict) -> dict:
        from ..errors import DataError
        from ..valuation.features import encode_all

        t0 = time.perf_counter()
        samples = list({s.sample_id: s for s in (pickle.loads(b) for b in batch["sample"] if len(b))}.values())
        # bad rows found by a read task inside Ray (forvalue.engines.ray_read)
        errors = [str(e) for e in batch.get("error", ()) if e]
        bad_rows = [json.loads(e) for e in errors]
        key = hashlib.sha256("\n".join([s.sample_id for s in samples] + errors).encode()).hexdigest()[:16]
        if self.attempts is not None:   # this batch's start, counted by the driver (count_retries)
            Path(self.attempts, f"{key}.{os.getpid()}-{time.monotonic_ns()}").touch()
        if bad_rows and self.on_error == "raise":
            return self._row(key, len(samples), 0, 0, [], [], 0, t0, error=bad_rows[0])
        try:
            encoded, skipped = encode_all(self.lm, samples, self.config, on_error=self.on_error)
        except DataError as e:   # handed to the driver as data: Ray Data keeps only the text of a UDF's error
            return self._row(key, len(samples), 0, 0, [], [], 0, t0, error=[e.file, e.row, e.field, e.reason])
        skipped = [(None, DataError(*e)) for e in bad_rows] + skipped
        bad = {id(s) for s, _ in skipped}
        todo = [s for s in samples if id(s) not in bad]
        # the store's claim loop: stored ids skipped, ids claimed by a live writer waited for
        computed, written = self.store.compute_claimed(self.lm, self.folder, todo, encoded, self.config, self.batch_size,
                                                max(1, len(todo)), False, self.extra) if todo else (0, [])
        n_rows = sum(json.loads(p.read_text())["n_rows"] for p in written)
        return self._row(key, len(samples), computed, len(todo) - computed, skipped, written, n_rows, t0)

    def _row(self, key, n, computed, reused, skipped, written, n_rows, t0, error=None) -> dict:
        import numpy as np

        row = {"key": key, "pid": os.getpid(), "n": n, "computed": computed, "reused": reused, "rows": n_rows,
               "skipped": json.dumps([[s.sample_id if s is not None else None, str(e)] for s, e in skipped]),
               "shards": json.dumps([p.name for p in written]), "model": self.model_json,
               "error": json.dumps(error), "seconds": time.perf_counter() - t0}
        return {k: np.asarray([v]) for k, v in row.items()}


def _plan(session, engine: EngineConfig, device: str = "auto") -> tuple[float, float, int]:
    """(CPUs per actor, GPUs per actor, torch threads per actor). Actors take fractional CPUs and
    leave one CPU free: a pool holding every CPU starves Ray Data's other tasks (the read stage
    deadlocks with two one-CPU actors on a two-CPU Ray)."""
    cpus = max(session.cpus, 1.0)
    per = max(0.1, min(1.0, (cpus - 1.0) / engine.workers)) if cpus > 1 else 0.5 / engine.workers
    gpus = engine.gpus_per_worker if engine.gpus_per_worker is not None else (
        1.0 if session.gpus >= 1 and device not in ("cpu", "mps") else 0.0)
    if gpus * engine.workers > session.gpus:   # else the actors would wait for GPUs forever
        raise EngineError(f"{engine.workers} workers x {gpus:g} GPUs need {gpus * engine.workers:g} GPUs; the Ray "
                          f"cluster has {session.gpus:g} (fewer --workers or --gpus-per-worker)")
    threads = max(1, int(cpus // engine.workers))
    return per, gpus, threads


def _unwrap(e: BaseException) -> BaseException | None:
    """The ForValueError behind a Ray error. Ray wraps a task's exception (sometimes twice), and Ray
    Data keeps only its text for an actor's failure ("forvalue.errors.ModelError: ..."), so the
    error is rebuilt from that line when the object is gone."""
    import re

    from .. import errors

    seen, text = set(), str(e)
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ForValueError):
            return e
        nxt = getattr(e, "cause", None)
        e = nxt if isinstance(nxt, BaseException) else (e.__cause__ or e.__context__)
    for line in reversed(text.splitlines()):
        m = re.match(r"^(?:\S*\.)?forvalue\.errors\.(\w+): (.+)$", line.strip())
        cls = getattr(errors, m.group(1), None) if m else None
        if isinstance(cls, type) and issubclass(cls, ForValueError) and cls is not errors.DataError:
            return cls(m.group(2))
    return None


def featurize(model: ModelConfig, samples: Sequence, config: FeatureConfig, store_root: str | Path,
              engine: EngineConfig, *, shard_size: int = DEFAULT_SHARD_SIZE, on_error: str = "raise",
              extra: dict | None = None, progress: bool = False, num_cpus: float | None = None,
              session=None) -> RayFeatureResult:
    """Compute and store the features of ``samples`` missing from the store at ``store_root`` on a
    Ray actor pool of ``engine.workers``: in ``session`` (a :class:`forvalue.engines.ray_session.RaySession`
    the caller holds), else a local Ray started for the run or the cluster at ``engine.ray_address``."""
    unique = list({s.sample_id: s for s in samples}.values())
    return _featurize(lambda ray, size: _items_dataset(ray, unique, engine, size), model, config, store_root, engine,
                      shard_size, on_error, extra, progress, num_cpus, session)


def featurize_file(model: ModelConfig, path: str | Path, config: FeatureConfig, store_root: str | Path,
                   engine: EngineConfig, *, columns=None, shard_size: int = DEFAULT_SHARD_SIZE,
                   on_error: str = "raise", extra: dict | None = None, progress: bool = False,
                   num_cpus: float | None = None, segment_bytes: int | None = None, session=None) -> RayFeatureResult:
    """:func:`featurize` of a data file. A JSONL or Parquet file larger than ``segment_bytes`` (64 MB)
    is read inside Ray (:mod:`forvalue.engines.ray_read`: one read task per segment, streaming into
    the actors as they work); a bad row then stops the run when a worker reaches it
    (``on_error="raise"``; the batches stored before stay valid) or is skipped and reported
    (``"skip"``). Other files are streamed in batches by this process (forvalue.data.stream), which holds
    one batch at a time while the rest waits in Ray's object store; a bad row stops the run before
    any work."""
    from ..data.samples import Columns
    from .ray_read import SEGMENT_BYTES, plan

    columns = columns or Columns()
    cut = plan(path, segment_bytes or SEGMENT_BYTES)
    if cut is None:     # small, CSV, a JSON array or a HF folder: streamed by this process
        return _featurize(lambda ray, size: file_dataset(ray, path, columns, on_error, engine, size),
                          model, config, store_root, engine, shard_size, on_error, extra, progress, num_cpus, session)
    res = _featurize(lambda ray, size: _segments_dataset(ray, path, cut, columns, engine, size),
                     model, config, store_root, engine, shard_size, on_error, extra, progress, num_cpus, session)
    if not res.computed + res.reused:
        raise DataError(str(path), None, None, f"no usable samples ({len(res.stats.skipped)} skipped)")
    return res


def _featurize(dataset, model, config, store_root, engine, shard_size, on_error, extra, progress, num_cpus,
               session=None):
    """One actor-pool run in ``session`` (kept running), or in a session started and stopped here."""
    if shard_size < 1:
        raise ForValueError(f"shard_size must be >= 1, got {shard_size}")
    t0 = time.perf_counter()
    own = session is None
    if own:
        session = start(engine.ray_address, num_cpus=num_cpus)
    try:
        return _run(session, model, dataset, config, Path(store_root).resolve(), engine, shard_size, on_error,
                    extra, progress, t0)
    finally:
        if own:
            stop(session)


def _batch_size(n: int, engine: EngineConfig, shard_size: int) -> int:
    """A small run still reaches every worker: batches of at most n / workers samples (a batch is a shard)."""
    return max(1, min(shard_size, -(-n // engine.workers)))


def _items_dataset(ray, samples: list, engine: EngineConfig, shard_size: int):
    """(dataset, batch size, rows skipped while reading) of samples at hand."""
    shard_size = _batch_size(len(samples), engine, shard_size)
    n_batches = max(1, -(-len(samples) // shard_size))
    ds = ray.data.from_items([{"sample": pickle.dumps(s)} for s in samples],
                             override_num_blocks=min(n_batches, 64 * engine.workers))
    return ds, shard_size, []


def file_dataset(ray, path, columns, on_error: str, engine: EngineConfig, shard_size: int):
    """(dataset, batch size, rows skipped while reading) of a data file, read batch by batch into Ray's
    object store as Arrow tables of pickled samples."""
    from ..data.stream import iter_batches
    from .ray_read import sample_table

    refs, n, skipped = [], 0, []
    for batch in iter_batches(path, columns=columns, batch_rows=max(shard_size, 2048)):
        if batch.errors and on_error == "raise":
            raise batch.errors[0]
        skipped += [(None, str(e)) for e in batch.errors]
        if batch.samples:
            refs.append(ray.put(sample_table(batch.samples)))
            n += len(batch.samples)
    if not n:
        raise DataError(str(path), None, None, "no usable samples" + (f" ({len(skipped)} skipped)" if skipped
                                                                        else " (empty file)"))
    shard_size = _batch_size(n, engine, shard_size)
    ds = ray.data.from_arrow_refs(refs)
    if len(refs) < engine.workers * 2:   # few big blocks: split them so every worker gets batches
        ds = ds.repartition(min(-(-n // shard_size), 64 * engine.workers))
    return ds, shard_size, skipped


def _segments_dataset(ray, path, cut, columns, engine: EngineConfig, shard_size: int):
    """(dataset, batch size, rows skipped while reading) of a file read inside Ray, one read task per
    segment (its rows counted by the plan, so a small run still reaches every worker)."""
    from .ray_read import datasource

    fmt, segments = cut
    shard_size = _batch_size(sum(seg.rows for seg in segments), engine, shard_size)
    ds = ray.data.read_datasource(datasource(path, fmt, segments, columns, max(shard_size, 2048)),
                                  override_num_blocks=len(segments))
    return ds, shard_size, []


def _run(session, model, dataset, config, root, engine, shard_size, on_error, extra, progress, t0):
    ray = import_ray()
    from ray.data import ActorPoolStrategy, DataContext

    cpus, gpus, threads = _plan(session, engine, model.device)
    DataContext.get_current().enable_progress_bars = progress
    if not progress:   # Ray Data's per-run INFO lines
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds, shard_size, read_skipped = dataset(ray, shard_size)
    # the batch starts go to a folder of the store (every actor reaches it): no counter actor, whose
    # process cost about a CPU second per run
    attempts = root / f"{ATTEMPTS}{os.getpid()}-{time.time_ns()}"
    attempts.mkdir(parents=True)
    ctor = dict(model=asdict(model), config=config.to_dict(), store_root=str(root), batch_size=model.batch_size,
                on_error=on_error, extra=extra, threads=threads,
                device_map="auto" if gpus > 1 else None, attempts=str(attempts))
    out = ds.map_batches(FeatureActor, fn_constructor_kwargs=ctor, batch_size=shard_size, batch_format="numpy",
                         compute=ActorPoolStrategy(size=engine.workers), num_cpus=cpus, num_gpus=gpus or None)
    t_run = time.perf_counter()
    agg = {"computed": 0, "reused": 0, "rows": 0, "n": 0}
    shards, skipped, pids, fp, batches = [], list(read_skipped), set(), None, 0
    try:
        for row in out.iter_rows():
            error = json.loads(row["error"])
            if error:   # a bad sample with on_error="raise": stop (shards already written stay valid)
                raise DataError(*error)
            batches += 1
            for k in agg:
                agg[k] += int(row[k])
            shards += json.loads(row["shards"])
            skipped += [tuple(x) for x in json.loads(row["skipped"])]
            pids.add(int(row["pid"]))
            fp = fp or row["model"]
        retried = count_retries(attempts)
    except DataError:
        raise
    except Exception as e:   # a task's error arrives wrapped by Ray
        inner = _unwrap(e)
        if inner is not None:
            raise inner from None
        raise EngineError(f"the Ray feature run failed: {str(e).strip().splitlines()[-1][:500]}") from None
    finally:
        shutil.rmtree(attempts, ignore_errors=True)
    run_s = time.perf_counter() - t_run
    fingerprint = ModelFingerprint.from_dict(json.loads(fp)) if fp else None
    folder = None
    if fingerprint is not None:
        from ..store.feature_store import FeatureStore

        folder = FeatureStore(root).folder(fingerprint, config)
    stats = EngineStats(engine="ray", workers=engine.workers, processes=len(pids), batches=batches,
                        retried_tasks=int(retried), startup_s=session.startup_s, seconds=time.perf_counter() - t0,
                        rows_per_s=agg["n"] / run_s if run_s > 0 else 0.0, skipped=skipped)
    return RayFeatureResult(computed=agg["computed"], reused=agg["reused"],
                            shards_written=[folder / s for s in shards] if folder else [], n_rows=agg["rows"],
                            fingerprint=fingerprint, folder=folder, stats=stats, samples=agg["n"])


__all__ = ["FeatureActor", "RayFeatureResult", "featurize", "featurize_file"]
