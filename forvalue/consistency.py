"""Forward-only consistency checks: what relevance (For-Value) does not see.

For-Value finds samples like the valuation set; a pool broken inside the right domain and format
(the solution of another problem, a cut-off answer) looks like it too. A check is computed from the
same extraction and thresholded on the valuation set, which is clean target data by definition:
a training sample fails when it is less consistent than (``quantile`` of) the valuation samples.

- ``grounding``: IFD = s(A|Q) / s(A) (Li et al. 2024) over the first 48 response tokens, the
  response's loss with its instruction (the extraction pass's own ``SparseFeatures.losses_first``)
  over its loss after an empty instruction (``losses_alone``, ``extract_sparse(grounding=True)``). Low: the instruction explains the
  response. On real math (docs/benchmarks.md, "Curation on real data") it separates another
  problem's solution from a matching one with AUC 1.000.

:func:`rank_checked` drops failing samples before a strategy orders the rest and puts them last,
recording which check dropped each one and why (value, threshold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHECKS = ("grounding",)


@dataclass
class CheckResult:
    """One check over the training samples."""

    name: str
    values: np.ndarray       # [n] the check's value per training sample (NaN: not computable)
    threshold: float         # a sample fails above it
    failed: np.ndarray       # [n] bool

    def reason(self, i: int) -> str:
        return f"{self.name}: {self.values[i]:.3f} > {self.threshold:.3f} (the valuation set's limit)"


def ifd(features) -> np.ndarray:
    """[n] s(A|Q) / s(A) over the first GROUNDING_TOKENS response tokens, of features extracted with
    the grounding pass."""
    if features.losses_first is None or features.losses_alone is None:
        raise ValueError("the grounding check needs features extracted with grounding=True "
                         "(losses_first and losses_alone)")
    return (np.asarray(features.losses_first, np.float64)
            / np.maximum(np.asarray(features.losses_alone, np.float64), 1e-12))


def grounding(train, val, quantile: float = 1.0) -> CheckResult:
    """Training samples less grounded than the valuation set's ``quantile`` fail (NaN never fails)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], not {quantile}")
    v = ifd(val)
    if np.isnan(v).all():
        raise ValueError("no valuation sample has a grounding value (plain text has no instruction)")
    threshold = float(np.nanquantile(v, quantile))
    t = ifd(train)
    return CheckResult("grounding", t, threshold, np.nan_to_num(t, nan=-np.inf) > threshold)


def rank_checked(train, val, strategy: str, checks=CHECKS, *, quantile: float = 1.0, **rank_kw):
    """(:class:`forvalue.selection.Ranking` of every training sample, [CheckResult]): the samples
    that pass every check in ``strategy``'s order, then those that failed one, least failing first
    (so a subset of any size keeps a failing sample only after every passing one).
    ``ranking.info["dropped_by"]``: {training index: reason} of the failed ones. ``train``: features
    in memory; ``rank_kw`` goes to :func:`forvalue.selection.rank_features` (no ``limit``: the
    order is complete)."""
    from .selection import rank_features

    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    results = [grounding(train, val, quantile) for c in checks if c == "grounding"]
    failed = np.zeros(len(train), dtype=bool)
    for r in results:
        failed |= r.failed
    kept, dropped = np.flatnonzero(~failed), np.flatnonzero(failed)
    if not len(kept):
        raise ValueError("every training sample failed a consistency check")

    def part(idx, how):
        return rank_features(train.select([train.sample_ids[i] for i in idx]), val, how, **rank_kw)

    inner = part(kept, strategy)
    values = [np.empty(len(train)) for _ in range(3)]
    for idx, r in ((kept, inner),) + (((dropped, part(dropped, "raw-mean")),) if len(dropped) else ()):
        for arr, got in zip(values, (r.raw, r.normalized, r.norm)):
            arr[idx] = got
    worst = np.max([r.values[dropped] - r.threshold for r in results], axis=0) if len(dropped) else np.zeros(0)
    key = None
    if inner.key is not None:
        key = np.full(len(train), -np.inf)
        key[kept] = inner.key
    info = dict(inner.info, checks={r.name: {"threshold": r.threshold, "failed": int(r.failed.sum())} for r in results},
                dropped_by={int(i): next(r.reason(i) for r in results if r.failed[i]) for i in dropped})
    order = np.concatenate([kept[inner.order], dropped[np.argsort(worst, kind="stable")]])
    return type(inner)(strategy=strategy, order=order, raw=values[0], normalized=values[1], norm=values[2],
                       key=key, info=info), results


__all__ = ["CHECKS", "CheckResult", "grounding", "ifd", "rank_checked"]
