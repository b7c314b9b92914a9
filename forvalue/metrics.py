"""Evaluation metrics for data-valuation benchmarks (numpy only).

Protocol of DataInf (Kwon et al., 2024) as used in For-Value (Deng et al.,
arXiv 2508.10180), Table 1:

* every valuation sample ranks all training samples by value;
* training samples of the same class as the valuation sample are the
  positives (pseudo-label 1), all others negatives (0);
* **AUC** - ROC AUC of one valuation sample's value row against its
  pseudo-labels (rank-based Mann-Whitney statistic, ties count 1/2);
* **recall** - share of positives among the top-``n`` training samples,
  ``n`` being the number of positives for that valuation sample;
* both are averaged (and their population standard deviation taken) over
  the valuation samples.

Convention: a larger value means "more valuable". Scores where smaller is
better (e.g. influence-function values, where negative influence on the
loss means helpful) must be negated by the caller.

Ties in the rankings for recall and :func:`detection_rate` are broken by the
stable order of the training index (the lower index ranks first), so results
are deterministic.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "roc_auc",
    "auc_recall",
    "auc_recall_from_pseudo",
    "detection_rate",
    "clean_share",
    "coverage",
    "order_clean_auc",
]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, tied values sharing their average rank."""
    n = x.shape[0]
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start of every run of equal values in the sorted array
    change = np.flatnonzero(xs[1:] != xs[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [n]))
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _as_binary(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0/1 (or booleans)")
    return arr.astype(bool)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")


def roc_auc(scores, labels) -> float:
    """ROC AUC of ``scores`` (higher = more likely positive) against 0/1 ``labels``.

    Computed as the Mann-Whitney U statistic divided by ``n_pos * n_neg``
    with average ranks for ties, so a tie between a positive and a negative
    counts 1/2. Raises ValueError when there are no positives or no
    negatives, on length mismatch, or on NaN scores.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = _as_binary(labels, "labels")
    if s.ndim != 1 or y.ndim != 1:
        raise ValueError(f"roc_auc expects 1-D arrays, got shapes {s.shape} and {y.shape}")
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    _check_finite(s, "scores")
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC is undefined without both classes (positives={n_pos}, negatives={n_neg})"
        )
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auc_recall_from_pseudo(scores, pseudo) -> dict:
    """AUC and recall per valuation sample from an explicit pseudo-label matrix.

    ``scores`` and ``pseudo`` are both ``[n_val, n_train]``; ``pseudo[i, j]``
    is 1 when training sample ``j`` is a "relevant" sample for valuation
    sample ``i`` (same class; for the mislabeled task: same label and clean).

    Returns ``{"auc_mean", "auc_std", "recall_mean", "recall_std", "auc",
    "recall"}``; the last two are per-valuation-sample float arrays and the
    standard deviations are population ones (``np.std`` default).
    """
    s = np.asarray(scores, dtype=np.float64)
    p = _as_binary(pseudo, "pseudo")
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D [n_val, n_train], got shape {s.shape}")
    if p.shape != s.shape:
        raise ValueError(
            f"pseudo-label matrix shape {p.shape} does not match scores shape {s.shape}"
        )
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be non-empty, got shape {s.shape}")
    _check_finite(s, "scores")

    n_val = s.shape[0]
    aucs = np.empty(n_val, dtype=np.float64)
    recalls = np.empty(n_val, dtype=np.float64)
    for i in range(n_val):
        row, pos = s[i], p[i]
        n_pos = int(pos.sum())
        n_neg = int(pos.shape[0] - n_pos)
        if n_pos == 0 or n_neg == 0:
            raise ValueError(
                f"valuation sample {i} has {n_pos} positive and {n_neg} negative "
                "training samples; AUC/recall need at least one of each"
            )
        aucs[i] = roc_auc(row, pos)
        top = np.argsort(-row, kind="stable")[:n_pos]
        recalls[i] = pos[top].sum() / n_pos
    return {
        "auc_mean": float(aucs.mean()),
        "auc_std": float(aucs.std()),
        "recall_mean": float(recalls.mean()),
        "recall_std": float(recalls.std()),
        "auc": aucs,
        "recall": recalls,
    }


def auc_recall(scores, train_labels, val_labels) -> dict:
    """DataInf / For-Value class-detection AUC and recall.

    ``scores`` is ``[n_val, n_train]`` (higher = more valuable);
    ``train_labels`` (length ``n_train``) and ``val_labels`` (length
    ``n_val``) are class ids. The pseudo-label of training sample ``j`` for
    valuation sample ``i`` is ``train_labels[j] == val_labels[i]``. See
    :func:`auc_recall_from_pseudo` for the returned dict.
    """
    s = np.asarray(scores)
    tr = np.asarray(train_labels)
    va = np.asarray(val_labels)
    if tr.ndim != 1 or va.ndim != 1:
        raise ValueError(
            f"train_labels and val_labels must be 1-D, got shapes {tr.shape} and {va.shape}"
        )
    if s.ndim != 2 or s.shape != (va.shape[0], tr.shape[0]):
        raise ValueError(
            f"scores shape {s.shape} does not match (n_val, n_train) = "
            f"({va.shape[0]}, {tr.shape[0]})"
        )
    pseudo = va[:, None] == tr[None, :]
    return auc_recall_from_pseudo(s, pseudo)


def detection_rate(values, is_clean, top_frac: float = 0.1) -> float:
    """Share of clean samples among the top ``top_frac`` training samples by value.

    The number of samples inspected is ``max(1, round(top_frac * n))``; ties
    in ``values`` are broken by the stable order of the index (lower index
    first). This is the metric of For-Value's Table 7 (noisy-data
    detection): a good valuation puts clean samples on top.
    """
    v = np.asarray(values, dtype=np.float64)
    c = _as_binary(is_clean, "is_clean")
    if v.ndim != 1 or c.ndim != 1 or v.shape != c.shape:
        raise ValueError(
            f"values and is_clean must be 1-D of equal length, got {v.shape} and {c.shape}"
        )
    if v.shape[0] == 0:
        raise ValueError("values is empty")
    if not (0.0 < float(top_frac) <= 1.0):
        raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
    _check_finite(v, "values")
    k = max(1, int(round(float(top_frac) * v.shape[0])))
    top = np.argsort(-v, kind="stable")[:k]
    return float(c[top].sum() / k)


def clean_share(indices, is_clean) -> float:
    """Share of clean samples among ``indices`` (a selected subset); nan for an empty subset."""
    idx = np.asarray(indices, dtype=np.int64)
    c = _as_binary(is_clean, "is_clean")
    return float(c[idx].mean()) if len(idx) else float("nan")


def coverage(indices, classes) -> int:
    """Number of distinct classes (templates) among ``indices``."""
    cls = np.asarray(classes)
    return int(len(np.unique(cls[np.asarray(indices, dtype=np.int64)]))) if len(indices) else 0


def order_clean_auc(order, is_clean) -> float:
    """ROC AUC of a full order (best first) against ``is_clean``: the chance that a random clean
    sample comes before a random noisy one."""
    order = np.asarray(order, dtype=np.int64)
    c = _as_binary(is_clean, "is_clean")
    if sorted(order.tolist()) != list(range(len(c))):
        raise ValueError("order must be a permutation of every sample")
    position = np.empty(len(order), dtype=np.float64)
    position[order] = np.arange(len(order))
    return roc_auc(-position, c)
