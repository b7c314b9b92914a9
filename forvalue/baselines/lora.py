"""LoRA fine-tuning for the gradient baselines (peft; r=8, alpha=32, q_proj and v_proj by default).

The gradient baselines (Hessian-free / TracIn at the last checkpoint, DataInf, HyperINF) value data
with per-sample gradients of a LoRA adapter fine-tuned on the training set, as in DataInf (Kwon et
al. 2024). The loss is the mean next-token NLL over the *same scored positions* as For-Value:
samples are encoded with :func:`forvalue.valuation.features.encode_all` and every target in
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

from ..config import opt
from ..training.evaluate import response_nll
from ..valuation.features import Encoded, collate, length_batches
from ..training.loop import epoch_batches, sample_mean_loss, train_loop


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter and fine-tuning settings. Defaults are sized for a 135M model on a CPU."""

    r: int = opt(8, "LoRA rank of the gradient baselines", flag="--lora-r")
    alpha: float = opt(32.0, "LoRA alpha of the gradient baselines", flag="--lora-alpha")
    dropout: float = opt(0.0, "LoRA dropout (0 keeps fine-tuning deterministic for a seed)", cli=False)
    target_modules: tuple[str, ...] = opt(("q_proj", "v_proj"), "adapted modules", cli=False)
    epochs: float = opt(1.0, "LoRA fine-tuning epochs before the gradients (fractions allowed)",
                        flag="--train-epochs")
    lr: float = opt(3e-4, "LoRA learning rate", flag="--lora-lr")
    batch_size: int = opt(8, "LoRA fine-tuning batch size", flag="--lora-batch-size")
    weight_decay: float = opt(0.0, "AdamW weight decay", cli=False)
    warmup: float = opt(0.06, "share of steps with linear warm-up, then linear decay to 0", cli=False)
    seed: int = opt(0, "LoRA init and data order", cli=False)

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


def sample_losses(causal_lm, batch: Sequence[Encoded], positions: str, pad_id: int, device):
    """Per-sample mean NLL over the scored positions of ``batch``: a differentiable tensor [B].

    :func:`forvalue.training.evaluate.response_nll` (the one next-token loss; logits only at scored
    positions, no batch x sequence x vocabulary tensor) divided by each sample's target count."""
    sums, counts = response_nll(causal_lm, batch, positions, pad_id, device)
    return sums / counts.to(sums.dtype)


def finetune_lora(lm, encoded: Sequence[Encoded], positions: str = "all",
                  settings: LoraSettings = LoraSettings(), *, progress: bool = False) -> LoraModel:
    """Fine-tune a fresh LoRA adapter on ``encoded`` (AdamW, linear warm-up and decay, seeded shuffle,
    no gradient clipping; loss: the mean of the per-sample mean NLLs) with :func:`forvalue.training.loop.train_loop`.

    Returns the trained adapter in eval mode; ``seconds`` is the wall time of copy + training."""
    import torch

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
    losses: list[float] = []
    train_loop(peft_model, encoded, epoch_batches(n, settings.batch_size, total, settings.seed),
               sample_mean_loss(causal_lm, positions, pad_id, device), opt, sched,
               on_step=lambda st: losses.append(st.loss), steps=total, progress=progress, desc="lora fine-tune")
    return LoraModel(model=peft_model, causal_lm=causal_lm, pad_id=pad_id, device=device, settings=settings,
                     seconds=time.perf_counter() - t0, losses=losses)


__all__ = ["LoraSettings", "LoraModel", "attach_lora", "finetune_lora", "sample_losses",
           "length_batches"]
