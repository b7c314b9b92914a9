"""Inner products between training samples and valuation units, from sparse stored rows.

<G_i, G_u> = sum over the tokens t both hold of <x_{i,t}, y_{u,t}>: the work is one r-wide dot per
(training row, unit row) pair sharing a token, and nothing else. The units' rows are held by token,
and each token takes one of two kernels, chosen from the valuation side only:

- a *wide* token (held by at least ``PADDED_SHARE`` of the units, and by ``DENSE_UNITS`` or more):
  one matrix product of the training rows of that token with the token's [P, r] table (zero rows
  for the units without it), added into those samples' output rows. Text concentrates on frequent
  tokens, so these few tokens carry much of the work, at BLAS speed.
- every other token: its (training row, unit row) pairs form a sparse pattern whose dots one
  sampled dense-dense product (``torch.sparse.sampled_addmm``) computes, each added into its
  (sample, unit) entry.

A part's rows are converted from float16 into one reused float32 buffer, ``ROW_CHUNK`` rows at a
time (never splitting a sample); each sample's dots are added in a fixed order (its wide tokens in
token order, then its other pairs in row order). Dots and sums are float32 (float64 for float64
features): a value agrees with a float64 sum to about 1e-7 relative, and passes over the same parts
(here or in a Ray task) give the same bits; computed within another set of samples, the BLAS may
pick another kernel for a product and change the last bit.

Memory per call: the output [n, P], the row buffer, one token's [rows, P] product and the pattern of
at most ``PAIR_CHUNK`` pairs; the padded tables are capped at ``max_bytes`` (the most widely held
tokens first).
"""

from __future__ import annotations

import threading

import numpy as np

DENSE_UNITS = 8          # a token held by fewer units never takes a padded table
PADDED_SHARE = 0.25      # a token held by this share of the units takes a [P, r] table (zero rows allowed)
PAIR_CHUNK = 1 << 20     # pairs per sampled product
ROW_CHUNK = 1 << 16      # training rows converted and multiplied per step


class PairTable:
    """The valuation units' rows grouped by token, ready to be dotted with any training features."""

    def __init__(self, units, *, dense_units: int | None = None, padded_share: float | None = None,
                 max_bytes: int = 128 * 2**20):
        import torch

        dense_units = DENSE_UNITS if dense_units is None else dense_units
        padded_share = PADDED_SHARE if padded_share is None else padded_share
        self.n_units = len(units)
        self.r = units.vectors.shape[1]
        self.dtype = np.float64 if units.vectors.dtype == np.float64 else np.float32
        self.tdt = torch.float64 if self.dtype == np.float64 else torch.float32
        tokens = np.asarray(units.token_ids, dtype=np.int64)
        order = np.lexsort((units.row_sample, tokens))            # by token, then unit
        self.tokens, starts, counts = np.unique(tokens[order], return_index=True, return_counts=True)
        self.starts = np.append(starts, len(order)).astype(np.int64)
        self.unit_of_row = np.asarray(units.row_sample, dtype=np.int64)[order]
        self.rows = np.ascontiguousarray(np.asarray(units.vectors)[order], dtype=self.dtype)
        # kernel per table token: 0 pairs (sampled product), 2 padded table
        # the tokens held by the most units take a padded table, within max_bytes
        wide = np.nonzero(counts >= max(dense_units, padded_share * self.n_units))[0]
        fit = max_bytes // max(1, self.n_units * self.r * np.dtype(self.dtype).itemsize)
        padded = np.sort(wide[np.argsort(-counts[wide], kind="stable")][:fit])
        self.kind = np.zeros(len(self.tokens), dtype=np.int8)
        self.kind[padded] = 2
        self.slot = np.full(len(self.tokens), -1, dtype=np.int64)
        self.slot[padded] = np.arange(len(padded))
        table = np.zeros((len(padded), self.n_units, self.r), dtype=self.dtype)
        for slot, k in enumerate(padded):
            a, b = self.starts[k], self.starts[k + 1]
            table[slot, self.unit_of_row[a:b]] = self.rows[a:b]
        self.padded_table = torch.from_numpy(table)
        self.rows_t = torch.from_numpy(self.rows)
        self._lut = np.zeros(0, dtype=np.int64)
        self._local = threading.local()

    def __getstate__(self):      # a table travels to Ray tasks: without its per-thread buffers
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_covers", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def covers(self, mean) -> bool:
        """Whether every token of ``mean`` (a MeanTable) is held by a unit (then one read of the
        training rows serves both; remembered for the last table asked about)."""
        if getattr(self, "_covers", (None,))[0] is not mean:
            self._covers = (mean, bool(np.isin(mean.vt, self.tokens).all()))
        return self._covers[1]

    def _table_pos(self, token_ids: np.ndarray) -> np.ndarray:
        """The table index of each token (-1 where no unit holds it)."""
        top = int(token_ids.max()) + 1 if len(token_ids) else 0
        if top > len(self._lut):
            size = max(top, int(self.tokens[-1]) + 1 if len(self.tokens) else 0)
            lut = np.full(size, -1, dtype=np.int64)
            lut[self.tokens] = np.arange(len(self.tokens))
            self._lut = lut
        return self._lut[token_ids]

    def dots(self, part) -> np.ndarray:
        """[len(part), P] float32 (float64 for float64 features): <G_i, G_u> for every sample of
        ``part`` and every unit (a new array)."""
        return self.dots_tensor(part)[0].numpy().copy()

    def dots_tensor(self, part, mean=None):
        """(:meth:`dots` as a torch tensor in a buffer this table reuses, valid until its next call;
        with ``mean``, a :class:`forvalue.valuation.scoring.MeanTable` whose tokens this table holds, also the
        samples' [n] float64 set-mean values, from the same converted rows). Only the rows whose
        token some unit holds are read."""
        import torch

        from .feature_source import kernel_threads
        from .scoring import _torch, torch_threads

        n, P = len(part), self.n_units
        out = self.scratch("out", n * P).view(n, P).zero_()
        raw = None if mean is None else torch.zeros(n, dtype=torch.float64)
        if part.n_rows and part.vectors.shape[1] != self.r:
            raise ValueError("training and valuation features have different widths (r)")
        if mean is not None and not self.covers(mean):
            raise ValueError("the mean table holds tokens the units do not")
        tpos_all = self._table_pos(np.asarray(part.token_ids, dtype=np.int64))
        hit = np.flatnonzero(tpos_all >= 0)     # rows in sample order: samples stay contiguous
        if n == 0 or P == 0 or len(hit) == 0:
            return out, (None if raw is None else raw.numpy())
        tpos, owner = tpos_all[hit], np.asarray(part.row_sample, dtype=np.int64)[hit]
        kind = self.kind[tpos]
        cnt = np.where(kind == 0, self.starts[tpos + 1] - self.starts[tpos], 0)
        mpos = None if mean is None else torch.from_numpy(mean._positions(part.token_ids[hit]))
        vectors = _torch(part.vectors)
        hit_t = torch.from_numpy(hit)
        # hit rows in chunks that never split a sample, gathered and converted into reused buffers
        starts = np.flatnonzero(np.diff(owner, prepend=-1))
        cuts = [0]
        while cuts[-1] < len(hit):
            c = cuts[-1]
            k = np.searchsorted(starts, c + ROW_CHUNK, side="right") - 1    # last sample start in reach
            if c + ROW_CHUNK >= len(hit):
                cuts.append(len(hit))
            elif starts[k] > c:
                cuts.append(int(starts[k]))
            else:                                                            # one sample longer than a chunk
                k = np.searchsorted(starts, c, side="right")
                cuts.append(int(starts[k]) if k < len(starts) else len(hit))
        with torch_threads(kernel_threads()):
            for r0, r1 in zip(cuts[:-1], cuts[1:]):
                x = self._buffer(r1 - r0)
                half = self.scratch("gather", (r1 - r0) * self.r, vectors.dtype).view(r1 - r0, self.r)
                torch.index_select(vectors, 0, hit_t[r0:r1], out=half)
                x.copy_(half)
                if mean is not None:
                    g = self.scratch("mean", (r1 - r0) * self.r).view(r1 - r0, self.r)
                    torch.index_select(mean.table.to(self.tdt), 0, mpos[r0:r1], out=g)
                    raw.index_add_(0, torch.from_numpy(owner[r0:r1]), g.mul_(x).sum(1).to(torch.float64))
                dense = np.flatnonzero(kind[r0:r1] == 2)
                self._products(out, x, owner[r0:r1], dense[np.argsort(tpos[r0:r1][dense], kind="stable")],
                               tpos[r0:r1])
                self._pairs(out, x, owner[r0:r1], tpos[r0:r1], cnt[r0:r1])
        return out, (None if raw is None else raw.numpy())

    def _buffer(self, rows: int):
        return self.scratch("rows", max(rows, ROW_CHUNK) * self.r)[:rows * self.r].view(rows, self.r)

    def scratch(self, name: str, size: int, dtype=None):
        """A flat buffer of at least ``size`` elements kept between calls (fresh memory costs page
        faults on every call), one per thread."""
        import torch

        dtype = dtype or self.tdt
        bufs = self._local.__dict__.setdefault("bufs", {})   # one set per thread
        buf = bufs.get(name)
        if buf is None or buf.numel() < size or buf.dtype != dtype:
            buf = bufs[name] = torch.empty(max(size, 1), dtype=dtype)
        return buf[:size]

    def _products(self, out, x, owner, rows, tpos) -> None:
        """Tokens held by many units (``rows``: their training rows, grouped by token in token
        order): one matrix product per token with its [P, r] table."""
        import torch

        if not len(rows):
            return
        tok = tpos[rows]
        bounds = np.flatnonzero(np.diff(tok)) + 1
        starts = np.concatenate([[0], bounds]).tolist()
        stops = np.concatenate([bounds, [len(rows)]]).tolist()
        x_sel = x.index_select(0, torch.from_numpy(rows))
        own = torch.from_numpy(owner[rows])
        for a, b in zip(starts, stops):
            prod = x_sel[a:b] @ self.padded_table[int(self.slot[tok[a]])].T
            out.index_add_(0, own[a:b], prod)

    def _pairs(self, out, x, owner, tpos, cnt) -> None:
        """Tokens held by fewer units: training row k pairs with the ``cnt[k]`` unit rows of its
        token; the pairs form a sparse pattern (rows in the part's order) whose dots one sampled
        matrix product computes; each dot is added into its sample and unit."""
        import warnings

        import torch

        ends = np.cumsum(cnt)
        if not len(ends) or ends[-1] == 0:
            return
        P = self.n_units
        first = self.starts[np.maximum(tpos, 0)]
        flat = out.view(-1)
        lo = 0
        while lo < len(cnt):       # chunks of about PAIR_CHUNK pairs
            hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo] - cnt[lo]) + PAIR_CHUNK, side="right")))
            c = cnt[lo:hi]
            crow = np.zeros(hi - lo + 1, dtype=np.int64)
            np.cumsum(c, out=crow[1:])
            m = int(crow[-1])
            if m:
                col = np.repeat(first[lo:hi] - crow[:-1], c) + np.arange(m)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")        # torch: sparse CSR support is in beta
                    pattern = torch.sparse_csr_tensor(torch.from_numpy(crow), torch.from_numpy(col),
                                                      torch.zeros(m, dtype=self.tdt), size=(hi - lo, len(self.rows)))
                    d = torch.sparse.sampled_addmm(pattern, x[lo:hi], self.rows_t.T, beta=0.0).values()
                idx = np.repeat(owner[lo:hi] * P, c) + self.unit_of_row[col]
                flat.index_add_(0, torch.from_numpy(idx), d)
            lo = hi


__all__ = ["PairTable", "DENSE_UNITS"]
