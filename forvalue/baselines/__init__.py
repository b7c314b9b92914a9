"""Gradient baselines on LoRA: Hessian-free (TracIn at the last checkpoint), DataInf, HyperINF.

Pipeline: :func:`.lora.finetune_lora` -> :func:`.gradients.per_sample_gradients` for training and
valuation samples -> :func:`.influence.influence_values`. :func:`score_gradient_methods` runs it all
and times every method end to end (fine-tuning and gradients included). Higher = more valuable,
as everywhere in forvalue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .gradients import LoraGradients, per_sample_gradients
from .influence import GRADIENT_METHODS, datainf, hessian_free, hyperinf, influence_values, schulz_inverse
from .lora import LoraModel, LoraSettings, finetune_lora


@dataclass
class GradientScore:
    method: str
    matrix: np.ndarray | None       # [n_val, n_train] when pairwise
    values: np.ndarray              # [n_train]
    seconds: float                  # end to end: fine-tuning + gradients + this method's own step
    info: dict = field(default_factory=dict)
    cpu_seconds: float = 0.0        # process CPU time of the same work (all threads)


def score_gradient_methods(lm, train, val, *, methods: Sequence[str] = ("hessian-free", "datainf"),
                           config=None, lora: LoraSettings = LoraSettings(), pairwise: bool = True,
                           batch_size: int = 8, progress: bool = False,
                           method_kwargs: dict | None = None) -> dict[str, GradientScore]:
    """Fine-tune LoRA on ``train`` (samples), take per-sample gradients of ``train`` and ``val`` and
    value with each method. The shared cost (encoding, fine-tuning, gradients) is added to every
    method's ``seconds``: each number is what running that method alone would cost."""
    from ..valuation.features import FeatureConfig, encode_all

    config = config or FeatureConfig(positions="all")
    bad = [m for m in methods if m not in GRADIENT_METHODS]
    if bad:
        raise ValueError(f"unknown gradient method(s) {bad}; choose from {', '.join(GRADIENT_METHODS)}")
    t0, c0 = time.perf_counter(), time.process_time()
    train_enc, _ = encode_all(lm, train, config)
    val_enc, _ = encode_all(lm, val, config)
    tuned = finetune_lora(lm, train_enc, config.positions, lora, progress=progress)
    tr = per_sample_gradients(tuned, train_enc, config.positions, batch_size=batch_size, progress=progress,
                              desc="train gradients")
    va = per_sample_gradients(tuned, val_enc, config.positions, batch_size=batch_size, progress=progress,
                              desc="val gradients")
    shared, shared_cpu = time.perf_counter() - t0, time.process_time() - c0
    info = {"finetune_seconds": tuned.seconds, "gradient_seconds": tr.seconds + va.seconds,
            "shared_seconds": shared, "n_lora_params": tr.n_params,
            "train_loss_first": tuned.losses[0] if tuned.losses else None,
            "train_loss_last": float(np.mean(tuned.losses[-10:])) if tuned.losses else None,
            "lora": lora.to_dict()}
    out = {}
    for m in methods:
        extra = dict((method_kwargs or {}).get(m, {}))
        minfo = dict(info)
        if m == "hyperinf":
            extra["info"] = minfo
        c1 = time.process_time()
        mat, own = influence_values(m, tr, va, pairwise=True, **extra)
        own_cpu = time.process_time() - c1
        minfo["own_seconds"] = own
        out[m] = GradientScore(method=m, matrix=mat if pairwise else None, values=mat.mean(0),
                               seconds=shared + own, info=minfo, cpu_seconds=shared_cpu + own_cpu)
    del tuned
    return out


__all__ = ["LoraSettings", "LoraModel", "LoraGradients", "GradientScore", "GRADIENT_METHODS", "finetune_lora",
           "per_sample_gradients", "hessian_free", "datainf", "hyperinf", "influence_values",
           "schulz_inverse", "score_gradient_methods"]
