"""Why a sample is valuable: its score as a sum over its scored positions.

A training sample's For-Value against a valuation set is linear in its positions,

    v_i = sum_k < (e_{y_k} - p_k) h_k^T , mean_v G_v >,

so every scored token has a contribution and the contributions add up to the score. For the stored
``sparse`` representation the k-th term is sum over the position's support (its target and top-k
tokens) of coef * <h_k P, mean valuation row of that token>; summed over positions it is exactly the
sparse score (the rows of G are those terms summed per token). For ``emb`` it is <h_k, mean_v emb_v>.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .data import Sample
from .features import FeatureConfig, SparseFeatures

EXPLAIN_METHODS = ("sparse", "emb")


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
                           method: str = "sparse", batch_size: int = 8) -> list[tuple[list[int], list[int], np.ndarray]]:
    """Per sample (in order): (target positions, target token ids, contribution per position)."""
    import torch

    from .features import Head, compute_dtype_for, encode_all, length_batches, position_support, projection, \
        scored_positions

    if method not in EXPLAIN_METHODS:
        raise ValueError(f"explanations exist for {', '.join(EXPLAIN_METHODS)}, not {method!r}")
    encoded, _ = encode_all(lm, samples, config)
    cdt = compute_dtype_for(lm)
    head = Head(lm.model, cdt)
    P = None if config.r is None else projection(head.W.shape[1], config.r, config.seed, head.W.device, cdt)
    vt, table = _val_table(val)
    emb_mean = val.emb.astype(np.float64).mean(0)
    out: dict[int, tuple] = {}
    for batch in length_batches(encoded, batch_size):
        pos = scored_positions(lm, batch, config.positions, cdt)
        H, Y = pos.H.to(head.W.device), pos.Y.to(head.W.device)
        if method == "emb":
            contrib = (H.double().cpu().numpy() @ emb_mean)
        else:
            Hp = (H if P is None else H @ P).double().cpu().numpy()
            src, toks, coefs = (x.cpu().numpy() for x in position_support(H, Y, head, config.k))
            at = np.minimum(np.searchsorted(vt, toks), max(len(vt) - 1, 0))
            hit = (vt[at] == toks) if len(vt) else np.zeros(len(toks), bool)
            dots = np.where(hit, np.einsum("ij,ij->i", Hp[src], table[at]), 0.0) * coefs.astype(np.float64)
            contrib = np.bincount(src, weights=dots, minlength=H.shape[0])
        start = 0
        for b, e in enumerate(batch):
            n = pos.n_per_sample[b]
            lo, hi = e.target_range(config.positions)
            out[e.index] = (list(range(lo, hi)), e.input_ids[lo:hi], contrib[start:start + n])
            start += n
    return [out[i] for i in range(len(encoded))]


def explain(lm, samples: Sequence[Sample], train: SparseFeatures, val: SparseFeatures, config: FeatureConfig, *,
            method: str = "sparse", batch_size: int = 8, helps: int = 3) -> list[Explanation]:
    """Explanations of ``samples`` (whose features are ``train``, in the same order) against the
    valuation set whose features are ``val``."""
    from .scoring import emb_scores, sparse_scores

    parts = position_contributions(lm, samples, val, config, method=method, batch_size=batch_size)
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
