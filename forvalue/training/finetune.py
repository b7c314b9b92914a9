"""Supervised fine-tuning of a causal LM on a (curated) subset, and tracked evaluation runs.

- Loss on response tokens only, and exactly the tokens For-Value scores: samples are encoded with
  :func:`forvalue.valuation.features.encode_all` (same chat template rendering) and the loss covers target
  indices ``Encoded.target_range("response")``, hidden state t-1 predicting token t.
- LoRA (peft) by default, full fine-tuning with ``method="full"``; seeded (LoRA init, data order,
  random subsets); the GPU is used when present (``device="auto"``).
- The caller's model is never modified: a spec is loaded fresh, a ``LoadedModel`` is deep-copied.
- Outputs are safetensors only: a LoRA run writes a peft adapter folder (``adapter_config.json`` +
  ``adapter_model.safetensors``), a full run a model folder that ``forvalue.models.loading.load_model`` reads;
  both carry ``forvalue_finetune.json`` (base model, fingerprint, config, subset, MLflow run).
- With a :class:`forvalue.training.tracking.Tracker` each run is an MLflow run (see that module).

Subsets (:func:`select_subset`): ``top`` / ``bottom`` (k highest / lowest For-Value scores),
``random`` (k drawn with the seed) and ``full`` (every sample).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import opt
from ..data.samples import Sample
from ..errors import FinetuneError  # noqa: F401  (re-exported)
from .evaluate import EvalConfig, EvalResult, evaluate, evaluate_loss, with_model
from ..valuation.features import FeatureConfig, encode_all
from ..io import atomic_dir, atomic_write_text
from .tracking import (TAG_ASSET_KEY, TAG_DAGSTER_RUN, TAG_FINETUNE_RUN, TAG_PARTITION, Tracker, file_sha256,
                       subset_digest)
from .loop import Step, cycled_batches, token_mean_loss, train_loop

STRATEGIES = ("top", "random", "bottom", "full")
TRAINING_METHODS = ("lora", "full")
SCHEDULES = ("linear", "cosine", "constant")
META_FILE = "forvalue_finetune.json"
DEFAULT_LR = {"lora": 1e-3, "full": 5e-5}
LOG_EVERY = 5   # steps between the MLflow metric writes and the progress reports (also after the first and last)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. Defaults finish in a few minutes on a CPU with the bundled 135M model."""

    method: str = opt("lora", "lora (a peft adapter) or full (every weight)", choices=("lora", "full"), cli=False)
    steps: int = opt(30, "optimizer steps (the data is cycled, reshuffled every epoch)")
    batch_size: int = opt(8, "samples per step")
    lr: float | None = opt(None, "learning rate (default: 1e-3 for LoRA, 5e-5 for full fine-tuning)")
    schedule: str = opt("linear", "learning-rate decay after warm-up: linear, cosine or constant",
                        choices=SCHEDULES, cli=False)
    warmup_steps: int | None = opt(None, "warm-up steps (default: 10% of the steps)", cli=False)
    weight_decay: float = opt(0.0, "AdamW weight decay", cli=False)
    max_grad_norm: float = opt(1.0, "gradient clipping norm", cli=False)
    seed: int = opt(0, "LoRA init, data order and the random subset")
    lora_r: int = opt(8, "LoRA rank")
    lora_alpha: int = opt(16, "LoRA alpha")
    lora_dropout: float = opt(0.0, "LoRA dropout", cli=False)
    lora_targets: str = opt("all-linear", "all-linear or comma-separated module names (q_proj,v_proj)")
    lora_layers: int | None = opt(None, "LoRA in the last n decoder layers only (backward stops there: faster "
                                        "on a CPU); 0: every layer", none_as=0)
    positions: str = opt("response", "trained positions: response (SFT) or all", choices=("response", "all"),
                         cli=False)
    chat_template: bool = opt(True, "render prompts with the tokenizer's chat template (--plain: plain text)",
                              flag="--plain", negate=True)
    max_length: int | None = opt(None, "longest sample in tokens (default: the model context)")
    eval_every: int = opt(0, "valuation loss every n steps (0: only at the end)")
    gradient_checkpointing: bool = opt(True, "recompute each decoder layer's activations in the backward pass instead "
                                             "of keeping them all (--no-gradient-checkpointing: keep them; faster, "
                                             "several times the memory)", flag="--no-gradient-checkpointing",
                                       negate=True)

    def __post_init__(self):
        if self.method not in TRAINING_METHODS:
            raise FinetuneError(f"method must be one of {TRAINING_METHODS}, not {self.method!r}")
        if self.schedule not in SCHEDULES:
            raise FinetuneError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise FinetuneError("steps and batch_size must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise FinetuneError("lr must be > 0")
        if self.lora_r < 1:
            raise FinetuneError("lora_r must be >= 1")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise FinetuneError("lora_layers must be >= 1 (or None for every layer)")
        if self.positions not in ("response", "all"):
            raise FinetuneError("positions must be 'response' or 'all'")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else max(0, self.steps // 10)

    def targets(self):
        if self.lora_targets == "all-linear":
            return "all-linear"
        return [t.strip() for t in self.lora_targets.split(",") if t.strip()]

    def to_params(self) -> dict:
        p = asdict(self)
        p["lr"] = self.learning_rate
        p["warmup_steps"] = self.warmup
        if self.method != "lora":
            for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lora_layers"):
                p.pop(k)
        return p


# ----------------------------------------------------------------------------- subsets
def subset_size(n: int, *, k: int | None = None, p: float | None = None) -> int:
    """How many of ``n`` samples a fine-tuning subset holds: k samples (``top_k``) or p percent
    (``top_p``; bottom p% holds as many) by the selection's one size rule,
    :func:`forvalue.curation.selection.subset_count`. A size that keeps no sample is refused."""
    from ..curation.selection import subset_count

    if (k is None) == (p is None):
        raise FinetuneError("give exactly one of k (a count) and p (a percentage)")
    mode, value = ("top_k", k) if k is not None else ("top_p", p)
    try:
        size = subset_count(n, mode, value)
    except ValueError as e:
        raise FinetuneError(str(e)) from None
    if size == 0:
        what = f"k {value:g}" if k is not None else f"p {value:g}%"
        raise FinetuneError(f"{what} keeps no sample of the {n}; give a larger size")
    return size


def select_subset(n: int, strategy: str, *, values: np.ndarray | None = None, k: int | None = None,
                  p: float | None = None, seed: int = 0, order: np.ndarray | None = None) -> np.ndarray:
    """Indices of a training subset. top/bottom: the first / last k of ``order`` (the order of a
    selection strategy, :mod:`forvalue.curation.selection`), or of ``values`` sorted (stable, the
    raw-mean order) when no order is given; random draws k without replacement with ``seed``; full
    takes all n. k (or p percent) is :func:`subset_size`."""
    from ..curation.selection import rank_values

    if strategy not in STRATEGIES:
        raise FinetuneError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    if strategy == "full":
        return np.arange(n)
    size = subset_size(n, k=k, p=p)
    if strategy == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    if order is None:
        if values is None:
            raise FinetuneError(f"strategy {strategy!r} needs For-Value scores")
        if len(values) != n:
            raise FinetuneError(f"{len(values)} scores for {n} samples")
        order = rank_values(values, None, None, "raw-mean").order
    order = np.asarray(order, dtype=np.int64)
    if strategy == "top":
        if len(order) < size:
            raise FinetuneError(f"the order holds {len(order)} samples; top needs {size}")
        return order[:size]
    if len(order) != n:
        raise FinetuneError(f"bottom needs the order of all {n} samples, got {len(order)}")
    return order[::-1][:size]


@dataclass
class SubsetInfo:
    """Where the training samples came from (logged as params and as the MLflow dataset input)."""

    strategy: str = "full"
    k: int | None = None
    p: float | None = None
    subset_id: str | None = None     # the catalog's subset id, when the subset is a recorded one
    source: str = "<memory>"         # file the samples were read from (MLflow dataset source)
    name: str | None = None          # dataset name in MLflow
    n_total: int | None = None       # size of the set the subset was drawn from
    selection: str | None = None     # the selection strategy that ordered the samples (top / bottom)
    mode: str | None = None          # a recorded subset's size rule: top_k, top_p, bottom_p, drop_lowest_p
    value: float | None = None       # and its k or percentage
    lineage: dict = field(default_factory=dict)   # ids of what produced the subset (params and forvalue.* tags)
    report: str | None = None        # the subset's HTML curation report (forvalue.report), logged as an artifact


# ----------------------------------------------------------------------------- models
def load_base(model, *, device: str = "auto", dtype: str | Any = "auto", trust_remote_code: bool = False):
    """A private, trainable copy of the base model: a spec is loaded fresh, a LoadedModel deep-copied."""
    from ..models.loading import load_model

    if isinstance(model, (str, os.PathLike)):
        lm = load_model(str(model), device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        spec = str(model)
    else:
        lm = copy.copy(model)
        lm.model = copy.deepcopy(model.model)
        lm.extra = dict(getattr(model, "extra", {}) or {})
        spec = (getattr(model, "extra", None) or {}).get("spec") or getattr(model, "source", "") or model.fingerprint.name
    lm.extra["spec"] = spec
    return lm


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _linear_names(model) -> list[str]:
    """Names (last component) of the linear layers inside the decoder layers (no lm_head)."""
    import torch

    head = model.get_output_embeddings()
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and m is not head and ".layers." in f".{n}"}
    return sorted(names)


def _wrap_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = config.targets()
    layers = None
    if config.lora_layers is not None:
        cfg = getattr(model.config, "text_config", None) or model.config
        n_layers = int(cfg.num_hidden_layers)
        layers = list(range(max(0, n_layers - config.lora_layers), n_layers))
        if targets == "all-linear":
            targets = _linear_names(model)
            if not targets:
                raise FinetuneError("lora_layers: no linear layers found under '.layers.'; give lora_targets")
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lcfg)
    except ValueError as e:
        raise FinetuneError(f"LoRA targets {config.lora_targets!r}: {e}") from e


def _lr_lambda(config: TrainConfig):
    warm, total = config.warmup, config.steps

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / (warm + 1)
        if config.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, total - warm)
        if config.schedule == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return f


# ----------------------------------------------------------------------------- progress
@dataclass
class TrainProgress:
    """Where a fine-tune stands, reported every ``log_every`` steps (and after the first and the last)."""

    run: str                  # the run's name
    step: int
    steps: int
    loss: float               # training loss of this step
    lr: float
    tokens_per_s: float       # target tokens trained per second, this step
    elapsed_s: float          # since training started
    peak_rss_mb: float        # the process's peak resident memory so far

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / max(self.step, 1) * (self.steps - self.step)

    def line(self) -> str:
        return (f"{self.run}: step {self.step}/{self.steps} loss {self.loss:.4f} lr {self.lr:.2e} "
                f"{self.tokens_per_s:.0f} tokens/s, {self.elapsed_s:.0f}s elapsed, about {self.eta_s:.0f}s left, "
                f"peak memory {self.peak_rss_mb / 1024:.2f} GB")


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory so far (``peak_rss_mb``: ru_maxrss, every allocation the
    process made, in MB) and, when a GPU was used, torch's peak allocated GPU memory (``gpu_peak_mb``)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": rss / (2**20 if sys.platform == "darwin" else 1024)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ----------------------------------------------------------------------------- results
@dataclass
class FinetuneResult:
    output_dir: Path
    method: str
    mlflow_run_id: str | None
    mlflow_url: str | None
    metrics: dict[str, float]            # final metrics (train and, with a valuation set, eval)
    history: list[dict]                  # per step: step, train_loss, lr, grad_norm (+ val_loss)
    params: dict[str, Any]
    subset_digest: str
    sample_ids: list[str]
    seconds: float
    eval: EvalResult | None = None
    meta: dict = field(default_factory=dict)


def _sample_rows(samples: Sequence[Sample]) -> list[dict]:
    rows = []
    for s in samples:
        row = {"sample_id": s.sample_id, "id": s.user_id, "row": s.row}
        if s.kind == "text":
            row["text"] = s.text
        elif s.kind == "messages":
            row["messages"] = json.dumps(s.messages, ensure_ascii=False)
        else:
            row["prompt"], row["response"] = s.prompt, s.response
        rows.append(row)
    return rows


def _write_meta(folder: Path, meta: dict) -> None:
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str))


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise FinetuneError(f"{path}: not valid JSON ({e})") from None


def _check_out(out_dir: Path, overwrite: bool) -> None:
    """Refuse an occupied output folder before any work (the folder itself is written by
    :func:`forvalue.io.atomic_dir` once training is done)."""
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FinetuneError(f"{out_dir} exists and is not empty; choose another --out or pass overwrite")


# ----------------------------------------------------------------------------- fine-tune: prepare
@dataclass
class _Prepared:
    """Everything a fine-tuning run trains: the private model copy, its encoded samples, the module
    being trained (the peft model or the model itself) and its optimizer and schedule."""

    lm: Any
    net: Any
    encoded: list
    n_trainable: int
    n_params: int
    optimizer: Any
    scheduler: Any


def _prepare(model, train: Sequence[Sample], config: TrainConfig, device: str, dtype) -> _Prepared:
    """Seed, load a private copy of the model, encode the samples, wrap LoRA (or unfreeze every
    weight), build AdamW and the learning-rate schedule, in that order (the seed covers all of it)."""
    import torch

    dtype = dtype if dtype is not None else ("float32" if config.method == "full" else "auto")
    _seed_everything(config.seed)
    lm = load_base(model, device=device, dtype=dtype)
    fcfg = FeatureConfig(positions=config.positions, chat_template=config.chat_template, max_length=config.max_length)
    encoded, _ = encode_all(lm, train, fcfg)
    base_model = lm.model
    base_model.config.use_cache = False
    if config.gradient_checkpointing and getattr(base_model, "supports_gradient_checkpointing", False):
        # only the decoder layers' inputs are kept; the same gradients (nothing random in a layer)
        enable = getattr(base_model, "activation_checkpointing_enable", None)   # transformers >= 5.2x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "lora":
        with warnings.catch_warnings():   # peft asks the model the deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated")
            net = _wrap_lora(base_model, config)
    else:
        net = base_model
        net.requires_grad_(True)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    return _Prepared(lm=lm, net=net, encoded=encoded, n_trainable=sum(p.numel() for p in trainable),
                     n_params=sum(p.numel() for p in net.parameters()), optimizer=opt, scheduler=sched)


def _run_params(prep: _Prepared, train: Sequence[Sample], val, subset: SubsetInfo, config: TrainConfig,
                digest: str, evaluation: Mapping[str, Any] | None = None) -> dict:
    fp = prep.lm.fingerprint
    return {
        "model_fingerprint": fp.id, "model_name": fp.name, "model_weights_hash": fp.weights_hash,
        "model_dtype": fp.dtype, "base_model": prep.lm.extra["spec"],
        "subset_id": subset.subset_id or "none", "subset_digest": digest, "strategy": subset.strategy,
        "selection": subset.selection or "none", "subset_mode": subset.mode or "none", "subset_value": subset.value,
        **{k: v for k, v in subset.lineage.items() if v is not None},
        "k": subset.k if subset.k is not None else len(train), "subset_p": subset.p,
        "n_train": len(train), "n_total": subset.n_total, "n_val": len(val) if val else 0,
        "trainable_params": prep.n_trainable, "device": str(prep.lm.device),
        **config.to_params(), **(evaluation or {}),
    }


# ----------------------------------------------------------------------------- fine-tune: train
def _train(prep: _Prepared, config: TrainConfig, val, run, progress: bool, *, name: str = "fine-tune",
           on_progress: Callable[[TrainProgress], None] | None = None,
           log_every: int = LOG_EVERY) -> tuple[list[dict], dict]:
    """The training loop (:func:`forvalue.training.loop.train_loop`): token-weighted response NLL,
    gradients clipped at ``max_grad_norm``; per step a history record (train_loss, lr, grad_norm,
    tokens_per_s, elapsed_s, peak_rss_mb; logged to ``run``, written every ``log_every`` steps and
    after the first and the last, as ``on_progress`` is called) and, every ``eval_every`` steps, the
    valuation loss. Returns (history, train metrics)."""
    lm, net = prep.lm, prep.net
    history: list[dict] = []
    n_tokens = 0
    t_train = last = time.perf_counter()

    def on_step(st: Step) -> None:
        nonlocal n_tokens, last
        now = time.perf_counter()
        n_tokens += st.tokens
        rec = {"step": st.step, "train_loss": st.loss, "lr": st.lr, "grad_norm": st.grad_norm,
               "tokens_per_s": st.tokens / max(now - last, 1e-9), "elapsed_s": now - t_train, **peak_memory()}
        last = now
        if not math.isfinite(rec["train_loss"]):
            raise FinetuneError(f"training loss became {rec['train_loss']} at step {st.step}; lower the learning rate")
        if val and config.eval_every and st.step % config.eval_every == 0 and st.step < config.steps:
            rec["val_loss"] = evaluate_loss(with_model(lm, net), val, chat_template=config.chat_template,
                                            positions=config.positions, max_length=config.max_length).loss
            last = time.perf_counter()
        history.append(rec)
        report = st.step == 1 or st.step % max(1, log_every) == 0 or st.step == config.steps
        if run is not None:
            run.log_metrics({k: v for k, v in rec.items() if k != "step"}, step=st.step, buffer=not report)
        if report and on_progress is not None:
            on_progress(TrainProgress(run=name, step=st.step, steps=config.steps, loss=st.loss, lr=st.lr,
                                      tokens_per_s=rec["tokens_per_s"], elapsed_s=rec["elapsed_s"],
                                      peak_rss_mb=rec["peak_rss_mb"]))

    train_loop(net, prep.encoded, cycled_batches(len(prep.encoded), config.batch_size, config.steps, config.seed),
               token_mean_loss(net, config.positions, lm.tokenizer.pad_token_id, lm.device), prep.optimizer,
               prep.scheduler, max_grad_norm=config.max_grad_norm, on_step=on_step, steps=config.steps,
               progress=progress, desc="fine-tune")
    train_s = time.perf_counter() - t_train
    tail = history[-max(1, min(10, len(history) // 5 or 1)):]
    metrics = {"train_loss_final": float(np.mean([h["train_loss"] for h in tail])),
               "train_seconds": train_s, "train_tokens": float(n_tokens),
               "steps_per_second": config.steps / max(train_s, 1e-9),
               "train_peak_rss_mb": history[-1]["peak_rss_mb"] if history else peak_memory()["peak_rss_mb"]}
    return history, metrics


# ----------------------------------------------------------------------------- fine-tune: save
def _save_model(folder: Path, prep: _Prepared, config: TrainConfig, digest: str) -> str:
    """The adapter (LoRA) or the model folder (full: weights, tokenizer, forvalue_model.json), all
    safetensors; returns the sha256 of the weight files."""
    prep.net.save_pretrained(str(folder), safe_serialization=True)
    if config.method != "lora":
        fp = prep.lm.fingerprint
        prep.lm.tokenizer.save_pretrained(str(folder))
        atomic_write_text(folder / "forvalue_model.json", json.dumps(
            {"name": f"{fp.name}-ft-{digest[:8]}-s{config.seed}", "base": fp.id}))
    return file_sha256(sorted(folder.glob("*.safetensors")))


def _final_eval(prep: _Prepared, config: TrainConfig, val, eval_config: EvalConfig | None) -> EvalResult | None:
    """Evaluate what load_finetuned() gives: the adapter merged into the base weights (same numbers
    as a later eval run, and as fast as the base model). Call after saving (merging is in place)."""
    if not val:
        return None
    eval_net = prep.net.merge_and_unload() if config.method == "lora" else prep.net
    ecfg = eval_config or EvalConfig(accuracy=False, chat_template=config.chat_template, max_length=config.max_length)
    return evaluate(with_model(prep.lm, eval_net), val, ecfg)


def _metadata(prep: _Prepared, config: TrainConfig, subset: SubsetInfo, digest: str, n_train: int,
              metrics: dict, weights_sha: str, run, tracker: Tracker | None) -> dict:
    """The content of forvalue_finetune.json (``metrics`` is shared, not copied)."""
    lm = prep.lm
    return {
        "kind": "forvalue-finetune", "method": config.method, "base_model": lm.extra["spec"],
        "base_model_source": getattr(lm, "source", ""), "base_fingerprint": lm.fingerprint.to_dict(),
        "weights_sha256": weights_sha, "config": config.to_params(),
        "subset": asdict(subset) | {"digest": digest, "n": n_train}, "metrics": metrics,
        "mlflow_run_id": run.run_id if run is not None else None,
        "tracking_uri": tracker.tracking_uri if tracker is not None else None,
        "experiment_id": tracker.experiment_id() if tracker is not None else None,
        "n_trainable_params": prep.n_trainable, "n_params": prep.n_params,
    }


# ----------------------------------------------------------------------------- fine-tune: log
@contextmanager
def _finetune_run(tracker: Tracker | None, name: str, tags: dict, params: dict, train: Sequence[Sample], val,
                  subset: SubsetInfo, digest: str, eval_name: str = "valuation-set"):
    """The MLflow run of a fine-tune (None without a tracker) with its params and dataset inputs;
    it ends FAILED when the block raises."""
    if tracker is None:
        yield None
        return
    with tracker.start_run(name, kind="finetune", tags=tags) as run:
        run.log_params(params)
        run.log_dataset(_sample_rows(train), name=subset.name or f"subset-{subset.strategy}-{digest[:8]}",
                        digest=digest, source=subset.source, context="training",
                        extra_tags={"forvalue.strategy": subset.strategy})
        if val:
            run.log_dataset(_sample_rows(val), name=eval_name, digest=subset_digest(
                [s.sample_id for s in val]), source=val[0].source, context="evaluation")
        yield run


def _run_tags(subset: SubsetInfo, digest: str, prep: _Prepared, tags: Mapping[str, Any] | None,
             evaluation: Mapping[str, Any] | None = None) -> dict:
    out = {"forvalue.strategy": subset.strategy, "forvalue.subset_digest": digest,
           "forvalue.model_fingerprint": prep.lm.fingerprint.id,
           **{f"forvalue.{k}": v for k, v in (evaluation or {}).items() if k in ("eval_source", "eval_set")},
           **({"forvalue.selection": subset.selection} if subset.selection else {}),
           **({"forvalue.subset_mode": subset.mode} if subset.mode else {}),
           **{f"forvalue.{k}": v for k, v in subset.lineage.items() if v is not None},
           **{k: v for k, v in (tags or {}).items() if v is not None}}
    if subset.subset_id:
        out["forvalue.subset_id"] = subset.subset_id
    return out


def _log_outputs(run, folder: Path, out_dir: Path, config: TrainConfig, metrics: dict, weights_sha: str,
                 subset: SubsetInfo, digest: str, ids: list[str], ev: EvalResult | None) -> None:
    """Final metrics, the saved folder as artifacts, the exact sample ids and the predictions."""
    run.log_metrics(metrics, step=config.steps)
    run.set_tags({"forvalue.weights_sha256": weights_sha, "forvalue.output_dir": str(out_dir.resolve())})
    run.log_artifacts(folder, "adapter" if config.method == "lora" else "model")
    run.log_dict({"subset_digest": digest, "strategy": subset.strategy, "sample_ids": ids}, "subset/sample_ids.json")
    if subset.report and Path(subset.report).is_file():   # MLflow shows an HTML artifact as the page
        run.log_artifact(subset.report, "subset")
    if ev is not None and ev.accuracy is not None:
        run.log_dict(ev.accuracy.predictions, "eval/predictions.json")


# ----------------------------------------------------------------------------- fine-tune
def finetune(
    model,
    train: Sequence[Sample],
    *,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    val: Sequence[Sample] | None = None,
    eval_config: EvalConfig | None = None,
    tracker: Tracker | None = None,
    run_name: str | None = None,
    subset: SubsetInfo | None = None,
    tags: Mapping[str, Any] | None = None,
    device: str = "auto",
    dtype: str | Any | None = None,
    overwrite: bool = False,
    progress: bool = False,
    evaluation: Mapping[str, Any] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    log_every: int = LOG_EVERY,
) -> FinetuneResult:
    """Fine-tune ``model`` (a spec such as ``"default"``/a folder, or a LoadedModel, which is copied)
    on ``train``; evaluate on ``val`` at the end when given (``eval_config``: loss only by default,
    accuracy too with ``EvalConfig(accuracy=True)``); save to ``out_dir``; log to ``tracker``.

    Stages: :func:`_prepare` (seed, load, encode, LoRA, optimizer), :func:`_train` (the loop),
    then in a folder committed atomically: :func:`_save_model`, :func:`_final_eval`, the metadata
    file, :func:`_log_outputs` (MLflow; the run itself is opened by :func:`_finetune_run`).

    ``dtype`` None: the loader's default (fp32 on CPU, bf16 on GPU) for LoRA, float32 for full
    fine-tuning (AdamW on bf16 weights loses small updates).

    ``evaluation``: what ``val`` is (:meth:`forvalue.data.holdout.EvalSet.params`: its source, name,
    version, hold-out), logged as params and ``forvalue.eval_*`` tags.

    Progress: the step metrics reach MLflow every ``log_every`` steps (and after the first and the
    last), when ``on_progress`` gets a :class:`TrainProgress` (``.line()``: "step 10/30 loss ...").
    The metrics end with the process's peak memory (``peak_rss_mb``; ``train_peak_rss_mb`` when
    training ended; ``gpu_peak_mb`` on a GPU)."""
    t0 = time.perf_counter()
    train = list(train)
    if not train:
        raise FinetuneError("no training samples")
    subset = subset or SubsetInfo(strategy="full", n_total=len(train))
    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite)
    prep = _prepare(model, train, config, device, dtype)
    ids = [s.sample_id for s in train]
    digest = subset_digest(ids)
    params = _run_params(prep, train, val, subset, config, digest, evaluation)
    name = run_name or f"finetune-{subset.strategy}-{len(train)}-seed{config.seed}"
    eval_name = f"evaluation-{evaluation['eval_source']}" if evaluation else "valuation-set"
    with _finetune_run(tracker, name, _run_tags(subset, digest, prep, tags, evaluation), params, train, val, subset,
                       digest, eval_name) as run:
        history, metrics = _train(prep, config, val, run, progress, name=name, on_progress=on_progress,
                                  log_every=log_every)
        with atomic_dir(out_dir, replace=True) as tmp:
            weights_sha = _save_model(tmp, prep, config, digest)
            ev = _final_eval(prep, config, val, eval_config)
            if ev is not None:
                metrics |= ev.metrics
            metrics |= peak_memory()
            meta = _metadata(prep, config, subset, digest, len(train), metrics, weights_sha, run, tracker)
            _write_meta(tmp, meta)
            metrics["seconds"] = time.perf_counter() - t0
            if run is not None:
                _log_outputs(run, tmp, out_dir, config, metrics, weights_sha, subset, digest, ids, ev)
    return FinetuneResult(output_dir=out_dir, method=config.method, mlflow_run_id=meta["mlflow_run_id"],
                          mlflow_url=tracker.url(run.run_id) if run is not None else None, metrics=metrics,
                          history=history, params=params, subset_digest=digest, sample_ids=ids,
                          seconds=time.perf_counter() - t0, eval=ev, meta=meta)


# ----------------------------------------------------------------------------- loading
def load_finetuned(path: str | Path, *, base=None, device: str = "auto", dtype: str | Any = "auto",
                   trust_remote_code: bool = False):
    """A LoadedModel from a fine-tune output: a LoRA adapter folder (merged into a fresh copy of its
    base model: ``base``, else the base recorded in forvalue_finetune.json) or a full model folder."""
    from ..models.loading import ModelError, ModelFingerprint, load_model

    folder = Path(path)
    if not folder.is_dir():
        raise FinetuneError(f"{folder}: not a folder (expected a LoRA adapter or a model folder)")
    meta = read_meta(folder)
    if (folder / "adapter_config.json").exists():
        if not (folder / "adapter_model.safetensors").exists():
            raise FinetuneError(f"{folder}: no adapter_model.safetensors (pickled adapter weights are not loaded)")
        if base is None:
            base = meta.get("base_model")
            if not base or (base != "default" and not Path(base).exists()):
                base = meta.get("base_model_source") or json.loads(
                    (folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base:
                raise FinetuneError(f"{folder}: the base model is not recorded; pass it explicitly")
        try:
            lm = load_base(base, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        except ModelError as e:
            raise FinetuneError(f"{folder}: cannot load its base model {base!r}: {e}") from e
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(lm.model, str(folder), is_trainable=False)
        lm.model = peft_model.merge_and_unload()
        lm.model.eval()
        adapter_sha = file_sha256([folder / "adapter_model.safetensors"])
        h = hashlib.sha256((lm.fingerprint.weights_hash + adapter_sha).encode()).hexdigest()
        lm.fingerprint = ModelFingerprint(name=f"{lm.fingerprint.name}+lora-{adapter_sha[:8]}", weights_hash=h,
                                          dtype=lm.fingerprint.dtype, kind=lm.fingerprint.kind)
        lm.extra["adapter"] = str(folder)
        return lm
    if (folder / "config.json").exists():
        return load_model(str(folder), device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    raise FinetuneError(f"{folder}: neither a LoRA adapter (adapter_config.json) nor a model folder (config.json)")


# ----------------------------------------------------------------------------- eval runs
@dataclass
class EvalRunResult:
    result: EvalResult
    mlflow_run_id: str | None
    mlflow_url: str | None
    finetune_run_id: str | None
    model_fingerprint: str


def run_evaluation(
    model,
    samples: Sequence[Sample],
    *,
    config: EvalConfig = EvalConfig(),
    adapter: str | Path | None = None,
    tracker: Tracker | None = None,
    finetune_run_id: str | None = None,
    run_name: str | None = None,
    dataset_name: str = "valuation-set",
    tags: Mapping[str, Any] | None = None,
    device: str = "auto",
    dtype: str | Any = "auto",
    evaluation: Mapping[str, Any] | None = None,
) -> EvalRunResult:
    """Evaluate ``model`` (spec or LoadedModel; with ``adapter``, a fine-tune output folder on top
    of it, or alone when ``model`` is None) and log an MLflow eval run, a child of the fine-tune
    run (``finetune_run_id``, default: the one recorded in the adapter's forvalue_finetune.json).
    ``evaluation``: what ``samples`` are (:meth:`forvalue.data.holdout.EvalSet.params`), logged as params."""
    from ..models.loading import load_model

    samples = list(samples)
    if not samples:
        raise FinetuneError("no evaluation samples")
    meta = {}
    if adapter is not None:
        meta = read_meta(adapter)
        lm = load_finetuned(adapter, base=model, device=device, dtype=dtype)
    elif isinstance(model, (str, os.PathLike)):
        lm = load_model(str(model), device=device, dtype=dtype)
    else:
        lm = model
    finetune_run_id = finetune_run_id or meta.get("mlflow_run_id")
    result = evaluate(lm, samples, config)
    run_id = url = None
    if tracker is not None:
        if finetune_run_id and meta.get("tracking_uri") and meta["tracking_uri"] != tracker.tracking_uri:
            finetune_run_id_tag = finetune_run_id  # recorded in another store: keep as a tag, no parent link
            parent = None
        else:
            finetune_run_id_tag, parent = finetune_run_id, finetune_run_id
        all_tags = {TAG_FINETUNE_RUN: finetune_run_id_tag, "forvalue.model_fingerprint": lm.fingerprint.id,
                    **{k: v for k, v in (tags or {}).items() if v is not None}}
        name = run_name or f"eval-{dataset_name}"
        with tracker.start_run(name, kind="eval", tags=all_tags, parent_run_id=parent) as run:
            run.log_params({"model_fingerprint": lm.fingerprint.id, "adapter": str(adapter) if adapter else None,
                            "finetune_run_id": finetune_run_id, "n_eval": len(samples),
                            "extractor": config.extractor, "answer_field": config.answer_field,
                            "max_new_tokens": config.max_new_tokens, "accuracy_limit": config.accuracy_limit,
                            "chat_template": config.chat_template, "strategy": meta.get("subset", {}).get("strategy"),
                            "subset_digest": meta.get("subset", {}).get("digest"),
                            "seed": meta.get("config", {}).get("seed"), **(evaluation or {})})
            run.log_dataset(_sample_rows(samples), name=dataset_name,
                            digest=subset_digest([s.sample_id for s in samples]), source=samples[0].source,
                            context="evaluation")
            run.log_metrics(result.metrics)
            if result.accuracy is not None:
                run.log_dict(result.accuracy.predictions, "eval/predictions.json")
            run_id = run.run_id
        url = tracker.url(run_id)
    return EvalRunResult(result=result, mlflow_run_id=run_id, mlflow_url=url, finetune_run_id=finetune_run_id,
                         model_fingerprint=lm.fingerprint.id)


# ----------------------------------------------------------------------------- comparisons
@dataclass
class ComparisonResult:
    rows: list[dict]          # one per (strategy, seed), plus a "base" row (no fine-tuning) when asked
    summary: list[dict]       # one per strategy: mean and std over seeds
    markdown: str
    k: int
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summarize(rows: Sequence[dict], order: Sequence[str] = ("base",) + STRATEGIES) -> list[dict]:
    out = []
    names = sorted({r["strategy"] for r in rows}, key=lambda s: (list(order).index(s) if s in order else 99, s))
    for name in names:
        rs = [r for r in rows if r["strategy"] == name]
        vl, vl_sd = _mean_std([r.get("val_loss") for r in rs])
        pp, pp_sd = _mean_std([r.get("perplexity") for r in rs])
        acc, acc_sd = _mean_std([r.get("accuracy") for r in rs])
        out.append({"strategy": name, "k": rs[0]["k"], "runs": len(rs), "val_loss_mean": vl, "val_loss_std": vl_sd,
                    "perplexity_mean": pp, "perplexity_std": pp_sd, "accuracy_mean": acc, "accuracy_std": acc_sd,
                    "seeds": [r["seed"] for r in rs]})
    return out


def _fmt(mean: float | None, std: float | None, digits: int = 4, pct: bool = False) -> str:
    if mean is None:
        return "-"
    if pct:
        return f"{100 * mean:.1f}% ± {100 * (std or 0):.1f}"
    return f"{mean:.{digits}f} ± {std or 0:.{digits}f}"


def markdown_table(summary: Sequence[dict]) -> str:
    lines = ["| strategy | k | runs | eval loss (mean ± std) | perplexity (mean ± std) | accuracy (mean ± std) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['strategy']} | {r['k']} | {r['runs']} | {_fmt(r['val_loss_mean'], r['val_loss_std'])} | "
                     f"{_fmt(r['perplexity_mean'], r['perplexity_std'], 3)} | "
                     f"{_fmt(r['accuracy_mean'], r['accuracy_std'], pct=True)} |")
    return "\n".join(lines)


@contextmanager
def _comparison_run(tracker: Tracker | None, size: int, tags: Mapping[str, Any] | None, params: dict):
    """The parent MLflow run of a comparison (None without a tracker), its params logged."""
    if tracker is None:
        yield None
        return
    with tracker.start_run(f"comparison-k{size}", kind="comparison", tags=tags) as parent:
        parent.log_params(params)
        yield parent


def _base_row(lm, val: Sequence[Sample], eval_config: EvalConfig) -> dict:
    """The "base" row: the model evaluated without fine-tuning."""
    ev = evaluate(lm, val, eval_config)
    return {"strategy": "base", "k": 0, "seed": -1, "steps": 0, "val_loss": ev.metrics["val_loss"],
            "perplexity": ev.metrics["val_perplexity"], "accuracy": ev.metrics.get("accuracy"),
            "n_eval": int(ev.metrics.get("n_eval", 0)) or None, "mlflow_run_id": None,
            "eval_seconds": ev.seconds}


def _strategy_run(lm, train: list[Sample], strategy: str, seed: int, size: int, *, values, order, selection, p,
                  source: str, config: TrainConfig, out_root: Path, tags: Mapping[str, Any] | None, parent,
                  **finetune_kwargs) -> tuple[dict, FinetuneResult]:
    """Fine-tune on one strategy's subset for one seed: (the comparison row, the fine-tune result)."""
    from .tracking import TAG_PARENT

    n = len(train)
    idx = select_subset(n, strategy, values=values, k=size if strategy != "full" else None, seed=seed, order=order)
    cfg = TrainConfig(**{**asdict(config), "seed": int(seed)})
    info = SubsetInfo(strategy=strategy, k=len(idx), p=p if strategy in ("top", "bottom", "random") else None,
                      source=source, n_total=n, name=f"{strategy}-{len(idx)}",
                      selection=selection if strategy in ("top", "bottom") else None)
    run_tags = dict(tags or {})
    if parent is not None:
        run_tags[TAG_PARENT] = parent.run_id
    res = finetune(lm, [train[i] for i in idx], out_dir=out_root / f"{strategy}-seed{seed}", config=cfg,
                   subset=info, tags=run_tags, run_name=f"{strategy}-{len(idx)}-seed{seed}", overwrite=True,
                   **finetune_kwargs)
    m = res.metrics
    row = {"strategy": strategy, "k": len(idx), "seed": int(seed), "steps": cfg.steps,
           "val_loss": m.get("val_loss"), "perplexity": m.get("val_perplexity"), "accuracy": m.get("accuracy"),
           "n_eval": int(m["n_eval"]) if "n_eval" in m else None,
           "mlflow_run_id": res.mlflow_run_id, "subset_digest": res.subset_digest,
           "output_dir": str(res.output_dir), "train_loss_final": m.get("train_loss_final"),
           "train_seconds": m.get("train_seconds"), "eval_seconds": m.get("eval_seconds")}
    return row, res


def _log_comparison(parent, rows: list[dict], summary: list[dict], md: str) -> None:
    for r in summary:
        parent.log_metrics({f"{r['strategy']}_val_loss_mean": r["val_loss_mean"],
                            f"{r['strategy']}_accuracy_mean": r["accuracy_mean"]})
    parent.log_dict({"rows": rows, "summary": summary}, "comparison/comparison.json")
    parent.client.log_text(parent.run_id, md, "comparison/comparison.md")


def compare_strategies(
    model,
    train: Sequence[Sample],
    val: Sequence[Sample],
    *,
    values: np.ndarray | None,
    out_root: str | Path,
    order: np.ndarray | None = None,
    selection: str | None = None,
    k: int | None = None,
    p: float | None = None,
    strategies: Sequence[str] = STRATEGIES,
    seeds: Sequence[int] = (0,),
    config: TrainConfig = TrainConfig(),
    eval_config: EvalConfig = EvalConfig(),
    include_base: bool = True,
    tracker: Tracker | None = None,
    tags: Mapping[str, Any] | None = None,
    source: str = "<memory>",
    device: str = "auto",
    dtype: str | Any | None = None,
    on_run=None,
    progress: bool = False,
    evaluation: Mapping[str, Any] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> ComparisonResult:
    """Fine-tune the same budget (steps, batch size, hyper-parameters) on each strategy's subset of
    ``train`` (top / random / bottom k of ``order``, the order of the selection strategy
    ``selection``, or by ``values`` when no order is given; or the full set) for every seed, and
    evaluate each on ``val`` (``evaluation``: what it is, :meth:`forvalue.data.holdout.EvalSet.params`,
    logged on every run). ``on_run(row, FinetuneResult)`` is called after each run (recording, logging),
    ``on_progress`` as each fine-tune goes (:func:`finetune`).
    With a tracker, a parent MLflow run holds the summary and every fine-tune run is its child."""
    train, val = list(train), list(val)
    for st in strategies:
        if st not in STRATEGIES:
            raise FinetuneError(f"strategy must be one of {STRATEGIES}, not {st!r}")
    n = len(train)
    size = subset_size(n, k=k, p=p)
    dtype = dtype if dtype is not None else ("float32" if config.method == "full" else "auto")
    lm = load_base(model, device=device, dtype=dtype)
    params = {"k": size, "p": p, "n_total": n, "strategies": ",".join(strategies),
              "seeds": ",".join(map(str, seeds)), "model_fingerprint": lm.fingerprint.id, **config.to_params(),
              **(evaluation or {})}
    rows: list[dict] = []
    with _comparison_run(tracker, size, tags, params) as parent:
        if include_base:
            rows.append(_base_row(lm, val, eval_config))
            if on_run is not None:
                on_run(rows[-1], None)
        for seed in seeds:
            for st in strategies:
                row, res = _strategy_run(
                    lm, train, st, seed, size, values=values, order=order, selection=selection, p=p, source=source,
                    config=config, out_root=Path(out_root), tags=tags, parent=parent, val=val,
                    eval_config=eval_config, tracker=tracker, device=device, dtype=dtype, progress=progress,
                    evaluation=evaluation, on_progress=on_progress)
                rows.append(row)
                if on_run is not None:
                    on_run(row, res)
        summary = summarize(rows)
        md = markdown_table(summary)
        if parent is not None:
            _log_comparison(parent, rows, summary, md)
    return ComparisonResult(rows=rows, summary=summary, markdown=md, k=size,
                            mlflow_run_id=parent.run_id if parent is not None else None,
                            mlflow_url=parent.url if parent is not None else None)


__all__ = ["TrainConfig", "EvalConfig", "SubsetInfo", "FinetuneResult", "TrainProgress", "peak_memory",
           "LOG_EVERY", "EvalRunResult", "FinetuneError",
           "ComparisonResult", "STRATEGIES", "finetune", "run_evaluation", "load_finetuned", "select_subset",
           "subset_size", "compare_strategies", "summarize", "markdown_table",
           "TAG_ASSET_KEY", "TAG_DAGSTER_RUN", "TAG_PARTITION"]
