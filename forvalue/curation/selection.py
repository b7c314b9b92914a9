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
  units, so that one odd valuation sample does not pull in a noisy match, times the sample's length
  share min(1, its scored positions (response tokens) / the unit's)^``length_power`` (1): a sample
  shorter than the unit's own responses is discounted, a longer one gains nothing. The cosine alone
  prefers short samples (a long response's G also holds its own numbers and names, which no
  valuation sample shares), and a subset of short samples trains worse than as many random clean
  ones; the share corrects that without rewarding a high loss, as a power of ||G|| would, or the
  inserted text of a padded response, as an uncapped power of the length would
  (benchmarks/length_power_bench.py). A unit is a valuation
  sample; above ``max_units`` (1024) valuation samples, a unit is the cell of one of ``max_units``
  seeded random valuation samples (every valuation sample joins its most similar seed), so dense
  regions of the valuation set keep proportionally more turns (cells are not smoothed further).

Every strategy orders all training samples, best first; a subset is a prefix of that order (top-k,
top-p%, all but the lowest p%) or its reversed tail (bottom-p%).

Cost. The pairwise strategies need every unit's cosine with every training sample: one r-wide dot
per (training row, unit row) pair that shares a token (:mod:`forvalue.valuation.pairwise`: BLAS products for
the tokens most units hold, a sampled sparse product for the rest), about P x (shared-token share)
x rows x r multiply-adds; this bounds selection time, and grows with the number of units P. The
balanced strategy's smoothed units are sums of 3 valuation samples: their products are the same
sums of the valuation samples' products, so the tokens held per unit do not triple. One pass over
the training features computes the set-mean values (raw, normalized, norm) and, for every unit,
the candidates that may be among its ``list_length`` best: a candidate below the unit's current
``list_length``-th value is dropped in the pass, so the lists cost memory, not time. A unit whose
list runs out (its candidates taken by other units) is refilled by another pass that computes the
cosines of the units that ran short only; once the samples not yet taken fit in one block, the rest
is finished exactly from that block. With lists of 4 x (subset size / P) + 16 a top-10% selection
usually needs the one pass.

Memory, beyond the features themselves: one block of cosines [units x training chunk] of at most
``BLOCK_BYTES`` (64 MB) and the kernel's buffers of the same order; the valuation units' padded
token tables, at most ``TABLE_BYTES`` (128 MB); the unit x unit similarities (``max_units``^2
doubles, 8 MB); and for the round-robin strategies the candidate lists, P x ``list_length``
entries of 16 bytes (twice that while merging).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..valuation.feature_source import (LOCAL_RUNNER, FeatureSource, PartRunner, ThreadedPartRunner, csr, as_source,
                                        ordered, take_indices)
from ..config import opt
from ..valuation.features import SparseFeatures

STRATEGIES: dict[str, str] = {
    "balanced": "round-robin over valuation units in farthest-point order, cosine smoothed over the 3 "
                "nearest units, discounted for samples shorter than the unit's responses (default: clean and "
                "covering)",
    "round-robin": "valuation samples take turns in file order; each takes its most similar remaining sample",
    "max-cosine": "best cosine with any one valuation sample (LESS)",
    "cosine-mean": "cosine with the mean valuation gradient",
    "raw-mean": "mean inner product with the valuation set (the raw For-Value score)",
}
DEFAULT_STRATEGY = "balanced"
# What each strategy orders by (Ranking.ranked_by), as a table column reads it.
RANKED_BY: dict[str, str] = {
    "balanced": "cosine with the valuation unit whose turn took it, x its length share",
    "round-robin": "cosine with the valuation sample whose turn took it",
    "max-cosine": "best cosine with one valuation sample",
    "cosine-mean": "cosine with the mean valuation gradient",
    "raw-mean": "For-Value score",
}
PAIRWISE_STRATEGIES = ("balanced", "round-robin", "max-cosine")   # need the features of both sides
SMOOTH = 3
LENGTH_POWER = 1.0   # balanced: a unit's turn takes the highest cosine x min(1, tokens / unit's tokens)^LENGTH_POWER
MAX_UNITS = 1024
NEAR_CUT = 1000    # dropped samples ranked past a subset's cut (what a curator reads beside the last kept)
BLOCK_BYTES = 64 * 2**20
LIST_FACTOR, LIST_EXTRA = 4, 16    # a unit's candidate list: LIST_FACTOR x (its share of the subset) + LIST_EXTRA
TABLE_BYTES = 128 * 2**20


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


# ----------------------------------------------------------------------------- subsets of an order
SIZE_MODES = ("top_k", "top_p", "bottom_p", "drop_lowest_p")


def subset_count(n: int, mode: str, value: float) -> int:
    """How many samples a mode keeps out of ``n`` (percentages are 0-100, rounded to the nearest).
    The one size rule: every command, asset and benchmark that sizes a subset asks it (directly or
    through :meth:`Ranking.indices`)."""
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


def needed_prefix(n: int, mode: str, value: float, past_cut: int = 0) -> int:
    """How long a prefix of the order a mode reads (bottom-p% reads the whole order); ``past_cut``:
    that many more, to rank the dropped samples nearest the cut too (:meth:`Ranking.near_cut`)."""
    return n if mode == "bottom_p" else min(n, subset_count(n, mode, value) + past_cut)


@dataclass(frozen=True)
class SubsetSpec:
    """Which samples a curated subset keeps: its size (``mode``, ``value``) and its order
    (``strategy``). Declared once: the platform's curation resource and the curated_subset run
    config take their fields, defaults and help from here; ValueError when a field is out of range."""

    mode: str = opt("drop_lowest_p", "top_k (the k best), top_p (the best p%), bottom_p (the worst p%, to inspect) "
                                     "or drop_lowest_p (everything but the worst p%)", choices=SIZE_MODES)
    value: float = opt(10.0, "k for top_k; a percentage 0-100 otherwise")
    strategy: str = opt(DEFAULT_STRATEGY, "how samples are ordered: " +
                        "; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()), choices=tuple(STRATEGIES))

    def __post_init__(self):
        check_strategy(self.strategy)
        subset_count(1, self.mode, self.value)


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
    # the consistency checks applied before the strategy (forvalue.curation.consistency.Checked): the samples
    # they dropped come last; None: no check ran
    checks: Any = None
    # [n] the round-robin strategies: each sample's cosine with the (smoothed) valuation unit whose turn
    # took it, balanced: times its length share (NaN for a sample the order did not reach or the checks
    # dropped)
    picked_cosine: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def complete(self) -> bool:
        return len(self.order) == len(self.raw)

    def ranked_by(self) -> tuple[str, np.ndarray]:
        """(what it is, [n] values): the value that set each sample's place in the order. The sorting
        strategies sort by it (``key``); the round-robin strategies take, in each unit's turn, the
        sample with the highest cosine with that unit (``picked_cosine``; balanced: times the sample's
        length share): it falls within a unit's picks, not along the whole order."""
        if self.strategy in RANKED_BY and self.picked_cosine is not None:
            return RANKED_BY[self.strategy], self.picked_cosine
        if self.key is not None:
            return RANKED_BY.get(self.strategy, "sort key"), self.key
        return RANKED_BY["raw-mean"], self.raw

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
                       key=None if self.key is None else self.key[pos], info=dict(self.info),
                       checks=None if self.checks is None else self.checks.reindexed(pos),
                       picked_cosine=None if self.picked_cosine is None else self.picked_cosine[pos])

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

    def near_cut(self, mode: str, value: float, n: int = NEAR_CUT) -> np.ndarray:
        """Training indices of the up to ``n`` dropped samples nearest a subset's cut, nearest first:
        those the order holds just past the subset's end (bottom_p: just before its start)."""
        count = subset_count(len(self.raw), mode, value)
        order = self.order[::-1] if mode == "bottom_p" else self.order
        return order[count:count + n].copy()

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
def aggregate(f: SparseFeatures, groups: list[np.ndarray], weights: np.ndarray,
              member_weights: np.ndarray | None = None) -> SparseFeatures:
    """One pseudo-sample per group: sum_{w in group} weights[w] * G_w, rows merged per token
    (``member_weights[u][k]``, when given, replaces ``weights`` for member k of group u)."""
    import torch

    offsets = csr(f)
    sizes = np.array([len(m) for m in groups], dtype=np.int64)
    members = np.concatenate([np.asarray(m, dtype=np.int64) for m in groups]) if len(groups) else np.zeros(0, np.int64)
    unit_of = np.repeat(np.arange(len(groups)), sizes)
    w = (np.asarray(weights, dtype=np.float64)[members] if member_weights is None
         else np.concatenate([np.asarray(x, dtype=np.float64) for x in member_weights]))
    counts = offsets[members + 1] - offsets[members]
    total = int(counts.sum())
    rows_a = np.repeat(offsets[members] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(total)
    units_a = np.repeat(unit_of, counts)
    scale_a = np.repeat(w, counts)
    width = int(f.token_ids.max()) + 1 if f.n_rows else 1
    keys = units_a * width + f.token_ids[rows_a]
    uniq, inv = np.unique(keys, return_inverse=True)
    dt = np.float64 if f.vectors.dtype == np.float64 else np.float32
    vec = torch.zeros((len(uniq), f.vectors.shape[1]), dtype=torch.from_numpy(np.zeros(0, dt)).dtype)
    src = torch.from_numpy(np.asarray(f.vectors[rows_a], dtype=dt))
    src.mul_(torch.from_numpy(scale_a.astype(dt))[:, None])
    vec.index_add_(0, torch.from_numpy(inv.astype(np.int64)), src)
    return SparseFeatures(
        sample_ids=[f"unit-{u}" for u in range(len(groups))], row_sample=(uniq // width).astype(np.int64),
        token_ids=(uniq % width).astype(np.int64), vectors=vec.numpy().astype(f.vectors.dtype),
        emb=np.zeros((len(groups), 0), dtype=np.float32), n_positions=np.zeros(len(groups), dtype=np.int64))


def _inverse(norm: np.ndarray) -> np.ndarray:
    """float32 1 / norm, 0 where the norm is 0 (a zero G has cosine 0 with everything)."""
    norm = np.asarray(norm, dtype=np.float64)
    return np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0).astype(np.float32)


class Units:
    """Valuation-side units and their cosine with training samples, computed in bounded memory.

    ``feats``: one base sample per row of the pair table (a valuation sample, or the sum of a cell of
    them). ``mix`` (optional, ``(near [P, m], weights [P, m])``): unit ``u`` is the weighted sum
    ``sum_k weights[u, k] * base[near[u, k]]`` (the balanced strategy's smoothing); its inner
    products are the same sums of the base units' products, so the pair table holds the base units
    only (each with its own few tokens) and smoothing costs P x m additions per training sample."""

    def __init__(self, feats: SparseFeatures, mix: tuple[np.ndarray, np.ndarray] | None = None, *,
                 length_power: float = 0.0, lengths: np.ndarray | None = None):
        from ..valuation.pairwise import PairTable

        self.feats = ordered(feats)
        self.table = PairTable(self.feats, max_bytes=TABLE_BYTES)
        self.length_power = float(length_power)
        self.mix = None
        base_lengths = np.asarray(self.feats.n_positions, dtype=np.float64)
        if mix is None:
            self.norm = self.feats.sample_norms()
            self.lengths = base_lengths if lengths is None else np.asarray(lengths, dtype=np.float64)
        else:
            near, weights = (np.asarray(m) for m in mix)
            self.mix = (near.astype(np.int64), weights.astype(np.float32))
            f = self.feats
            wide = SparseFeatures(sample_ids=f.sample_ids, row_sample=f.row_sample, token_ids=f.token_ids,
                                  vectors=f.vectors.astype(np.float32) if f.vectors.dtype == np.float16 else f.vectors,
                                  emb=f.emb, n_positions=f.n_positions)
            self.norm = aggregate(wide, list(near), np.ones(len(f)), member_weights=weights).sample_norms()
            self.lengths = base_lengths[near].mean(axis=1) if lengths is None else np.asarray(lengths, np.float64)

    def __len__(self) -> int:
        return len(self.norm)

    def take(self, which: np.ndarray) -> "Units":
        """The units ``which`` only (a pass that refills a few units' lists computes only theirs)."""
        which = np.asarray(which, dtype=np.int64)
        if self.mix is None:
            return Units(take_indices(self.feats, which), length_power=self.length_power,
                         lengths=self.lengths[which])
        near, weights = self.mix[0][which], self.mix[1][which]
        base, local = np.unique(near, return_inverse=True)
        return Units(take_indices(self.feats, base), (local.reshape(near.shape), weights),
                     length_power=self.length_power, lengths=self.lengths[which])

    def with_length_power(self, power: float) -> "Units":
        """The same units (sharing their tables) with another ``length_power``."""
        out = copy.copy(self)
        out.length_power = float(power)
        return out

    def cosines(self, chunk: SparseFeatures, chunk_norm: np.ndarray, mean=None):
        """[units, len(chunk)] float32 cosine of every unit with every sample of ``chunk`` (0 for a zero
        G); with a ``length_power`` p, times min(1, the sample's scored positions (response tokens) /
        the unit's ``lengths``)^p: the value a unit prefers samples by, discounting a sample shorter
        than the unit's own responses and never rewarding a longer one; with ``mean`` (a
        :class:`forvalue.valuation.scoring.MeanTable` of the valuation set these units come from),
        (those values, the chunk's [n] set-mean values) from the same rows read once."""
        import torch

        from ..valuation.feature_source import kernel_threads
        from ..valuation.scoring import torch_threads

        shared = mean is not None and self.table.covers(mean)
        dots, raw = self.table.dots_tensor(chunk, mean if shared else None)   # [chunk, base], reused buffer
        if mean is not None and not shared:
            raw = mean.raw(chunk)
        out = torch.empty((len(self), len(chunk)), dtype=torch.float32)
        with torch_threads(kernel_threads()):
            if self.mix is None:
                out.copy_(dots.T)
            else:   # smoothed unit u = sum_k weights[u, k] base[near[u, k]]: rows of the transposed dots
                near, weights = (torch.from_numpy(x) for x in self.mix)
                base = self.table.scratch("base_t", dots.numel(), torch.float32).view(dots.shape[1], dots.shape[0])
                base.copy_(dots.T)
                tmp = self.table.scratch("mix", out.numel(), torch.float32).view(out.shape)
                torch.index_select(base, 0, near[:, 0], out=out)
                out.mul_(weights[:, :1])
                for k in range(1, near.shape[1]):
                    torch.index_select(base, 0, near[:, k], out=tmp)
                    out.addcmul_(tmp, weights[:, k:k + 1])
            out.mul_(torch.from_numpy(_inverse(self.norm))[:, None])
            out.mul_(torch.from_numpy(_inverse(chunk_norm))[None, :])
            if self.length_power:
                # the smoothing's buffer (free again here): no block beyond those of the cosines
                share = self.table.scratch("mix", out.numel(), torch.float32).view(out.shape)
                share.copy_(torch.from_numpy(chunk.n_positions.astype(np.float32))[None, :].expand(out.shape))
                share.div_(torch.from_numpy(np.maximum(self.lengths, 1.0).astype(np.float32))[:, None])
                out.mul_(share.clamp_(max=1.0).pow_(self.length_power))
        return out.numpy() if mean is None else (out.numpy(), raw)

    def chunk_size(self) -> int:
        return max(1, BLOCK_BYTES // (8 * max(1, len(self))))

    def blocks(self, feats: SparseFeatures):
        """Yield (positions, [units, chunk] cosines) over features in memory."""
        yield from part_blocks(self, feats, 0)


def part_blocks(units: Units, part: SparseFeatures, start: int, subset: np.ndarray | None = None, *, mean=None):
    """Yield (positions, [units, chunk] cosines) over one part of the training features (``start``: the
    position of its first sample), or over its samples ``subset`` (part positions, ascending); chunks
    of :meth:`Units.chunk_size` samples. With ``mean`` (a MeanTable): (positions, cosines, the set-mean
    values of those samples)."""
    norms = part.sample_norms()
    c = units.chunk_size()
    offsets = None if subset is None else csr(part)
    for a in range(0, len(part) if subset is None else len(subset), c):
        if subset is None:
            b = min(len(part), a + c)
            idx, chunk = np.arange(a, b), part.take(a, b) if (a, b) != (0, len(part)) else part
        else:
            idx = subset[a:a + c]
            chunk = take_indices(part, idx, offsets)
        got = units.cosines(chunk, norms[idx], mean)
        yield (start + idx, got) if mean is None else (start + idx, *got)


def unit_similarity(units: Units) -> np.ndarray:
    """[P, P] cosine between units."""
    return np.concatenate([cos for _, cos in units.blocks(units.feats)], axis=1).astype(np.float64)


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


def valuation_units(val: SparseFeatures, *, smooth: int, max_units: int, seed: int,
                     length_power: float = 0.0) -> tuple[Units, np.ndarray, dict]:
    """The balanced strategy's units (smoothed; their ``lengths``: the mean scored positions of the
    valuation samples each sums) and their farthest-point visit order (by the units' cosines)."""
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
    lengths = np.array([val.n_positions[g].mean() if len(g) else 0.0 for g in groups])
    base = Units(aggregate(val, groups, weights), lengths=lengths)
    sim = unit_similarity(base)
    order = farthest_point_order(sim)
    # a prototype cell is already a sum over its members: smoothing applies to single samples only
    m = 1 if n_val > max_units else max(1, min(int(smooth), len(groups)))
    if m > 1:
        near = np.empty((len(groups), m), dtype=np.int64)
        for u in range(len(groups)):
            ranked = np.argsort(-sim[u], kind="stable")
            near[u] = np.concatenate([[u], ranked[ranked != u][: m - 1]])
        bw = np.where(base.norm > 0, 1.0 / np.where(base.norm > 0, base.norm, 1.0), 0.0)
        units = Units(base.feats, (near, bw[near]), length_power=length_power, lengths=lengths[near].mean(axis=1))
    else:
        units = base.with_length_power(length_power)
    info.update({"units": len(groups), "smooth": m, "length_power": float(length_power)})
    return units, order, info


# ----------------------------------------------------------------------------- round robin
def _top(block: np.ndarray, idx: np.ndarray, length: int, theta: np.ndarray):
    """Entries of ``block`` [rows, chunk] that may be among their row's best ``length``: at least the
    row's threshold ``theta`` and at least the row's ``length``-th value in this block (ties kept).
    Returns (rows, values, positions)."""
    mask = block >= theta[:, None]
    if block.shape[1] > length:
        big = np.nonzero(np.count_nonzero(mask, axis=1) > length)[0]
        if len(big):
            sub = block[big]
            kth = np.partition(sub, sub.shape[1] - length, axis=1)[:, sub.shape[1] - length]
            mask[big] &= sub >= kth[:, None]
    rows, cols = np.nonzero(mask)
    return rows, block[rows, cols], idx[cols]


class _Best:
    """Each row's best ``length`` (value, position) pairs (ties: lowest position) merged from
    candidates that arrive in any order; ``theta`` is each row's current ``length``-th value (-inf
    until it has that many), below which no candidate can enter."""

    def __init__(self, rows: int, length: int):
        self.n, self.length = rows, length
        self.theta = np.full(rows, -np.inf, dtype=np.float32)
        self.pool: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = self.kept = 0

    def add(self, rows: np.ndarray, vals: np.ndarray, pos: np.ndarray) -> None:
        keep = vals >= self.theta[rows]
        self.pool.append((rows[keep].astype(np.int32), vals[keep].astype(np.float32), pos[keep].astype(np.int64)))
        self.size += int(keep.sum())
        if self.size - self.kept > max(self.n * self.length // 2, 1 << 16):   # the pool stays under 1.5x the lists
            self._reduce()

    def _reduce(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, vals, pos = (np.concatenate(x) for x in zip(*self.pool)) if self.pool else (
            np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        order = np.lexsort((pos, -vals, rows))
        rows, vals, pos = rows[order], vals[order], pos[order]
        first = np.searchsorted(rows, np.arange(self.n + 1))
        keep = np.arange(len(rows)) - first[rows] < self.length
        rows, vals, pos = rows[keep], vals[keep], pos[keep]
        first = np.searchsorted(rows, np.arange(self.n + 1))
        full = first[1:] - first[:-1] >= self.length
        self.theta[full] = vals[first[1:][full] - 1]
        self.pool, self.size = [(rows, vals, pos)], len(rows)
        self.kept = self.size
        return rows, pos, first, vals

    def lists(self, values: bool = False):
        """Each row's positions, best first (``values``: (those lists, the lists of their values))."""
        rows, pos, first, vals = self._reduce()
        out = [pos[first[u]:first[u + 1]] for u in range(self.n)]
        return (out, [vals[first[u]:first[u + 1]] for u in range(self.n)]) if values else out


def _part_candidates(part: SparseFeatures, start: int, units: Units, taken: np.ndarray, length: int,
                     theta: np.ndarray, table=None):
    """One part's candidates for every unit of ``units`` (samples not yet ``taken`` that may be among
    the unit's best ``length``; ``theta``: the thresholds known when the part starts), and with
    ``table`` (a :class:`forvalue.valuation.scoring.MeanTable`) the part's set-mean values too, read once."""
    found, raw = [], np.zeros(len(part))
    for idx, block, *part_raw in part_blocks(units, part, start, mean=table):
        if part_raw:
            raw[idx - start] = part_raw[0]
        block[:, taken[idx]] = -np.inf
        found.append(_top(block, idx, length, theta))
    rows, vals, pos = (np.concatenate(x) for x in zip(*found)) if found else (
        np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return None if table is None else table.values(part, raw), (rows, vals, pos)


def _part_dense(part: SparseFeatures, start: int, units: Units, free: np.ndarray) -> list:
    """[(positions, [units, chunk] cosines)] of the part's samples among ``free`` (positions)."""
    local = free[(free >= start) & (free < start + len(part))] - start
    return list(part_blocks(units, part, start, local))


def _part_max_cosine(part: SparseFeatures, start: int, units: Units, table=None):
    out, raw = np.empty(len(part)), np.zeros(len(part))
    for idx, cos, *part_raw in part_blocks(units, part, start, mean=table):
        if part_raw:
            raw[idx - start] = part_raw[0]
        out[idx - start] = cos.max(axis=0)
    return None if table is None else table.values(part, raw), out


def _store_values(values, out: tuple[np.ndarray, ...] | None, start: int) -> None:
    if values is not None and out is not None:
        for o, v in zip(out, values):
            o[start:start + len(v)] = v


def round_robin(units: Units, train: SparseFeatures | FeatureSource, visit: np.ndarray, need: int, *,
                runner: PartRunner | None = None, list_length: int | None = None,
                dense_elements: int | None = None, values: tuple | None = None,
                excluded: np.ndarray | None = None, cosines: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The first ``need`` picks of a round-robin: units take turns in the order ``visit``; each takes
    the training sample not yet taken it values most (``Units.cosines``; ties: lowest index). Exact, in bounded memory:
    per-unit candidate lists of the best ``list_length`` samples, refilled by another pass (over the
    units that ran short only) when one runs out; the samples still free are ranked in one dense
    block once they fit ``dense_elements``. Each pass is a map over the parts of ``train``
    (``runner``: here, or one Ray task per shard). ``values`` (``(MeanTable, (raw, normalized, norm))``):
    the first pass also fills the set-mean values (one read of a store); ``excluded``: never taken;
    ``cosines`` (at least ``need`` long) receives each pick's value with the unit whose turn took it."""
    source, runner = as_source(train), runner or LOCAL_RUNNER
    n, P = len(source), len(units)
    taken = np.isin(np.arange(n), np.zeros(0) if excluded is None else excluded)
    need = min(need, n - int(taken.sum()))
    dense_elements = dense_elements or BLOCK_BYTES // 4      # float32 cosines
    lists, vals = [np.zeros(0, np.int64)] * P, [np.zeros(0, np.float32)] * P   # candidates and their cosines
    complete, ptr = np.zeros(P, bool), np.zeros(P, np.int64)
    length = min(n, list_length or (LIST_FACTOR * math.ceil(max(need, 1) / max(P, 1)) + LIST_EXTRA))
    stats = {"passes": 0, "dense_finish": False, "refilled_units": 0}
    table, out = values if values is not None else (None, None)

    def refill(which: np.ndarray, length: int) -> None:
        nonlocal table
        free = np.nonzero(~taken)[0]
        stats["passes"] += 1
        if table is None and len(free) * P <= dense_elements:   # what is still free fits one block
            cos = np.empty((P, len(free)), dtype=np.float32)
            for _, blocks in runner.map(source, _part_dense, units, free, within=free):
                for idx, block in blocks:
                    cos[:, np.searchsorted(free, idx)] = block
            for u in range(P):
                o = np.argsort(-cos[u], kind="stable")
                lists[u], vals[u] = free[o], cos[u, o]
            complete[:] = True
            ptr[:] = 0
            stats["dense_finish"] = True
            return
        sub = units if len(which) == P else units.take(which)
        best = _Best(len(which), length)
        for start, (part_values, found) in runner.map(source, _part_candidates, sub, taken, length, best.theta,
                                                      table):
            _store_values(part_values, out, start)
            best.add(*found)
        table = None
        for row, (lst, val) in enumerate(zip(*best.lists(values=True))):
            u = which[row]
            lists[u], vals[u] = lst, val
            complete[u] = len(lst) == len(free)
            ptr[u] = 0
        if stats["passes"] > 1:
            stats["refilled_units"] += len(which)

    refill(np.arange(P), length)
    picked = np.empty(need, dtype=np.int64)
    cosines = np.empty(need, dtype=np.float32) if cosines is None else cosines
    count = pos = 0
    while count < need:
        u = visit[pos % P]
        lst, p = lists[u], ptr[u]
        while p < len(lst) and taken[lst[p]]:
            p += 1
        ptr[u] = p
        if p == len(lst):
            if complete[u]:          # nothing left for this unit: every sample is taken
                pos += 1
                continue
            # one pass serves every unit that would run short soon: those with fewer free candidates
            # left than twice the turns still to come, with lists long enough for those turns
            turns = math.ceil((need - count) / P)
            length = min(n, max(2 * length, LIST_FACTOR * turns + LIST_EXTRA))
            low = [v for v in range(P) if not complete[v]
                   and np.count_nonzero(~taken[lists[v][ptr[v]:]]) < 2 * turns + 2]
            refill(np.array(sorted(set(low) | {int(u)}), dtype=np.int64), length)
            continue
        picked[count] = i = int(lst[p])
        taken[i], cosines[count] = True, vals[u][p]
        count, pos, ptr[u] = count + 1, pos + 1, p + 1
    return picked, stats


def _max_cosine(source: FeatureSource, val: SparseFeatures, runner: PartRunner, values=None) -> np.ndarray:
    table, out = values if values is not None else (None, None)
    key = np.full(len(source), -np.inf)
    for start, (part_values, part_key) in runner.map(source, _part_max_cosine, Units(val), table):
        _store_values(part_values, out, start)
        key[start:start + len(part_key)] = part_key
    return key


def _sorted_order(key: np.ndarray) -> np.ndarray:
    return np.argsort(-key, kind="stable")


# ----------------------------------------------------------------------------- API
def _excluded_last(order: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """``order`` without the ``exclude`` indices, then those in their given order."""
    if exclude is None or not len(exclude):
        return order
    exclude = np.asarray(exclude, dtype=np.int64)
    out = np.ones(max(len(order), int(exclude.max()) + 1), bool)
    out[exclude] = False
    return np.concatenate([order[out[order]], exclude])


def rank_values(raw: np.ndarray, normalized: np.ndarray | None, norm: np.ndarray | None,
                strategy: str, *, exclude: np.ndarray | None = None) -> Ranking:
    """A sorting strategy (``raw-mean``, ``cosine-mean``) from values already computed; ``exclude``
    (training indices, in the order they should take) comes after every other sample."""
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
    return Ranking(strategy=strategy, order=_excluded_last(_sorted_order(key), exclude), raw=raw,
                   normalized=np.full(len(raw), np.nan) if normalized is None else np.asarray(normalized, float),
                   norm=np.full(len(raw), np.nan) if norm is None else np.asarray(norm, float), key=key)


def rank_features(train: SparseFeatures | FeatureSource, val: SparseFeatures, strategy: str = DEFAULT_STRATEGY, *,
                  limit: int | None = None, smooth: int = SMOOTH, max_units: int = MAX_UNITS, seed: int = 0,
                  length_power: float = LENGTH_POWER, progress: Callable[[str], None] | None = None,
                  runner: PartRunner | None = None, exclude: np.ndarray | None = None) -> Ranking:
    """Order the training samples by ``strategy`` from their sparse features and the valuation
    set's. ``train``: features in memory, or a :class:`forvalue.valuation.feature_source.FeatureSource` (a
    feature store read shard by shard: positions are in its ``sample_ids`` order). ``limit``: only
    the first ``limit`` positions are needed (the round-robin strategies stop there); None orders
    every sample. ``runner``: where the passes over the training features run (default: here, part
    after part; :class:`forvalue.engines.ray_parts.RayPartRunner`: one Ray task per shard); the
    order does not depend on it. ``exclude``: training indices (positions of ``train``) that the
    strategy never picks, ordered after every other sample in the given order (samples a
    consistency check dropped, :mod:`forvalue.curation.consistency`); the values of every sample are still
    computed in the same passes. ``length_power`` p (balanced only, 0-1): a unit's turn takes the
    sample with the highest cosine x min(1, its scored positions / the unit's)^p (0: the cosine alone)."""
    import time

    from ..valuation.scoring import mean_table, source_values

    check_strategy(strategy)
    if len(train) == 0 or len(val) == 0:
        raise ValueError("need at least one training and one valuation sample")
    if not 0.0 <= length_power <= 1.0:
        raise ValueError(f"length_power must be between 0 (the cosine alone) and 1, got {length_power}")
    source = as_source(train)
    val = ordered(val)
    t0 = time.perf_counter()
    if strategy in ("raw-mean", "cosine-mean"):
        return rank_values(*source_values(source, val, runner=runner or LOCAL_RUNNER), strategy, exclude=exclude)
    if runner is None or runner is LOCAL_RUNNER:   # here: two parts at a time, one core each
        runner = ThreadedPartRunner(min(2, os.cpu_count() or 1))
    info: dict = {}
    key = picked_cosine = None
    # the first pass over the training features also fills the set-mean values (one read of a store)
    values = (mean_table(val), tuple(np.empty(len(source)) for _ in range(3)))
    if strategy == "max-cosine":
        key = _max_cosine(source, val, runner, values)
        order = _excluded_last(_sorted_order(key), exclude)
    else:
        need = len(source) if limit is None else min(int(limit), len(source))
        kept = len(source) - (0 if exclude is None else len(exclude))
        if strategy == "round-robin":
            units, visit = Units(val), np.arange(len(val))
            info["units"] = len(val)
        else:
            units, visit, info = valuation_units(val, smooth=smooth, max_units=max_units, seed=seed,
                                                  length_power=length_power)
        cosines, picked_cosine = np.empty(len(source), np.float32), np.full(len(source), np.nan)
        order, stats = round_robin(units, source, visit, need, runner=runner, values=values, excluded=exclude,
                                   cosines=cosines)
        picked_cosine[order] = cosines[:len(order)]
        if need > kept:   # the order reaches the excluded samples
            order = np.concatenate([order, np.asarray(exclude, dtype=np.int64)[:need - kept]])
        info.update(stats)
    raw, normalized, norm = values[1]
    info["seconds"] = time.perf_counter() - t0
    return Ranking(strategy=strategy, order=order, raw=raw, normalized=normalized, norm=norm, key=key, info=info,
                   picked_cosine=picked_cosine)


__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "RANKED_BY", "NEAR_CUT",
           "PAIRWISE_STRATEGIES", "SIZE_MODES", "SubsetSpec", "Ranking", "Units",
           "aggregate", "farthest_point_order", "rank_features", "rank_values", "round_robin", "valuation_units",
           "subset_count", "needed_prefix", "check_strategy"]
