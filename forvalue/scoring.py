"""For-Value scores: value(i -> v) = <G_v, G_i>; a valuation set's value is the mean over its samples.

Methods, all behind :func:`score`:
- ``sparse`` (default, stored): support = targets + top-k per position, hidden side projected to r;
- ``exact``: the paper's Algorithm 1, vocabulary restricted to the tokens of the compared texts
  (``exact_vocab="union"``: union over training and valuation texts; ``"batch"``: the valuation texts
  plus the current training batch, the paper's memory-saving variant, which depends on batching);
- ``full-vocab``: the whole vocabulary (the reference; only for small vocabularies or few samples);
- ``emb``: the alpha = 1 ablation, dot product of summed hidden states.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .data import Sample
from .errors import ConfigError
from .features import FeatureConfig, SparseFeatures, dense_batches, encode_all, extract_sparse

SCORING_METHODS = ("sparse", "exact", "full-vocab", "emb")
_RENAMED = {"full": "full-vocab"}   # old name -> new name (accepted, with a deprecation warning, for one release)


def normalize_method(method: str) -> str:
    """A scoring method's current name (``full`` is the deprecated name of ``full-vocab``)."""
    if method in _RENAMED:
        import warnings

        warnings.warn(f"scoring method {method!r} is now called {_RENAMED[method]!r}; the old name goes in the next "
                      "release", DeprecationWarning, stacklevel=3)
        method = _RENAMED[method]
    if method not in SCORING_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(SCORING_METHODS)}")
    return method
DENSE_MEMORY_LIMIT = 8 * 1024**3  # bytes of dense G the full/exact modes may hold


@dataclass
class ScoreResult:
    values: np.ndarray                 # [n_train] mean over the valuation set
    matrix: np.ndarray | None          # [n_val, n_train] when pairwise
    method: str
    config: FeatureConfig
    train_ids: list[str]
    val_ids: list[str]
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    normalized: np.ndarray | None = None  # [n_train] cosine with the mean valuation gradient (sparse)
    norms: np.ndarray | None = None       # [n_train] ||G_i|| of the stored features (sparse)


# ----------------------------------------------------------------------------- sparse
def _torch(a):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


PAIRWISE_CHUNK_BYTES = 256 * 2**20


def sparse_scores(train: SparseFeatures, val: SparseFeatures, *, pairwise: bool = False,
                  row_chunk: int = 65536) -> np.ndarray:
    """Scores from stored sparse rows: [n_train] (set mean) or [n_val, n_train] (pairwise).

    The valuation side becomes a token -> vector table; each training row gathers its token's
    vector, dots it with its own and the dots are summed per sample: O(rows x r)."""
    import torch

    if train.vectors.shape[1] != val.vectors.shape[1]:
        raise ValueError("training and valuation features have different widths (r)")
    dt = torch.float64 if train.vectors.dtype == np.float64 else torch.float32
    vt, inv = np.unique(val.token_ids, return_inverse=True)
    n_val, r = len(val), val.vectors.shape[1]
    vvec = _torch(val.vectors).to(dt)
    if pairwise:
        table = torch.zeros((len(vt) * n_val, r), dtype=dt)
        table.index_add_(0, _torch(inv * n_val + val.row_sample), vvec)
        table = table.view(len(vt), n_val, r)
    else:
        table = torch.zeros((len(vt), r), dtype=dt).index_add_(0, _torch(inv), vvec) / n_val
    out = torch.zeros((len(train), n_val) if pairwise else (len(train),), dtype=torch.float64)
    if len(vt) == 0:
        return out.T.numpy() if pairwise else out.numpy()
    pos = np.searchsorted(vt, train.token_ids)
    pos_c = np.minimum(pos, len(vt) - 1)
    hit = vt[pos_c] == train.token_ids
    rows = np.nonzero(hit)[0]
    if pairwise:   # each chunk gathers [rows, n_val, r] valuation vectors: keep that under ~256 MB
        itemsize = 8 if dt == torch.float64 else 4
        row_chunk = max(1, min(row_chunk, PAIRWISE_CHUNK_BYTES // max(1, n_val * r * itemsize)))
    for i in range(0, len(rows), row_chunk):
        sel = rows[i:i + row_chunk]
        x = _torch(train.vectors[sel]).to(dt)
        t = table[_torch(pos_c[sel])]
        if pairwise:
            dots = torch.bmm(t, x[:, :, None])[:, :, 0]           # [rows, n_val]
        else:
            dots = (t * x).sum(1)
        out.index_add_(0, _torch(train.row_sample[sel]), dots.to(torch.float64))
    return out.T.numpy() if pairwise else out.numpy()


def set_values(train: SparseFeatures, val: SparseFeatures,
               raw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw, normalized, norm) of every training sample: the For-Value mean inner product (``raw``
    when computed already), the cosine with the mean valuation gradient, and ||G_i||."""
    raw = sparse_scores(train, val) if raw is None else np.asarray(raw, dtype=np.float64)
    norm = train.sample_norms()
    gbar = math.sqrt(max(float(np.mean(sparse_scores(val, val))), 0.0))
    denom = norm * gbar
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(denom > 0, raw / np.where(denom > 0, denom, 1.0), 0.0)
    return raw, normalized, norm


def emb_scores(train: SparseFeatures, val: SparseFeatures, *, pairwise: bool = False) -> np.ndarray:
    m = val.emb.astype(np.float64) @ train.emb.astype(np.float64).T
    return m if pairwise else m.mean(0)


# ----------------------------------------------------------------------------- dense
def _dense_scores(lm, train_enc, val_enc, config, *, vocab_mode, pairwise, batch_size, progress):
    import torch

    from .features import Head, compute_dtype_for

    head = Head(lm.model, compute_dtype_for(lm))
    V, d = head.W.shape
    val_tokens = sorted({t for e in val_enc for t in e.input_ids})
    if vocab_mode == "full":
        vocab = None
        U = V
    else:
        vocab = torch.tensor(sorted({t for e in list(train_enc) + list(val_enc) for t in e.input_ids}), dtype=torch.long)
        U = len(vocab)
    itemsize = head.W.element_size()
    need = (len(val_enc) if pairwise else 1) * U * d * itemsize + 2 * batch_size * U * d * itemsize
    if need > DENSE_MEMORY_LIMIT:
        raise MemoryError(
            f"method would hold {need / 1e9:.1f} GB of dense gradients ({U} vocabulary rows x {d}); "
            "use method 'sparse', fewer valuation samples or pairwise=False")
    n_val = len(val_enc)
    Gv = torch.zeros((n_val if pairwise else 1, U * d), dtype=head.W.dtype, device=head.W.device)
    for idx, G, _ in dense_batches(lm, val_enc, config, vocab, batch_size=batch_size, progress=progress, desc="valuation"):
        flat = G.reshape(len(idx), -1)
        if pairwise:
            Gv[torch.tensor(idx, device=Gv.device)] = flat
        else:
            Gv[0] += flat.sum(0) / n_val
    row_mask_src = None
    if vocab_mode == "batch":
        row_mask_src = (vocab, set(val_tokens))
    out = np.zeros((Gv.shape[0], len(train_enc)))
    for idx, G, _ in dense_batches(lm, train_enc, config, vocab, batch_size=batch_size, progress=progress, desc="training"):
        flat = G.reshape(len(idx), -1)
        if row_mask_src is not None:
            vocab_t, vtok = row_mask_src
            allowed = vtok | {t for i in idx for t in train_enc[i].input_ids}
            keep = torch.tensor([int(t) in allowed for t in vocab_t.tolist()], device=G.device)
            G = G[:, keep]
            flat = G.reshape(len(idx), -1)
            s = Gv.view(Gv.shape[0], U, d)[:, keep].reshape(Gv.shape[0], -1) @ flat.T
        else:
            s = Gv @ flat.T
        out[:, idx] = s.double().cpu().numpy()
    return out if pairwise else out[0]


# ----------------------------------------------------------------------------- API
def score(
    lm,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    method: str = "sparse",
    config: FeatureConfig = FeatureConfig(),
    pairwise: bool = False,
    batch_size: int = 8,
    exact_vocab: str = "union",
    store=None,
    progress: bool = False,
) -> ScoreResult:
    """Value every training sample against the valuation set (higher = more valuable)."""
    method = normalize_method(method)
    if not train or not val:
        raise ValueError("need at least one training and one valuation sample")
    t0 = time.perf_counter()
    if method in ("sparse", "emb"):   # one path, with or without a store: features, then values
        if store is not None:
            tr = store.ensure(lm, train, config, batch_size=batch_size, progress=progress)
            va = store.ensure(lm, val, config, batch_size=batch_size, progress=progress)
            info = {"computed": tr.computed + va.computed, "reused": tr.reused + va.reused}
            tf, vf = tr.features, va.features
        else:
            info = {}
            tf = extract_sparse(lm, train, config, batch_size=batch_size, progress=progress)
            vf = extract_sparse(lm, val, config, batch_size=batch_size, progress=progress)
        res = score_features(tf, vf, method=method, config=config, pairwise=pairwise)
        res.seconds, res.info = time.perf_counter() - t0, info
        return res
    if exact_vocab not in ("union", "batch"):
        raise ValueError("exact_vocab must be 'union' or 'batch'")
    train_enc, _ = encode_all(lm, train, config)
    val_enc, _ = encode_all(lm, val, config)
    mode = "full" if method == "full-vocab" else exact_vocab
    m = _dense_scores(lm, train_enc, val_enc, config, vocab_mode=mode, pairwise=pairwise,
                      batch_size=batch_size, progress=progress)
    return ScoreResult(values=np.asarray(m.mean(0) if pairwise else m, dtype=np.float64),
                       matrix=m if pairwise else None, method=method, config=config,
                       train_ids=[s.sample_id for s in train], val_ids=[s.sample_id for s in val],
                       seconds=time.perf_counter() - t0)


def score_features(train: SparseFeatures, val: SparseFeatures, *, method: str = "sparse",
                   config: FeatureConfig | None = None, pairwise: bool = False) -> ScoreResult:
    """Values from features already computed (no model): ``sparse`` with the normalized value and
    ||G||, or ``emb``. The stored-features path of the platform and the last step of :func:`score`."""
    t0 = time.perf_counter()
    method = normalize_method(method)
    if method not in ("sparse", "emb"):
        raise ConfigError(f"method {method} needs the model (dense gradients); stored features give sparse and emb")
    m = (sparse_scores if method == "sparse" else emb_scores)(train, val, pairwise=pairwise)
    values = np.asarray(m.mean(0) if pairwise else m, dtype=np.float64)
    normalized = norms = None
    if method == "sparse":
        _, normalized, norms = set_values(train, val, raw=values)
    return ScoreResult(values=values, matrix=m if pairwise else None, method=method, config=config or FeatureConfig(),
                       train_ids=list(train.sample_ids), val_ids=list(val.sample_ids),
                       seconds=time.perf_counter() - t0, normalized=normalized, norms=norms)


# ----------------------------------------------------------------------------- ranking
def rank(values: np.ndarray) -> np.ndarray:
    """1 = most valuable; ties keep input order."""
    order = np.argsort(-np.asarray(values), kind="stable")
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def select(values: np.ndarray, *, top_k: int | None = None, top_p: float | None = None,
           bottom_p: float | None = None, drop_lowest_p: float | None = None) -> np.ndarray:
    """Indices of a subset, most valuable first (bottom_p: least valuable first).

    top_k: the k best; top_p: the best p percent; bottom_p: the worst p percent; drop_lowest_p:
    everything but the worst p percent. Exactly one must be given; percentages are 0-100."""
    given = [x is not None for x in (top_k, top_p, bottom_p, drop_lowest_p)]
    if sum(given) != 1:
        raise ValueError("give exactly one of top_k, top_p, bottom_p, drop_lowest_p")
    n = len(values)
    order = np.argsort(-np.asarray(values), kind="stable")
    for name, p in (("top_p", top_p), ("bottom_p", bottom_p), ("drop_lowest_p", drop_lowest_p)):
        if p is not None and not 0 <= p <= 100:
            raise ValueError(f"{name} is a percentage: 0 to 100, got {p}")
    if top_k is not None:
        if top_k < 0:
            raise ValueError("top_k must be >= 0")
        return order[: min(top_k, n)]
    if top_p is not None:
        return order[: int(round(n * top_p / 100))]
    if bottom_p is not None:
        return order[::-1][: int(round(n * bottom_p / 100))]
    return order[: n - int(round(n * drop_lowest_p / 100))]
