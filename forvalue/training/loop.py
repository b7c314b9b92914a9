"""The one training loop: supervised fine-tuning (:mod:`forvalue.training.finetune`) and the LoRA fine-tuning
of the gradient baselines (:mod:`forvalue.baselines.lora`) both step through :func:`train_loop`.

What differs between callers is passed in, so each keeps its own numerics:

- the batch order, an iterator of index lists: :func:`cycled_batches` (fine-tuning: a fixed batch
  size over epochs of seeded numpy permutations) or :func:`epoch_batches` (baselines: seeded torch
  permutations, a shorter last batch per epoch);
- the loss, built on :func:`forvalue.training.evaluate.response_nll` (hidden state t-1 predicts token t, the
  targets of :func:`forvalue.valuation.features.targets`): :func:`token_mean_loss` (fine-tuning: NLL summed
  over the batch / its target tokens) or :func:`sample_mean_loss` (baselines: mean of the
  per-sample mean NLLs);
- the optimizer and its learning-rate schedule, gradient clipping (fine-tuning clips, the
  baselines do not) and a per-step callback (history, MLflow metrics, checks).

Each step: zero the gradients, forward and backward, clip, ``optimizer.step()``, read the learning
rate just used, ``scheduler.step()``, then the callback with a :class:`Step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .evaluate import response_nll
from ..valuation.features import Encoded

# A loss function: a batch of encoded samples -> (differentiable scalar loss, target tokens in the batch).
LossFn = Callable[[Sequence[Encoded]], "tuple[Any, int]"]


@dataclass
class Step:
    """What one optimizer step did (passed to the callback)."""

    step: int                   # 1-based
    loss: float                 # the loss the gradient was taken of
    lr: float                   # learning rate of this step (before the scheduler moved on)
    grad_norm: float | None     # total gradient norm before clipping; None without clipping
    tokens: int                 # target tokens in the batch


# ----------------------------------------------------------------------------- batch orders
def cycled_batches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` batches of ``min(batch_size, n)`` indices: epochs of seeded numpy permutations,
    read in order (a batch may span two epochs)."""
    rng = np.random.default_rng(seed)
    size = min(batch_size, n)
    stream = np.zeros(0, dtype=np.int64)
    for _ in range(steps):
        while len(stream) < size:
            stream = np.concatenate([stream, rng.permutation(n)])
        yield stream[:size]
        stream = stream[size:]


def epoch_batches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` batches: each epoch a seeded ``torch.randperm`` cut into batches of ``batch_size``
    (the last one of an epoch shorter when ``batch_size`` does not divide ``n``)."""
    import torch

    if n < 1:
        raise ValueError("no samples to train on")
    gen = torch.Generator().manual_seed(seed)
    step = 0
    while step < steps:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, batch_size):
            if step >= steps:
                return
            yield order[i:i + batch_size]
            step += 1


# ----------------------------------------------------------------------------- losses
def token_mean_loss(model, positions: str, pad_id: int, device) -> LossFn:
    """Mean NLL per target token over the whole batch (long samples weigh more): the SFT loss."""

    def loss(batch):
        sums, counts = response_nll(model, batch, positions, pad_id, device)
        n = counts.sum()
        return sums.sum() / n.clamp(min=1), int(n)

    return loss


def sample_mean_loss(model, positions: str, pad_id: int, device) -> LossFn:
    """Mean over the batch of each sample's mean NLL per target token (every sample weighs the
    same): the loss of the gradient baselines (DataInf)."""

    def loss(batch):
        sums, counts = response_nll(model, batch, positions, pad_id, device)
        return (sums / counts.to(sums.dtype)).mean(), int(counts.sum())

    return loss


# ----------------------------------------------------------------------------- the loop
def train_loop(model, encoded: Sequence[Encoded], batches: Iterable[Sequence[int]], loss_fn: LossFn, optimizer,
               scheduler, *, max_grad_norm: float | None = None, on_step: Callable[[Step], None] | None = None,
               steps: int | None = None, progress: bool = False, desc: str = "fine-tune") -> int:
    """Train ``model`` (its trainable parameters are the optimizer's) one step per batch of indices
    into ``encoded``; returns the number of steps taken (``steps``: the expected number, for the
    progress bar). The model is in train mode during the loop and in eval mode after it; gradients
    are released at the end. An exception of ``on_step`` (a check) stops the loop."""
    import torch
    from tqdm.auto import tqdm

    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    model.train()
    step = 0
    try:
        for step, idx in enumerate(batches, 1):
            loss, tokens = loss_fn([encoded[i] for i in idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = None
            if max_grad_norm is not None:
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
            optimizer.step()
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            rec = Step(step=step, loss=float(loss.detach()), lr=lr, grad_norm=gnorm, tokens=int(tokens))
            if on_step is not None:
                on_step(rec)
            bar.set_postfix(loss=f"{rec.loss:.3f}")
            bar.update(1)
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return step


__all__ = ["Step", "LossFn", "train_loop", "cycled_batches", "epoch_batches", "token_mean_loss", "sample_mean_loss"]
