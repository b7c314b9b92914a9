"""Passes over a feature store on Ray: one task per shard.

Scoring (the set-mean values) and every pass of the selection strategies (max-cosine keys, the
round-robin's candidate lists and its dense finish) are maps over the parts of a
:class:`forvalue.valuation.feature_source.FeatureSource` merged by the caller (:mod:`forvalue.curation.selection`,
:func:`forvalue.valuation.scoring.source_values`). :class:`RayPartRunner` runs such a map as one Ray task per
shard of a :class:`forvalue.valuation.feature_source.StoreSource` (a task whose worker died is run again, up to
three times, and counted): the shared arguments (the valuation set's
token table or units, the mask of samples taken) are put in Ray's object store once per pass, each
task reads its shard itself (memory-mapped for the bounded format) from the store folder every
worker reaches, and at most ``workers`` tasks run at a time, so the driver holds only the per-part
results. The tasks only read: a retried task changes nothing, and the merged result is the one of
the in-process runner (a cosine or a score does not depend on the part it is computed in).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ..valuation.feature_source import FeatureSource, PartRunner, StoreSource, read_shard_part
from . import EngineStats
from .ray_session import RaySession, import_ray


def _run_part(root: str, folder: str, info: dict, ids: list[str], start: int, fn: Callable[..., Any], *shared):
    import torch

    from ..store.feature_store import FeatureStore

    torch.set_num_threads(1)
    part = read_shard_part(FeatureStore(root), Path(folder), info, ids)
    return start, fn(part, start, *shared), os.getpid()


class RayPartRunner(PartRunner):
    """One Ray task per shard, at most ``workers`` at a time, on the Ray of ``session`` (a source in
    memory has one part: it runs here)."""

    name = "ray"
    MAX_RETRIES = 3

    def __init__(self, workers: int, session: RaySession):
        self.workers, self.session = workers, session
        # leave half a CPU to the driver and Ray's own tasks; never more than one CPU per task
        self.task_cpus = max(0.1, min(1.0, (max(session.cpus, 1.0) - 0.5) / workers))
        self.tasks = self.rows = self.passes = self.retried = 0
        self.pids: set[int] = set()
        self.run_s = 0.0
        self.t0 = time.perf_counter()

    def map(self, source: FeatureSource, fn: Callable[..., Any], *shared, within=None) -> Iterator[tuple[int, Any]]:
        if not isinstance(source, StoreSource):
            yield from super().map(source, fn, *shared, within=within)
            return
        ray = import_ray()
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError)
        # retried here, not by Ray, so that the retries are counted; an error of the task itself (a
        # damaged shard) is not retried
        task = ray.remote(num_cpus=self.task_cpus, max_retries=0)(_run_part)
        refs = [ray.put(x) for x in shared]
        root, folder = str(Path(source.store.root).resolve()), str(source.folder)
        plan, pending = source.plan(within), {}

        def submit(part: tuple[int, dict, list[str]], attempt: int) -> None:
            start, info, ids = part
            pending[task.remote(root, folder, info, ids, start, fn, *refs)] = (part, attempt)

        self.passes += 1
        t = time.perf_counter()
        try:
            while plan or pending:
                while plan and len(pending) < self.workers:
                    part = plan.pop(0)
                    submit(part, 0)
                    self.rows += len(part[2])
                (done,), _ = ray.wait(list(pending), num_returns=1)
                part, attempt = pending.pop(done)
                try:
                    start, result, pid = ray.get(done)
                except lost:
                    if attempt >= self.MAX_RETRIES:
                        raise
                    self.retried += 1
                    submit(part, attempt + 1)
                    continue
                self.pids.add(pid)
                self.tasks += 1
                self.run_s += time.perf_counter() - t
                yield start, result
                t = time.perf_counter()
        finally:
            for ref in pending:   # the caller stopped early or a task failed: nothing else to wait for
                ray.cancel(ref)

    def stats(self) -> EngineStats:
        return EngineStats(engine="ray", workers=self.workers, processes=len(self.pids), batches=self.tasks,
                           retried_tasks=self.retried,
                           startup_s=self.session.startup_s, seconds=time.perf_counter() - self.t0,
                           rows_per_s=self.rows / self.run_s if self.run_s > 0 else 0.0)


__all__ = ["RayPartRunner"]
