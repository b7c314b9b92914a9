"""Why a sample is valuable: its score as a sum over its scored positions.

A training sample's For-Value against a valuation set is linear in its positions,

    v_i = sum_k < (e_{y_k} - p_k) h_k^T , mean_v G_v >,

so every scored token has a contribution and the contributions add up to the score. For the stored
``sparse`` representation the k-th term is sum over the position's support (its target and top-k
tokens) of coef * <h_k P, mean valuation row of that token>; summed over positions it is exactly the
sparse score (the rows of G are those terms summed per token). For ``emb`` it is <h_k, mean_v emb_v>.
For ``exact`` and ``full-vocab`` it is h_k . (Gbar[y_k] - sum_u p_k[u] Gbar[u]) with Gbar the mean
valuation gradient on the method's vocabulary (``exact``: the tokens of the explained and the
valuation samples, as :func:`forvalue.valuation.scoring.score` with the same samples).

The valuation samples a sample "helps most" are ranked by the pairwise value of the stored
representation (sparse, or emb for ``emb``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..data.samples import Sample
from .features import FeatureConfig, SparseFeatures

EXPLAIN_METHODS = ("sparse", "emb", "exact", "full-vocab")


@dataclass
class TokenContribution:
    text: str            # the target token, decoded
    position: int        # its index in the sample's token ids
    token_id: int
    contribution: float


@dataclass
class Explanation:
    sample_id: str
    score: float                                   # the sum of the contributions
    tokens: list[TokenContribution]                # in text order
    helps_most: list[tuple[str, float]] = field(default_factory=list)   # (valuation sample id, pairwise value)

    def strongest(self, n: int = 5) -> tuple[list[TokenContribution], list[TokenContribution]]:
        """The n most positive and the n most negative contributions."""
        order = sorted(self.tokens, key=lambda t: -t.contribution)
        return order[:n], [t for t in order[::-1][:n] if t.contribution < 0]

    def to_dict(self) -> dict:
        ranked = sorted(self.tokens, key=lambda t: -abs(t.contribution))
        return {"sample_id": self.sample_id, "score": self.score,
                "tokens": [{"text": t.text, "position": t.position, "contribution": t.contribution} for t in ranked],
                "helps_most": [{"sample_id": s, "value": v} for s, v in self.helps_most]}


def _val_table(val: SparseFeatures):
    """(sorted token ids, mean valuation row per token [tokens, r]) in float64."""
    vt, inv = np.unique(val.token_ids, return_inverse=True)
    table = np.zeros((len(vt), val.vectors.shape[1]))
    np.add.at(table, inv, val.vectors.astype(np.float64))
    return vt, table / len(val)


def position_contributions(lm, samples: Sequence[Sample], val: SparseFeatures, config: FeatureConfig, *,
                           method: str = "sparse", batch_size: int = 8,
                           val_samples: Sequence[Sample] | None = None,
                           train: SparseFeatures | None = None) -> list[tuple[list[int], list[int], np.ndarray]]:
    """Per sample (in order): (target positions, target token ids, contribution per position).
    ``val_samples`` are needed by the dense methods (exact, full-vocab). ``train``, the samples' stored
    sparse features (same order), limits each sample's support to the rows it kept (a bounded
    configuration drops its smallest rows), so that the contributions add up to the stored score."""
    from .features import Head, compute_dtype_for, encode_all, length_batches, scored_positions
    from .scoring import normalize_method

    method = normalize_method(method)
    if method not in EXPLAIN_METHODS:
        raise ValueError(f"explanations exist for {', '.join(EXPLAIN_METHODS)}, not {method!r}")
    encoded, _ = encode_all(lm, samples, config)
    cdt = compute_dtype_for(lm)
    head = Head(lm.model, cdt)
    if method in ("exact", "full-vocab"):
        if val_samples is None:
            raise ValueError(f"method {method} needs the valuation samples")
        term = _dense_term(lm, head, encoded, val_samples, config, method, batch_size)
    else:
        term = _sparse_term(head, val, config, train) if method == "sparse" else _emb_term(val)
    out: dict[int, tuple] = {}
    for batch in length_batches(encoded, batch_size):
        pos = scored_positions(lm, batch, config.positions, cdt)
        owner = np.array([e.index for e in batch], dtype=np.int64)[pos.S.cpu().numpy()]   # sample of each position
        contrib = term(pos.H.to(head.W.device), pos.Y.to(head.W.device), owner)
        start = 0
        for b, e in enumerate(batch):
            n = pos.n_per_sample[b]
            lo, hi = e.target_range(config.positions)
            out[e.index] = (list(range(lo, hi)), e.input_ids[lo:hi], contrib[start:start + n])
            start += n
    return [out[i] for i in range(len(encoded))]


def _emb_term(val: SparseFeatures):
    emb_mean = val.emb.astype(np.float64).mean(0)
    return lambda H, Y, owner: H.double().cpu().numpy() @ emb_mean


def _sparse_term(head, val: SparseFeatures, config: FeatureConfig, train: SparseFeatures | None = None):
    """Per position: sum over its support of coef * <h P, mean valuation row of the token>, over the
    (sample, token) rows ``train`` kept when it is given."""
    from .features import position_support, projection

    P = None if config.r is None else projection(head.W.shape[1], config.r, config.seed, head.W.device, head.W.dtype)
    vt, table = _val_table(val)
    kept = None if train is None else np.sort(train.row_sample * head.V + train.token_ids)

    def term(H, Y, owner):
        Hp = (H if P is None else H @ P).double().cpu().numpy()
        src, toks, coefs = (x.cpu().numpy() for x in position_support(H, Y, head, config.k))
        at = np.minimum(np.searchsorted(vt, toks), max(len(vt) - 1, 0))
        hit = (vt[at] == toks) if len(vt) else np.zeros(len(toks), bool)
        if kept is not None:
            hit &= np.isin(owner[src] * head.V + toks, kept, assume_unique=False)
        dots = np.where(hit, np.einsum("ij,ij->i", Hp[src], table[at]), 0.0) * coefs.astype(np.float64)
        return np.bincount(src, weights=dots, minlength=H.shape[0])

    return term


def _dense_term(lm, head, encoded, val_samples, config: FeatureConfig, method: str, batch_size: int):
    """Per position: h . (Gbar[y] - sum_u p[u] Gbar[u]) on the method's vocabulary."""
    import torch

    from .features import dense_batches, encode_all

    val_enc, _ = encode_all(lm, val_samples, config)
    V = head.V
    if method == "full-vocab":
        vocab, col = None, torch.arange(V, device=head.W.device)
    else:
        vocab = torch.tensor(sorted({t for e in list(encoded) + list(val_enc) for t in e.input_ids}), dtype=torch.long,
                             device=head.W.device)
        col = torch.full((V,), -1, dtype=torch.long, device=head.W.device)
        col[vocab] = torch.arange(vocab.shape[0], device=head.W.device)
    gbar = None
    for _, G, _ in dense_batches(lm, val_enc, config, vocab, batch_size=batch_size):
        part = G.sum(0)
        gbar = part if gbar is None else gbar + part
    gbar = gbar / len(val_enc)                              # [U, d]

    def term(H, Y, owner):
        out = []
        for sl in head.chunks(H.shape[0]):
            logits = head.logits(H[sl])
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            p = torch.exp((logits if vocab is None else logits[:, vocab]) - lse)    # [c, U]
            a = H[sl] @ gbar.T                                                      # [c, U]
            rows = col[Y[sl]]
            target = torch.where(rows >= 0, a.gather(1, rows.clamp(min=0)[:, None])[:, 0], torch.zeros_like(a[:, 0]))
            out.append((target - (p * a).sum(1)).double().cpu())
        return torch.cat(out).numpy()

    return term


def explain(lm, samples: Sequence[Sample], train: SparseFeatures, val: SparseFeatures, config: FeatureConfig, *,
            method: str = "sparse", batch_size: int = 8, helps: int = 3,
            val_samples: Sequence[Sample] | None = None) -> list[Explanation]:
    """Explanations of ``samples`` (whose features are ``train``, in the same order) against the
    valuation set whose features are ``val`` (and samples ``val_samples``, for exact / full-vocab)."""
    from .scoring import emb_scores, sparse_scores

    parts = position_contributions(lm, samples, val, config, method=method, batch_size=batch_size,
                                   val_samples=val_samples, train=train if method == "sparse" else None)
    pair = (sparse_scores if method == "sparse" else emb_scores)(train, val, pairwise=True)   # [n_val, n]
    tok = lm.tokenizer
    out = []
    for j, (s, (positions, ids, contrib)) in enumerate(zip(samples, parts)):
        tokens = [TokenContribution(text=tok.decode([t]), position=p, token_id=int(t), contribution=float(c))
                  for p, t, c in zip(positions, ids, contrib)]
        best = np.argsort(-pair[:, j], kind="stable")[:helps]
        out.append(Explanation(sample_id=s.sample_id, score=float(np.sum(contrib)), tokens=tokens,
                               helps_most=[(val.sample_ids[v], float(pair[v, j])) for v in best]))
    return out


__all__ = ["EXPLAIN_METHODS", "TokenContribution", "Explanation", "position_contributions", "explain"]
