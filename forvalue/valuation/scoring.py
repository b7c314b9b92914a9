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

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..data.samples import Sample
from ..errors import ConfigError
from .features import FeatureConfig, SparseFeatures, dense_batches, encode_all, extract_sparse

SCORING_METHODS = ("sparse", "exact", "full-vocab", "emb")


def normalize_method(method: str) -> str:
    """``method`` checked against the scoring methods (0.2.0 removed the old name ``full``: ``full-vocab``)."""
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

    def to_polars(self):
        """A polars DataFrame, one row per training sample in input order: sample_id, score, rank
        (1 = most valuable), normalized and norm (null where the method has none)."""
        import polars as pl

        n = len(self.values)
        return pl.DataFrame({
            "sample_id": pl.Series(self.train_ids, dtype=pl.String),
            "score": pl.Series(np.asarray(self.values, dtype=np.float64)),
            "rank": pl.Series(rank(self.values), dtype=pl.Int64),
            "normalized": pl.Series(self.normalized if self.normalized is not None else [None] * n, dtype=pl.Float64),
            "norm": pl.Series(self.norms if self.norms is not None else [None] * n, dtype=pl.Float64),
        })


# ----------------------------------------------------------------------------- sparse
@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for the block (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _torch(a):
    """A tensor sharing the array's memory. Arrays of memory-mapped shards are read-only; nothing
    here writes into an input, so torch's warning about them is silenced."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
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
    if not pairwise:
        return MeanTable(val, dtype=np.float64 if train.vectors.dtype == np.float64 else np.float32).raw(
            train)
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


_POOL = None


def _pool():
    """Two kernel threads shared by every table and shard (starting threads per shard cost about a
    tenth of the re-scoring of a store)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():        # a forked child has the pool but not its threads
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="forvalue-mean"))
    return _POOL[1]


class MeanTable:
    """The valuation set's mean row per token (the set-mean side of a sparse score), built once and
    applied to any number of training features: a feature store larger than memory is scored shard
    by shard against one table (:func:`source_values`).

    The kernel, per chunk of training rows: convert the (float16) vectors into a float32 buffer,
    gather the table rows of their tokens (tokens the valuation set lacks point at a zero row),
    multiply and sum, add into the samples. All buffers are preallocated; two threads split the
    chunks (the torch ops release the GIL), each running its ops single-threaded.
    """

    CHUNK = 4096

    def __init__(self, val: SparseFeatures, *, dtype=np.float32):
        import torch

        self.dt = torch.float64 if dtype == np.float64 else torch.float32
        self.vt, inv = np.unique(val.token_ids, return_inverse=True)
        self.r = val.vectors.shape[1]
        with torch_threads(1):   # small ops: thread start-up costs more than it saves
            vvec = _torch(val.vectors).to(self.dt)
            # one more row of zeros at the end: where tokens absent from the valuation set point
            self.table = torch.zeros((len(self.vt) + 1, self.r), dtype=self.dt).index_add_(0, _torch(inv), vvec)
            self.table /= len(val)
        self._lut = np.zeros(0, dtype=np.int32)
        # ||mean_v G_v||^2 = mean_v <G_v, mean G>: the valuation set scored against itself
        self.gbar = math.sqrt(max(float(np.mean(self.raw(val))), 0.0))

    def _positions(self, token_ids: np.ndarray) -> np.ndarray:
        """The table row of each token id (``len(vt)``, the zero row, for tokens not in the table)."""
        top = int(token_ids.max()) + 1 if len(token_ids) else 0
        if top > len(self._lut):
            lut = np.full(max(top, int(self.vt[-1]) + 1 if len(self.vt) else 0), len(self.vt), dtype=np.int32)
            lut[self.vt] = np.arange(len(self.vt), dtype=np.int32)
            self._lut = lut
        return self._lut[token_ids]

    def raw(self, train: SparseFeatures, *, workers: int | None = None) -> np.ndarray:
        """[n] mean inner product of each training sample with the valuation set."""
        import torch

        if train.vectors.shape[1] != self.r:
            raise ValueError("training and valuation features have different widths (r)")
        n_rows = len(train.token_ids)
        if len(train) == 0 or n_rows == 0:
            return np.zeros(len(train))
        pos = torch.from_numpy(self._positions(train.token_ids))
        x = _torch(train.vectors)
        owner = _torch(train.row_sample)
        starts = list(range(0, n_rows, self.CHUNK))
        workers = workers or min(2, os.cpu_count() or 1, len(starts))

        def part(k: int) -> "torch.Tensor":
            out = torch.zeros((len(train),), dtype=torch.float64)
            buf = torch.empty((self.CHUNK, self.r), dtype=self.dt)
            gathered = torch.empty((self.CHUNK, self.r), dtype=self.dt)
            dots = torch.empty((self.CHUNK,), dtype=self.dt)
            for i in starts[k::workers]:
                m = min(self.CHUNK, n_rows - i)
                b, g, d = buf[:m], gathered[:m], dots[:m]
                b.copy_(x[i:i + m])
                torch.index_select(self.table, 0, pos[i:i + m], out=g)
                torch.sum(b.mul_(g), 1, out=d)
                out.index_add_(0, owner[i:i + m], d.to(torch.float64))
            return out

        with torch_threads(1):
            if workers == 1:
                return part(0).numpy()
            return sum(_pool().map(part, range(workers))).numpy()

    def values(self, train: SparseFeatures, raw: np.ndarray | None = None):
        """(raw, normalized, norm): the score, the cosine with the mean valuation gradient, ||G||."""
        raw = self.raw(train) if raw is None else np.asarray(raw, dtype=np.float64)
        norm = train.sample_norms()
        denom = norm * self.gbar
        with np.errstate(invalid="ignore", divide="ignore"):
            normalized = np.where(denom > 0, raw / np.where(denom > 0, denom, 1.0), 0.0)
        return raw, normalized, norm


def mean_table(val: SparseFeatures) -> MeanTable:
    """The valuation set's :class:`MeanTable`, in float64 for float64 features, float32 otherwise."""
    return MeanTable(val, dtype=np.float64 if val.vectors.dtype == np.float64 else np.float32)


def _part_values(part: SparseFeatures, start: int, table: MeanTable):
    return table.values(part)


def source_values(source, val: SparseFeatures, *, runner=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw, normalized, norm) of every sample of a :class:`forvalue.valuation.feature_source.FeatureSource`
    (positions in its order) against the valuation features ``val``, read part by part (a feature
    store: one shard at a time; memory: the shard and the results). ``runner``: where the parts run
    (:class:`forvalue.valuation.feature_source.PartRunner`; default here, one after the other)."""
    from .feature_source import LOCAL_RUNNER, as_source

    source = as_source(source)
    table = mean_table(val)
    out = tuple(np.empty(len(source)) for _ in range(3))
    for start, values in (runner or LOCAL_RUNNER).map(source, _part_values, table):
        for o, v in zip(out, values):
            o[start:start + len(v)] = v
    return out


def set_values(train: SparseFeatures, val: SparseFeatures,
               raw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw, normalized, norm) of every training sample: the For-Value mean inner product (``raw``
    when computed already), the cosine with the mean valuation gradient, and ||G_i||."""
    dtype = np.float64 if train.vectors.dtype == np.float64 else np.float32
    return MeanTable(val, dtype=dtype).values(train, raw)


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
