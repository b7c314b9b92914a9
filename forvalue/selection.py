"""Selection strategies: which training samples to keep, computed from stored features (no forward pass).

A value is not yet a curation. The raw For-Value, the mean inner product <G_i, mean_v G_v>, rewards
samples with a large ||G_i|| (long, high-loss samples, which noisy ones often are), and the mean
valuation gradient is dominated by a few modes of the valuation set, so its top-k concentrates on a
few templates. The strategies (``STRATEGIES``):

- ``raw-mean``: <G_i, mean_v G_v>, the For-Value score itself (the paper's ranking).
- ``cosine-mean``: the same divided by ||G_i|| ||mean_v G_v||: the cosine with the mean valuation
  gradient, without the reward for a large norm.
- ``max-cosine``: max_v cos(G_i, G_v), as LESS ranks: a sample is as good as its best match.
- ``round-robin``: the valuation samples take turns in file order; each takes its most similar
  (cosine) training sample not yet taken.
- ``balanced`` (the default): round-robin over valuation units visited in farthest-point order (the
  most central unit first, then always the unit least similar to those already visited), so that
  the first turns spread over every mode of the valuation set whatever the subset size; each unit
  prefers training samples by cosine with itself smoothed over its ``smooth`` (3) most similar
  units, so that one odd valuation sample does not pull in a noisy match. A unit is a valuation
  sample; above ``max_units`` (1024) valuation samples, a unit is the cell of one of ``max_units``
  seeded random valuation samples (every valuation sample joins its most similar seed), so dense
  regions of the valuation set keep proportionally more turns (cells are not smoothed further).

Every strategy orders all training samples, best first; a subset is a prefix of that order (top-k,
top-p%, all but the lowest p%) or its reversed tail (bottom-p%).

Memory, beyond the features themselves: one block of cosines [units x training chunk] of at most
``BLOCK_BYTES`` (64 MB); the valuation side's token -> vector table, built per group of units of at
most ``TABLE_BYTES`` (128 MB); the unit x unit similarities (``max_units``^2 doubles, 8 MB); and for
the round-robin strategies a candidate list per unit, about 2 x (subset size) + 8 x units entries
of 16 bytes. A unit whose list runs out is refilled by another pass over the training features;
once the samples not yet taken fit in one block, the rest is finished exactly from that block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .feature_source import (LOCAL_RUNNER, FeatureSource, PartRunner, _csr, as_source, ordered,
                             take_indices)
from .features import SparseFeatures

STRATEGIES: dict[str, str] = {
    "balanced": "round-robin over valuation units in farthest-point order, cosine smoothed over the 3 "
                "nearest units (default: clean and covering)",
    "round-robin": "valuation samples take turns in file order; each takes its most similar remaining sample",
    "max-cosine": "best cosine with any one valuation sample (LESS)",
    "cosine-mean": "cosine with the mean valuation gradient",
    "raw-mean": "mean inner product with the valuation set (the raw For-Value score)",
}
DEFAULT_STRATEGY = "balanced"
PAIRWISE_STRATEGIES = ("balanced", "round-robin", "max-cosine")   # need the features of both sides
SMOOTH = 3
MAX_UNITS = 1024
BLOCK_BYTES = 64 * 2**20
TABLE_BYTES = 128 * 2**20


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


# ----------------------------------------------------------------------------- subsets of an order
SIZE_MODES = ("top_k", "top_p", "bottom_p", "drop_lowest_p")


def subset_count(n: int, mode: str, value: float) -> int:
    """How many samples a mode keeps out of ``n`` (percentages are 0-100, rounded to the nearest)."""
    if mode not in SIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(SIZE_MODES)}, not {mode!r}")
    value = float(value)
    if mode == "top_k":
        if value != int(value) or value < 0:
            raise ValueError(f"top_k needs a whole number >= 0, got {value:g}")
        return min(int(value), n)
    if not 0 <= value <= 100:
        raise ValueError(f"{mode} is a percentage: 0 to 100, got {value:g}")
    m = int(round(n * value / 100))
    return n - m if mode == "drop_lowest_p" else m


def needed_prefix(n: int, mode: str, value: float) -> int:
    """How long a prefix of the order a mode reads (bottom-p% reads the whole order)."""
    return n if mode == "bottom_p" else subset_count(n, mode, value)


@dataclass
class Ranking:
    """A strategy's order of the training samples, with the per-sample values every table keeps."""

    strategy: str
    order: np.ndarray            # training indices, best first (a prefix when ranked with a limit)
    raw: np.ndarray              # [n] For-Value: mean inner product with the valuation set
    normalized: np.ndarray       # [n] cosine with the mean valuation gradient
    norm: np.ndarray             # [n] ||G_i|| of the stored features
    key: np.ndarray | None = None  # [n] the value the strategy sorts by, for the sorting strategies
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def complete(self) -> bool:
        return len(self.order) == len(self.raw)

    @property
    def rank(self) -> np.ndarray:
        """[n] 1-based position in the order (0 for samples beyond a partial order)."""
        out = np.zeros(len(self.raw), dtype=np.int64)
        out[self.order] = np.arange(1, len(self.order) + 1)
        return out

    def reindexed(self, pos: np.ndarray) -> "Ranking":
        """The same ranking over the samples in another order: new sample ``i`` is old sample
        ``pos[i]``."""
        pos = np.asarray(pos, dtype=np.int64)
        new_of_old = np.empty(len(pos), dtype=np.int64)
        new_of_old[pos] = np.arange(len(pos))
        return Ranking(strategy=self.strategy, order=new_of_old[self.order], raw=self.raw[pos],
                       normalized=self.normalized[pos], norm=self.norm[pos],
                       key=None if self.key is None else self.key[pos], info=dict(self.info))

    def to_polars(self, sample_ids=None):
        """A polars DataFrame, one row per training sample in input order: index (and sample_id when
        ``sample_ids`` are given), rank in the strategy's order (null beyond a partial order), raw
        score, normalized, norm and the strategy's sort key (null for the round-robin strategies)."""
        import polars as pl

        rank = self.rank
        cols = {"index": pl.Series(np.arange(len(self.raw)), dtype=pl.Int64)}
        if sample_ids is not None:
            cols["sample_id"] = pl.Series(list(sample_ids), dtype=pl.String)
        cols.update({"rank": pl.Series(rank, dtype=pl.Int64),
                     "score": pl.Series(self.raw, dtype=pl.Float64),
                     "normalized": pl.Series(self.normalized, dtype=pl.Float64),
                     "norm": pl.Series(self.norm, dtype=pl.Float64),
                     "key": pl.Series(self.key if self.key is not None else [None] * len(self.raw), dtype=pl.Float64)})
        return pl.DataFrame(cols).with_columns(pl.when(pl.col("rank") > 0).then(pl.col("rank")).alias("rank"))

    def indices(self, mode: str, value: float) -> np.ndarray:
        """Training indices of a subset: most valuable first (bottom_p: least valuable first)."""
        n = len(self.raw)
        count = subset_count(n, mode, value)
        need = needed_prefix(n, mode, value)
        if len(self.order) < need:
            raise ValueError(f"this ranking holds the first {len(self.order)} of {n} samples; {mode} {value:g} "
                             f"needs {need}")
        return self.order[::-1][:count].copy() if mode == "bottom_p" else self.order[:count].copy()


# ----------------------------------------------------------------------------- valuation units
def aggregate(f: SparseFeatures, groups: list[np.ndarray], weights: np.ndarray) -> SparseFeatures:
    """One pseudo-sample per group: sum_{w in group} weights[w] * G_w, rows merged per token."""
    import torch

    offsets = _csr(f)
    units, rows, scale = [], [], []
    for u, members in enumerate(groups):
        for w in members:
            a, b = offsets[w], offsets[w + 1]
            units.append(np.full(b - a, u, dtype=np.int64))
            rows.append(np.arange(a, b))
            scale.append(np.full(b - a, weights[w]))
    units_a = np.concatenate(units) if units else np.zeros(0, np.int64)
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    scale_a = np.concatenate(scale) if scale else np.zeros(0)
    width = int(f.token_ids.max()) + 1 if f.n_rows else 1
    keys = units_a * width + f.token_ids[rows_a]
    uniq, inv = np.unique(keys, return_inverse=True)
    vec = torch.zeros((len(uniq), f.vectors.shape[1]), dtype=torch.float64)
    src = torch.from_numpy(np.ascontiguousarray(f.vectors[rows_a], dtype=np.float64)) * torch.from_numpy(scale_a)[:, None]
    vec.index_add_(0, torch.from_numpy(inv.astype(np.int64)), src)
    return SparseFeatures(
        sample_ids=[f"unit-{u}" for u in range(len(groups))], row_sample=(uniq // width).astype(np.int64),
        token_ids=(uniq % width).astype(np.int64), vectors=vec.numpy().astype(f.vectors.dtype),
        emb=np.zeros((len(groups), 0), dtype=np.float32), n_positions=np.zeros(len(groups), dtype=np.int64))


class Units:
    """Valuation-side sparse features (valuation samples or sums of them) and their cosine with
    training samples, computed in bounded memory."""

    def __init__(self, feats: SparseFeatures):
        self.feats = ordered(feats)
        self.norm = self.feats.sample_norms()
        self.groups = self._table_groups()

    def __len__(self) -> int:
        return len(self.feats)

    def _table_groups(self) -> list[SparseFeatures]:
        """Consecutive units whose pairwise token table (tokens x units x r x 4 bytes) fits TABLE_BYTES."""
        f = self.feats
        offsets = _csr(f)
        r = max(1, f.vectors.shape[1])
        out, start, tokens = [], 0, set()
        for u in range(len(f)):
            tok = set(f.token_ids[offsets[u]:offsets[u + 1]].tolist())
            grown = tokens | tok
            if u > start and len(grown) * (u - start + 1) * r * 4 > TABLE_BYTES:
                out.append(f.take(start, u))
                start, grown = u, tok
            tokens = grown
        if len(f):
            out.append(f.take(start, len(f)))
        return out

    def cosines(self, chunk: SparseFeatures, chunk_norm: np.ndarray) -> np.ndarray:
        """[units, len(chunk)] cosine of every unit with every sample of ``chunk`` (0 for a zero G)."""
        from .scoring import sparse_scores

        dots = np.concatenate([sparse_scores(chunk, g, pairwise=True) for g in self.groups], axis=0)
        denom = self.norm[:, None] * chunk_norm[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)

    def chunk_size(self) -> int:
        return max(1, BLOCK_BYTES // (8 * max(1, len(self))))

    def blocks(self, feats: SparseFeatures):
        """Yield (positions, [units, chunk] cosines) over features in memory."""
        yield from part_blocks(self, feats, 0)


def part_blocks(units: Units, part: SparseFeatures, start: int, subset: np.ndarray | None = None):
    """Yield (positions, [units, chunk] cosines) over one part of the training features (``start``: the
    position of its first sample), or over its samples ``subset`` (part positions, ascending); chunks
    of :meth:`Units.chunk_size` samples (a cosine does not depend on the chunk it is computed in)."""
    norms = part.sample_norms()
    c = units.chunk_size()
    if subset is None:
        for a in range(0, len(part), c):
            b = min(len(part), a + c)
            yield start + np.arange(a, b), units.cosines(part.take(a, b) if (a, b) != (0, len(part)) else part,
                                                         norms[a:b])
    else:
        offsets = _csr(part)
        for a in range(0, len(subset), c):
            idx = subset[a:a + c]
            yield start + idx, units.cosines(take_indices(part, idx, offsets), norms[idx])


def unit_similarity(units: Units) -> np.ndarray:
    """[P, P] cosine between units."""
    return np.concatenate([cos for _, cos in units.blocks(units.feats)], axis=1)


def farthest_point_order(sim: np.ndarray) -> np.ndarray:
    """Visit order: the unit most similar on average to the others first, then always the unit whose
    highest similarity to the units visited so far is lowest (ties: lowest index)."""
    n = sim.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = int(np.argmax(sim.mean(1)))
    order = [first]
    visited = np.zeros(n, bool)
    visited[first] = True
    closest = sim[first].copy()
    for _ in range(n - 1):
        j = int(np.argmin(np.where(visited, np.inf, closest)))
        order.append(j)
        visited[j] = True
        closest = np.maximum(closest, sim[j])
    return np.array(order, dtype=np.int64)


def _valuation_units(val: SparseFeatures, *, smooth: int, max_units: int, seed: int) -> tuple[Units, np.ndarray, dict]:
    """The balanced strategy's units (smoothed) and their farthest-point visit order."""
    vnorm = val.sample_norms()
    weights = np.where(vnorm > 0, 1.0 / np.where(vnorm > 0, vnorm, 1.0), 0.0)
    n_val = len(val)
    info: dict = {"valuation_samples": n_val}
    if n_val <= max_units:
        groups = [np.array([w]) for w in range(n_val)]
    else:   # cells of max_units seeded random valuation samples
        rng = np.random.default_rng(seed)
        seeds = np.sort(rng.choice(n_val, size=max_units, replace=False))
        seed_units = Units(take_indices(val, seeds))
        owner = np.empty(n_val, dtype=np.int64)
        for idx, cos in seed_units.blocks(val):
            owner[idx] = np.argmax(cos, axis=0)
        owner[seeds] = np.arange(max_units)
        groups = [np.nonzero(owner == u)[0] for u in range(max_units)]
        info["prototypes"] = max_units
    base = Units(aggregate(val, groups, weights))
    sim = unit_similarity(base)
    order = farthest_point_order(sim)
    # a prototype cell is already a sum over its members: smoothing applies to single samples only
    m = 1 if n_val > max_units else max(1, min(int(smooth), len(groups)))
    if m > 1:
        near = []
        for u in range(len(groups)):
            ranked = np.argsort(-sim[u], kind="stable")
            near.append(np.concatenate([[u], ranked[ranked != u][: m - 1]]))
        bw = np.where(base.norm > 0, 1.0 / np.where(base.norm > 0, base.norm, 1.0), 0.0)
        units = Units(aggregate(base.feats, near, bw))
    else:
        units = base
    info.update({"units": len(groups), "smooth": m})
    return units, order, info


# ----------------------------------------------------------------------------- round robin
def _best(vals: np.ndarray, ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``length`` highest values (ties: lowest id) and their ids, best first."""
    keep = np.lexsort((ids, -vals), axis=1)[:, :length]
    return np.take_along_axis(vals, keep, 1), np.take_along_axis(ids, keep, 1)


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], length: int):
    return _best(np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1), length)


def _part_candidates(part: SparseFeatures, start: int, units: Units, which: np.ndarray, taken: np.ndarray,
                     length: int) -> tuple[np.ndarray, np.ndarray]:
    """One part's best ``length`` samples not yet taken for each unit of ``which`` (values, positions)."""
    best = (np.full((len(which), 0), -np.inf), np.zeros((len(which), 0), np.int64))
    for idx, block in part_blocks(units, part, start):
        block = block[which]
        block[:, taken[idx]] = -np.inf
        best = _merge(best, (block, np.broadcast_to(idx, block.shape)), length)
    return best


def _part_dense(part: SparseFeatures, start: int, units: Units, free: np.ndarray) -> list:
    """[(positions, [units, chunk] cosines)] of the part's samples among ``free`` (positions)."""
    local = free[(free >= start) & (free < start + len(part))] - start
    return list(part_blocks(units, part, start, local))


def _part_max_cosine(part: SparseFeatures, start: int, units: Units) -> np.ndarray:
    out = np.empty(len(part))
    for idx, cos in part_blocks(units, part, start):
        out[idx - start] = cos.max(axis=0)
    return out


def round_robin(units: Units, train: SparseFeatures | FeatureSource, visit: np.ndarray, need: int, *,
                runner: PartRunner | None = None, list_length: int | None = None,
                dense_elements: int | None = None) -> tuple[np.ndarray, dict]:
    """The first ``need`` picks of a round-robin: units take turns in the order ``visit``; each takes
    its most similar training sample not yet taken (ties: lowest index). Exact, in bounded memory:
    per-unit candidate lists of the best ``list_length`` samples, refilled by another pass when one
    runs out; the samples still free are ranked in one dense block once they fit ``dense_elements``.
    Each pass is a map over the parts of ``train`` (``runner``: here, or one Ray task per shard)."""
    source, runner = as_source(train), runner or LOCAL_RUNNER
    n, P = len(source), len(units)
    need = min(need, n)
    dense_elements = dense_elements or BLOCK_BYTES // 8
    taken = np.zeros(n, bool)
    lists: list[np.ndarray] = [np.zeros(0, np.int64)] * P
    complete = np.zeros(P, bool)
    ptr = np.zeros(P, np.int64)
    length = min(n, list_length or (2 * math.ceil(max(need, 1) / max(P, 1)) + 8))
    stats = {"passes": 0, "dense_finish": False}

    def refill(which: np.ndarray, length: int) -> None:
        free = np.nonzero(~taken)[0]
        stats["passes"] += 1
        if len(free) * P <= dense_elements:   # everything still free fits one block: exact full lists
            cos = np.empty((P, len(free)))
            for _, blocks in runner.map(source, _part_dense, units, free, within=free):
                for idx, block in blocks:
                    cos[:, np.searchsorted(free, idx)] = block
            for u in range(P):
                lists[u] = free[np.argsort(-cos[u], kind="stable")]
            complete[:] = True
            ptr[:] = 0
            stats["dense_finish"] = True
            return
        best = (np.full((len(which), 0), -np.inf), np.zeros((len(which), 0), np.int64))
        for _, part_best in runner.map(source, _part_candidates, units, which, taken, length):
            best = _merge(best, part_best, length)
        for row, u in enumerate(which):
            ok = np.isfinite(best[0][row])
            lists[u] = best[1][row][ok]
            complete[u] = len(lists[u]) == len(free)
            ptr[u] = 0

    refill(np.arange(P), length)
    out: list[int] = []
    pos = 0
    while len(out) < need:
        u = visit[pos % P]
        lst, p = lists[u], ptr[u]
        while p < len(lst) and taken[lst[p]]:
            p += 1
        ptr[u] = p
        if p == len(lst):
            if complete[u]:          # nothing left for this unit: every sample is taken
                pos += 1
                continue
            length = min(n, 2 * length)
            low = [v for v in range(P) if not complete[v] and (np.count_nonzero(~taken[lists[v][ptr[v]:]]) < 2)]
            refill(np.array(sorted(set(low) | {int(u)}), dtype=np.int64), length)
            continue
        i = int(lst[p])
        taken[i] = True
        out.append(i)
        ptr[u] = p + 1
        pos += 1
    return np.array(out, dtype=np.int64), stats


def _max_cosine(source: FeatureSource, val: SparseFeatures, runner: PartRunner) -> np.ndarray:
    key = np.full(len(source), -np.inf)
    for start, part_key in runner.map(source, _part_max_cosine, Units(val)):
        key[start:start + len(part_key)] = part_key
    return key


def _sorted_order(key: np.ndarray) -> np.ndarray:
    return np.argsort(-key, kind="stable")


# ----------------------------------------------------------------------------- API
def rank_values(raw: np.ndarray, normalized: np.ndarray | None, norm: np.ndarray | None,
                strategy: str) -> Ranking:
    """A sorting strategy (``raw-mean``, ``cosine-mean``) from values already computed."""
    check_strategy(strategy)
    raw = np.asarray(raw, dtype=np.float64)
    if strategy == "raw-mean":
        key = raw
    elif strategy == "cosine-mean":
        if normalized is None:
            raise ValueError("strategy cosine-mean needs the normalized values")
        key = np.asarray(normalized, dtype=np.float64)
    else:
        raise ValueError(f"strategy {strategy} needs the features of the training and valuation samples")
    return Ranking(strategy=strategy, order=_sorted_order(key), raw=raw,
                   normalized=np.full(len(raw), np.nan) if normalized is None else np.asarray(normalized, float),
                   norm=np.full(len(raw), np.nan) if norm is None else np.asarray(norm, float), key=key)


def rank_features(train: SparseFeatures | FeatureSource, val: SparseFeatures, strategy: str = DEFAULT_STRATEGY, *,
                  limit: int | None = None, smooth: int = SMOOTH, max_units: int = MAX_UNITS, seed: int = 0,
                  progress: Callable[[str], None] | None = None, runner: PartRunner | None = None) -> Ranking:
    """Order the training samples by ``strategy`` from their sparse features and the valuation
    set's. ``train``: features in memory, or a :class:`forvalue.feature_source.FeatureSource` (a
    feature store read shard by shard: positions are in its ``sample_ids`` order). ``limit``: only
    the first ``limit`` positions are needed (the round-robin strategies stop there); None orders
    every sample. ``runner``: where the passes over the training features run (default: here, part
    after part; :class:`forvalue.engines.ray_parts.RayPartRunner`: one Ray task per shard); the
    order does not depend on it."""
    import time

    from .scoring import source_values

    check_strategy(strategy)
    if len(train) == 0 or len(val) == 0:
        raise ValueError("need at least one training and one valuation sample")
    source = as_source(train)
    val = ordered(val)
    t0 = time.perf_counter()
    runner = runner or LOCAL_RUNNER
    raw, normalized, norm = source_values(source, val, runner=runner)
    info: dict = {}
    key = None
    if strategy in ("raw-mean", "cosine-mean"):
        return rank_values(raw, normalized, norm, strategy)
    if strategy == "max-cosine":
        key = _max_cosine(source, val, runner)
        order = _sorted_order(key)
    else:
        need = len(source) if limit is None else min(int(limit), len(source))
        if strategy == "round-robin":
            units, visit = Units(val), np.arange(len(val))
            info["units"] = len(val)
        else:
            units, visit, info = _valuation_units(val, smooth=smooth, max_units=max_units, seed=seed)
        order, stats = round_robin(units, source, visit, need, runner=runner)
        info.update(stats)
    info["seconds"] = time.perf_counter() - t0
    return Ranking(strategy=strategy, order=order, raw=raw, normalized=normalized, norm=norm, key=key, info=info)


def select(train: SparseFeatures, val: SparseFeatures, mode: str, value: float,
           strategy: str = DEFAULT_STRATEGY, **kw) -> tuple[np.ndarray, Ranking]:
    """(training indices of the subset, the ranking) for a size mode (``top_k``, ``top_p``,
    ``bottom_p``, ``drop_lowest_p``) and a strategy."""
    ranking = rank_features(train, val, strategy, limit=needed_prefix(len(train), mode, value), **kw)
    return ranking.indices(mode, value), ranking


__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "PAIRWISE_STRATEGIES", "SIZE_MODES", "Ranking", "Units",
           "aggregate", "farthest_point_order", "rank_features", "rank_values", "round_robin", "select",
           "subset_count", "needed_prefix", "check_strategy"]
