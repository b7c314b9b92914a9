"""Cheap filters that curation users pick instead of a valuation: response perplexity and IFD.

Both need one (perplexity) or two (IFD) forward passes and no valuation set. Values follow the
convention of the rest of forvalue: higher = keep first.

- ``perplexity``: the mean NLL per response token under the model, s(A|Q); the value is -s(A|Q),
  so the lowest-perplexity responses come first.
- ``ifd``: the instruction-following difficulty of Li et al. (2024, "From Quantity to Quality"):
  IFD = s(A|Q) / s(A), where s(A) is the same response scored after an empty instruction. Higher IFD
  (the instruction helps the model little) ranks first, as in their selection; samples with
  IFD >= 1 (the instruction does not help at all) are ranked after all others, as they discard them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.samples import Sample
from ..valuation.features import without_instruction

FILTERS = ("perplexity", "ifd")


def response_losses(lm, samples: Sequence[Sample], *, chat_template: bool = True, max_length: int | None = None,
                    batch_size: int = 8) -> np.ndarray:
    """[n] mean NLL per response token of each sample, s(A|Q)."""
    from ..training.evaluate import evaluate_loss

    res = evaluate_loss(lm, list(samples), chat_template=chat_template, positions="response",
                        max_length=max_length, batch_size=batch_size)
    return np.asarray(res.per_sample, dtype=np.float64)


def filter_values(lm, samples: Sequence[Sample], method: str, *, chat_template: bool = True,
                  max_length: int | None = None, batch_size: int = 8,
                  losses: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(values, extras) of a cheap filter; ``losses`` passes s(A|Q) computed already."""
    if method not in FILTERS:
        raise ValueError(f"unknown filter {method!r}; choose one of {', '.join(FILTERS)}")
    kw = dict(chat_template=chat_template, max_length=max_length, batch_size=batch_size)
    with_q = response_losses(lm, samples, **kw) if losses is None else np.asarray(losses, dtype=np.float64)
    if method == "perplexity":
        return -with_q, {"loss": with_q}
    alone = response_losses(lm, [without_instruction(s) for s in samples], **kw)
    ifd = with_q / np.maximum(alone, 1e-12)
    return np.where(ifd < 1.0, ifd, -ifd), {"loss": with_q, "loss_without_instruction": alone, "ifd": ifd}


__all__ = ["FILTERS", "filter_values", "response_losses", "without_instruction"]
