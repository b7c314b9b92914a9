"""Training features read in chunks: in memory, or shard by shard from a feature store, so that
scoring and the selection strategies run over a store larger than memory.

A source has a fixed sample order (``sample_ids``); positions in results (values, rankings) are
positions in that order. :class:`StoreSource` holds one shard at a time (memory-mapped for the
bounded format) plus what the caller keeps.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .features import FeatureConfig, SparseFeatures


def csr(f: SparseFeatures) -> np.ndarray:
    """Row offsets of each sample (rows are contiguous per sample, in sample order)."""
    return np.searchsorted(f.row_sample, np.arange(len(f) + 1))


def take_indices(f: SparseFeatures, idx: np.ndarray, offsets: np.ndarray | None = None) -> SparseFeatures:
    """Samples ``idx`` (positions, in that order) of features whose rows are in sample order."""
    offsets = csr(f) if offsets is None else offsets
    counts = offsets[idx + 1] - offsets[idx]
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx]) if len(idx) else np.zeros(0, np.int64)
    return SparseFeatures(
        sample_ids=[f.sample_ids[i] for i in idx], row_sample=np.repeat(np.arange(len(idx)), counts).astype(np.int64),
        token_ids=f.token_ids[rows], vectors=f.vectors[rows], emb=f.emb[idx], n_positions=f.n_positions[idx],
        norms=None if f.norms is None else f.norms[idx])


def ordered(f: SparseFeatures) -> SparseFeatures:
    """``f`` with the rows of each sample contiguous and in sample order (a copy only if needed)."""
    if f.n_rows and np.any(np.diff(f.row_sample) < 0):
        rows = np.argsort(f.row_sample, kind="stable")
        return SparseFeatures(sample_ids=f.sample_ids, row_sample=f.row_sample[rows], token_ids=f.token_ids[rows],
                              vectors=f.vectors[rows], emb=f.emb, n_positions=f.n_positions, norms=f.norms)
    return f


class FeatureSource:
    """Features of ``len(self)`` samples, read in chunks."""

    sample_ids: list[str]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def parts(self, within: np.ndarray | None = None) -> Iterator[tuple[int, SparseFeatures]]:
        """(position of the first sample, features) of consecutive parts covering every sample (with
        ``within``, ascending positions: only the parts holding one of them)."""
        raise NotImplementedError


class MemorySource(FeatureSource):
    """Features already in memory."""

    def __init__(self, feats: SparseFeatures):
        self.feats = ordered(feats)
        self.sample_ids = self.feats.sample_ids

    def parts(self, within: np.ndarray | None = None):
        yield 0, self.feats


class StoreSource(FeatureSource):
    """The features a model stored for a configuration, shard by shard (every stored sample, or only
    ``sample_ids``; in shard order). KeyError names missing samples when ``sample_ids`` are given."""

    def __init__(self, store, fingerprint, config: FeatureConfig, sample_ids: Sequence[str] | None = None):
        self.store, self.fingerprint, self.config = store, fingerprint, config
        self.folder = store.folder(fingerprint, config)
        want = None if sample_ids is None else set(sample_ids)
        seen: set[str] = set()
        self.shards: list[tuple[dict, list[str]]] = []
        for info in store.shard_infos(fingerprint, config):
            ids = [s for s in info["sample_ids"] if s not in seen and (want is None or s in want)]
            if ids:
                seen.update(ids)
                self.shards.append((info, ids))
        if want is not None and len(seen) != len(want):
            missing = [s for s in sample_ids if s not in seen]
            raise KeyError(f"{len(missing)} samples have no stored features for model {fingerprint.id} and config "
                           f"{config.id}, e.g. {missing[0]}")
        self.sample_ids = [s for _, ids in self.shards for s in ids]
        self._starts = np.cumsum([0] + [len(ids) for _, ids in self.shards])

    def _read(self, k: int) -> SparseFeatures:
        info, ids = self.shards[k]
        return read_shard_part(self.store, self.folder, info, ids)

    def _keep(self, within: np.ndarray | None) -> list[int]:
        if within is None:
            return list(range(len(self.shards)))
        return np.unique(np.searchsorted(self._starts, np.asarray(within), side="right") - 1).tolist()

    def plan(self, within: np.ndarray | None = None) -> list[tuple[int, dict, list[str]]]:
        """(position of the first sample, shard info, sample ids) of every part (or of those holding
        one of ``within``), in order: what a worker elsewhere needs to read one part
        (:func:`read_shard_part`)."""
        return [(int(self._starts[k]), *self.shards[k]) for k in self._keep(within)]

    def parts(self, within: np.ndarray | None = None):
        for k in self._keep(within):
            yield int(self._starts[k]), self._read(k)


def read_shard_part(store, folder, info: dict, ids: list[str]) -> SparseFeatures:
    """The features of ``ids`` (in shard order) from one shard of a store folder, rows in sample order."""
    feats = ordered(store.read_shard(folder, info))
    return feats if len(ids) == len(feats) else feats.select(ids)


class PartRunner:
    """Runs ``fn(part, start, *shared)`` on every part of a source (``start``: the position of the
    part's first sample) and yields ``(start, result)``, in any order: the passes of scoring and of
    the selection strategies are such maps, merged by the caller. This runner works here, part after
    part; :class:`forvalue.engines.ray_parts.RayPartRunner` runs one Ray task per shard. ``fn`` must
    be a module-level function (it may travel to another process)."""

    name = "local"

    def map(self, source: FeatureSource, fn: Callable[..., Any], *shared,
            within: np.ndarray | None = None) -> Iterator[tuple[int, Any]]:
        """``within`` (ascending positions): only the parts holding one of them."""
        for start, part in source.parts(within):
            yield start, fn(part, start, *shared)

    def stats(self):
        """What a distributed runner did (:class:`forvalue.engines.EngineStats`); None here."""
        return None


LOCAL_RUNNER = PartRunner()


class ThreadedPartRunner(PartRunner):
    """Runs the parts here, ``workers`` at a time in threads, each part's kernels single-threaded
    (torch and numpy release the GIL in their kernels): the per-part work that runs on one core
    (index building, partial sorts, the Python between kernels) overlaps with the other part's.
    Results come back in part order. A kernel that keeps buffers between calls keeps one set per
    thread (:class:`forvalue.valuation.pairwise.PairTable`)."""

    name = "local"

    def __init__(self, workers: int = 2):
        self.workers = max(1, int(workers))

    def map(self, source: FeatureSource, fn: Callable[..., Any], *shared,
            within: np.ndarray | None = None) -> Iterator[tuple[int, Any]]:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        if self.workers == 1 or isinstance(source, MemorySource):
            yield from super().map(source, fn, *shared, within=within)
            return
        with _kernel_threads(1), ThreadPoolExecutor(self.workers, thread_name_prefix="forvalue-part") as pool:
            pending: deque = deque()
            for start, part in source.parts(within):
                pending.append((start, pool.submit(fn, part, start, *shared)))
                if len(pending) > self.workers:
                    start0, fut = pending.popleft()
                    yield start0, fut.result()
            while pending:
                start0, fut = pending.popleft()
                yield start0, fut.result()


_KERNEL = {"threads": 2}


def kernel_threads() -> int:
    """How many threads one kernel call may use: 2, or 1 while parts run side by side."""
    return _KERNEL["threads"]


@contextmanager
def _kernel_threads(n: int):
    """Kernels single-threaded (``n``) while parts run side by side; restored after."""
    import torch

    before = (_KERNEL["threads"], torch.get_num_threads())
    _KERNEL["threads"] = n
    torch.set_num_threads(n)
    try:
        yield
    finally:
        _KERNEL["threads"] = before[0]
        torch.set_num_threads(before[1])


def as_source(train) -> FeatureSource:
    return train if isinstance(train, FeatureSource) else MemorySource(train)


__all__ = ["FeatureSource", "MemorySource", "StoreSource", "PartRunner", "ThreadedPartRunner", "LOCAL_RUNNER",
           "kernel_threads", "as_source", "ordered",
           "read_shard_part", "take_indices"]
