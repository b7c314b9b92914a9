"""LoRA fine-tuning for the gradient baselines (peft; r=8, alpha=32, q_proj and v_proj by default).

The gradient baselines (Hessian-free / TracIn at the last checkpoint, DataInf, HyperINF) value data
with per-sample gradients of a LoRA adapter fine-tuned on the training set, as in DataInf (Kwon et
al. 2024). The loss is the mean next-token NLL over the *same scored positions* as For-Value:
samples are encoded with :func:`forvalue.features.encode_all` and every target in
``Encoded.target_range(positions)`` counts, so ``positions="all"`` / ``"response"`` mean the same
thing for every method.

The base model is deep-copied before the adapter is injected: the caller's model is never modified.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

from ..features import Encoded, _collate, base_model_of, length_batches, lm_head_of


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter and fine-tuning settings. Defaults are sized for a 135M model on a CPU."""

    r: int = 8
    alpha: float = 32.0
    dropout: float = 0.0           # 0 keeps fine-tuning deterministic for a seed
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    epochs: float = 1.0            # passes over the training set (fractions allowed)
    lr: float = 3e-4
    batch_size: int = 8
    weight_decay: float = 0.0
    warmup: float = 0.06           # share of steps with linear warm-up, then linear decay to 0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self) | {"target_modules": list(self.target_modules)}


@dataclass
class LoraModel:
    """A fine-tuned LoRA model: ``model`` is the peft model, ``causal_lm`` the wrapped *ForCausalLM."""

    model: object
    causal_lm: object
    pad_id: int
    device: object
    settings: LoraSettings
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def lora_modules(self):
        """(name, lora_A Linear, lora_B Linear) for every adapted layer, in model order."""
        out = []
        for name, mod in self.model.named_modules():
            a = getattr(mod, "lora_A", None)
            b = getattr(mod, "lora_B", None)
            if a is not None and b is not None and "default" in a:
                out.append((name, a["default"], b["default"]))
        return out


def attach_lora(model, settings: LoraSettings = LoraSettings()):
    """Deep copy of ``model`` with a fresh, seeded LoRA adapter (peft). Base weights are frozen."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(model)
    torch.manual_seed(settings.seed)
    cfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=list(settings.target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # transformers deprecation noise inside peft
        return get_peft_model(base, cfg), base


def collate(batch: Sequence[Encoded], pad_id: int, device, dtype=None):
    """Right-padded ids and mask of ``batch``, plus VLM image inputs (cast to ``dtype``)."""
    return _collate(batch, pad_id, device, dtype)


def sample_losses(causal_lm, batch: Sequence[Encoded], positions: str, pad_id: int, device):
    """Per-sample mean NLL over the scored positions of ``batch``: a differentiable tensor [B].

    Logits are formed only at scored positions (no batch x sequence x vocabulary tensor)."""
    import torch
    import torch.nn.functional as F

    inputs = collate(batch, pad_id, device, next(causal_lm.parameters()).dtype)
    h = base_model_of(causal_lm)(**inputs, use_cache=False).last_hidden_state
    bs, ts, ys, counts = [], [], [], []
    for b, e in enumerate(batch):
        start, end = e.target_range(positions)
        bs += [b] * (end - start)
        ts += list(range(start - 1, end - 1))   # hidden state at t-1 predicts token t
        ys += e.input_ids[start:end]
        counts.append(end - start)
    b_idx = torch.tensor(bs, dtype=torch.long, device=h.device)
    H = h[b_idx, torch.tensor(ts, dtype=torch.long, device=h.device)]
    logits = lm_head_of(causal_lm)(H).float()
    nll = F.cross_entropy(logits, torch.tensor(ys, dtype=torch.long, device=h.device), reduction="none")
    per = torch.zeros(len(batch), dtype=nll.dtype, device=nll.device).index_add_(0, b_idx, nll)
    return per / torch.tensor(counts, dtype=nll.dtype, device=nll.device)


def finetune_lora(lm, encoded: Sequence[Encoded], positions: str = "all",
                  settings: LoraSettings = LoraSettings(), *, progress: bool = False) -> LoraModel:
    """Fine-tune a fresh LoRA adapter on ``encoded`` (AdamW, linear warm-up and decay, seeded shuffle).

    Returns the trained adapter in eval mode; ``seconds`` is the wall time of copy + training."""
    import torch
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    peft_model, causal_lm = attach_lora(lm.model, settings)
    device = lm.device
    pad_id = lm.tokenizer.pad_token_id
    params = [p for p in peft_model.parameters() if p.requires_grad]
    n = len(encoded)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = max(1, int(round(settings.epochs * steps_per_epoch)))
    warm = int(settings.warmup * total)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (total - s) / max(1, total - warm)))
    gen = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    peft_model.train()
    step = 0
    bar = tqdm(total=total, desc="lora fine-tune", unit="step", disable=not progress)
    while step < total:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, settings.batch_size):
            if step >= total:
                break
            batch = [encoded[j] for j in order[i:i + settings.batch_size]]
            loss = sample_losses(causal_lm, batch, positions, pad_id, device).mean()
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
    bar.close()
    peft_model.eval()
    return LoraModel(model=peft_model, causal_lm=causal_lm, pad_id=pad_id, device=device, settings=settings,
                     seconds=time.perf_counter() - t0, losses=losses)


__all__ = ["LoraSettings", "LoraModel", "attach_lora", "finetune_lora", "sample_losses", "collate",
           "length_batches"]
