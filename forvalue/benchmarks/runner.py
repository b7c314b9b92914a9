"""Benchmark runners: influential data (DataInf tasks), mislabeled data and noisy data detection.

Every runner values the training samples against the valuation samples with each requested method
and returns a list of result dicts (one per method), ready for :func:`markdown_table` and JSON:

- influence: ``method, auc_mean, auc_std, recall_mean, recall_std, seconds`` (DataInf protocol,
  pseudo-label = same class; :func:`forvalue.metrics.auc_recall`);
- mislabeled: the same, pseudo-label = same label *and* clean, plus ``clean_auc`` (ROC AUC of the
  valuation-set value against ``is_clean``) and ``detection_rate`` (share of clean samples among the
  top 10% by value);
- noise: ``detection_rate`` and ``clean_auc`` against a clean valuation set, plus AUC/recall with
  pseudo-label = same class and clean.

Methods: For-Value ``sparse``, ``exact``, ``full-vocab``, ``emb`` (:func:`forvalue.valuation.scoring.score`) and the
gradient baselines ``hessian-free``, ``datainf``, ``hyperinf`` (:mod:`forvalue.baselines`).

``seconds`` is end-to-end wall time of one method after the model is loaded (loading is the same for
all methods and excluded): for For-Value, encoding + forward pass + scoring; for a gradient baseline,
encoding + LoRA fine-tuning on the training set + per-sample gradients + its own influence step.
With ``share_forward=True`` (default) ``sparse`` and ``emb`` use one forward pass (the sparse
extraction, which also sums the hidden states); each is charged the whole pass, so ``emb``'s time is
an upper bound (it includes lm_head and top-k work that emb alone does not need).

Samples: for the built-in tasks, ``positions="all"`` scores the record's ``text`` as plain text (the
DataInf recipe: every next-token position of the whole text); ``positions="response"`` builds
prompt/response samples (plain concatenation, no chat template unless asked) and scores only the
response tokens. All methods (gradient baselines included) use the same encoding and positions.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..baselines.influence import GRADIENT_METHODS
from ..data.samples import Columns, Sample, samples_from_records
from ..valuation.features import FeatureConfig
from ..metrics import auc_recall, auc_recall_from_pseudo, detection_rate, roc_auc
from ..valuation.scoring import SCORING_METHODS as FORVALUE_METHODS

ALL_METHODS = FORVALUE_METHODS + GRADIENT_METHODS
DEFAULT_METHODS = ("sparse", "exact", "emb", "hessian-free", "datainf")


# ----------------------------------------------------------------------------- helpers
def parse_methods(methods: str | Sequence[str] | None) -> list[str]:
    if methods is None:
        return list(DEFAULT_METHODS)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = [m.lower().replace("_", "-") for m in methods]
    aliases = {"hessianfree": "hessian-free", "tracin": "hessian-free", "hf": "hessian-free", "full": "full-vocab"}
    methods = [aliases.get(m, m) for m in methods]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(ALL_METHODS)}")
    if not methods:
        raise ValueError("no methods given")
    return list(dict.fromkeys(methods))


def resolve_model(model: Any = "default", device: str = "auto", dtype: str = "auto"):
    """A LoadedModel from a spec (``default``, a folder, ...); LoadedModel objects pass through."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model
    from ..models.loading import load_model

    return load_model(str(model), device=device, dtype=dtype)


def machine_info() -> dict:
    import os

    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass
class BenchData:
    """Samples and labels of one benchmark."""

    name: str
    train: list[Sample]
    val: list[Sample]
    train_records: list[dict]
    val_records: list[dict]
    config: FeatureConfig


def _columns(text_column: str | None, prompt_column: str, response_column: str) -> Columns:
    if text_column:
        return Columns(text=text_column)
    return Columns(prompt=prompt_column, response=response_column)


def build_data(name: str, train_records: list[dict], val_records: list[dict], *, positions: str = "all",
               text_column: str | None = None, prompt_column: str = "prompt",
               response_column: str = "response", chat_template: bool | None = None,
               k: int = 8, r: int | None = 64, seed: int = 0) -> BenchData:
    """Samples from records. ``text_column=None`` -> prompt/response samples."""
    cols = _columns(text_column, prompt_column, response_column)
    train = samples_from_records(train_records, source=f"{name}:train", columns=cols).samples
    val = samples_from_records(val_records, source=f"{name}:val", columns=cols).samples
    if len(train) != len(train_records) or len(val) != len(val_records):
        raise ValueError("some records could not be turned into samples")
    cfg = FeatureConfig(positions=positions, k=k, r=r, seed=seed,
                        chat_template=bool(chat_template) if chat_template is not None else True)
    return BenchData(name=name, train=train, val=val, train_records=train_records, val_records=val_records,
                     config=cfg)


def task_data(task: str, *, positions: str = "all", seed: int = 0, n_train_per_class: int = 90,
              n_val_per_class: int = 10, chat_template: bool = False, **kw) -> BenchData:
    """A built-in task: ``text`` as plain text for positions all, prompt/response for response."""
    from .tasks import make_task

    tr, va = make_task(task, seed, n_train_per_class=n_train_per_class, n_val_per_class=n_val_per_class)
    text = "text" if positions == "all" and not chat_template else None
    return build_data(task, tr, va, positions=positions, text_column=text, chat_template=chat_template, **kw)


def labels_of(records: Sequence[dict], column: str, name: str = "records") -> list:
    out = []
    for i, rec in enumerate(records):
        if column not in rec or rec[column] is None:
            raise ValueError(f"{name} row {i + 1}: no label in column {column!r}")
        v = rec[column]
        out.append(v if isinstance(v, (int, str, bool, float)) else str(v))
    return out


def encode_labels(train_labels: Sequence, val_labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Map labels (any hashable values) to shared integer ids."""
    keys = {}
    for v in list(train_labels) + list(val_labels):
        keys.setdefault(str(v), len(keys))
    return (np.array([keys[str(v)] for v in train_labels], dtype=np.int64),
            np.array([keys[str(v)] for v in val_labels], dtype=np.int64))


def as_bool(values: Sequence, name: str) -> np.ndarray:
    out = []
    for v in values:
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("1", "true", "yes", "clean"):
                out.append(True)
            elif s in ("0", "false", "no", "noisy", "dirty"):
                out.append(False)
            else:
                raise ValueError(f"{name}: cannot read {v!r} as a boolean")
        else:
            out.append(bool(v))
    return np.array(out, dtype=bool)


# ----------------------------------------------------------------------------- valuation
def value_matrices(lm, data: BenchData, methods: Sequence[str], *, batch_size: int = 8, lora=None,
                   share_forward: bool = True, progress: bool = False,
                   method_kwargs: dict | None = None, log=None, warmup: bool = True) -> dict[str, dict]:
    """{method: {"matrix": [n_val, n_train], "seconds": float, "info": dict}} for every method.
    For-Value goes through :class:`forvalue.Valuator` (features, then scores)."""
    from ..valuation.scoring import emb_scores, sparse_scores
    from ..valuator import Valuator

    methods = parse_methods(methods)
    valuator = Valuator(lm, data.config, batch_size=batch_size)
    out: dict[str, dict] = {}
    say = log or (lambda msg: None)
    cfg = data.config
    if warmup:   # one small forward pass first, so lazy initialisation is charged to no method
        from ..valuation.features import encode_all, hidden_states

        enc, _ = encode_all(lm, data.val[:2], cfg)
        hidden_states(lm, enc)
    fv = [m for m in methods if m in FORVALUE_METHODS]
    gm = [m for m in methods if m in GRADIENT_METHODS]
    if share_forward and "sparse" in fv and "emb" in fv:
        say(f"[{data.name}] sparse + emb features ({len(data.train)} train, {len(data.val)} val)")
        t0, c0 = time.perf_counter(), time.process_time()
        tf = valuator.featurize(data.train, progress=progress).features
        vf = valuator.featurize(data.val, progress=progress).features
        t_feat, c_feat = time.perf_counter() - t0, time.process_time() - c0
        for m, fn in (("sparse", sparse_scores), ("emb", emb_scores)):
            t1, c1 = time.perf_counter(), time.process_time()
            mat = fn(tf, vf, pairwise=True)
            out[m] = {"matrix": mat, "seconds": t_feat + time.perf_counter() - t1,
                      "cpu_seconds": c_feat + time.process_time() - c1,
                      "info": {"shared_forward": True, "feature_seconds": t_feat,
                               "rows_per_sample": tf.n_rows / max(1, len(tf))}}
        fv = [m for m in fv if m not in ("sparse", "emb")]
    for m in fv:
        say(f"[{data.name}] {m}")
        c0 = time.process_time()
        res = valuator.score(data.train, data.val, method=m, pairwise=True, progress=progress)
        out[m] = {"matrix": res.matrix, "seconds": res.seconds, "cpu_seconds": time.process_time() - c0,
                  "info": dict(res.info)}
    if gm:
        from ..baselines import LoraSettings, score_gradient_methods

        say(f"[{data.name}] LoRA fine-tuning + gradients for {', '.join(gm)}")
        scores = score_gradient_methods(lm, data.train, data.val, methods=gm, config=cfg,
                                        lora=lora or LoraSettings(), pairwise=True, batch_size=batch_size,
                                        progress=progress, method_kwargs=method_kwargs)
        for m, s in scores.items():
            out[m] = {"matrix": s.matrix, "seconds": s.seconds, "cpu_seconds": s.cpu_seconds, "info": s.info}
    return {m: out[m] for m in methods}


def _row(method: str, metrics: dict, res: dict, **extra) -> dict:
    row = {"method": method}
    for key in ("auc_mean", "auc_std", "recall_mean", "recall_std"):
        if key in metrics:
            row[key] = float(metrics[key])
    row.update({k: float(v) for k, v in extra.items()})
    row["seconds"] = float(res["seconds"])
    if res.get("cpu_seconds") is not None:
        row["cpu_seconds"] = float(res["cpu_seconds"])
    info = res.get("info") or {}
    for key in ("finetune_seconds", "gradient_seconds", "own_seconds"):   # gradient baselines: breakdown
        if info.get(key) is not None:
            row[key] = float(info[key])
    return row


def _check_finite(method: str, mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float64)
    if not np.isfinite(mat).all():
        raise FloatingPointError(f"method {method} produced non-finite values")
    return mat


# ----------------------------------------------------------------------------- runners
def run_influence(task: str | None = None, *, train_records: list[dict] | None = None,
                  val_records: list[dict] | None = None, label_column: str = "class_id",
                  text_column: str | None = None, prompt_column: str = "prompt",
                  response_column: str = "response", methods: str | Sequence[str] | None = None,
                  model: Any = "default", positions: str = "all", seed: int = 0,
                  n_train_per_class: int = 90, n_val_per_class: int = 10, batch_size: int = 8,
                  lora=None, chat_template: bool | None = None, k: int = 8, r: int | None = 64,
                  device: str = "auto", dtype: str = "auto", share_forward: bool = True,
                  progress: bool = False, log=None, details: dict | None = None) -> list[dict]:
    """Influential data identification (For-Value Table 1 / DataInf): AUC and recall per method.

    Either ``task`` (``sentence``, ``math``, ``math-reason``) or ``train_records``/``val_records``
    with a ``label_column`` (any user dataset with a class column). ``details``, when given, is
    filled with the score matrices and per-method info."""
    if (task is None) == (train_records is None):
        raise ValueError("give either task or train_records/val_records")
    lm = resolve_model(model, device, dtype)
    if task is not None:
        data = task_data(task, positions=positions, seed=seed, n_train_per_class=n_train_per_class,
                         n_val_per_class=n_val_per_class, chat_template=bool(chat_template), k=k, r=r)
        label_column = "class_id"
    else:
        if val_records is None:
            raise ValueError("val_records is required with train_records")
        data = build_data("custom", train_records, val_records, positions=positions, text_column=text_column,
                          prompt_column=prompt_column, response_column=response_column,
                          chat_template=chat_template, k=k, r=r, seed=0)
    ytr, yva = encode_labels(labels_of(data.train_records, label_column, "train"),
                             labels_of(data.val_records, label_column, "val"))
    mats = value_matrices(lm, data, parse_methods(methods), batch_size=batch_size, lora=lora,
                          share_forward=share_forward, progress=progress, log=log)
    rows = []
    for m, res in mats.items():
        mat = _check_finite(m, res["matrix"])
        rows.append(_row(m, auc_recall(mat, ytr, yva), res))
    if details is not None:
        details.update({"data": data, "matrices": {m: r["matrix"] for m, r in mats.items()},
                        "info": {m: r["info"] for m, r in mats.items()}, "train_labels": ytr, "val_labels": yva})
    return rows


def _detection_rows(mats: dict, pseudo: np.ndarray, is_clean: np.ndarray, top_frac: float) -> list[dict]:
    rows = []
    for m, res in mats.items():
        mat = _check_finite(m, res["matrix"])
        values = mat.mean(0)
        metrics = auc_recall_from_pseudo(mat, pseudo)
        rows.append(_row(m, metrics, res, detection_rate=detection_rate(values, is_clean, top_frac),
                         clean_auc=roc_auc(values, is_clean)))
    return rows


def _detection_data(name: str, generate, train_records, val_records, *, positions: str, text_column,
                    prompt_column: str, response_column: str, chat_template, k: int, r):
    """(train records, val records, BenchData) of a detection benchmark: the generated task when no
    records are given (plain text, every position, unless asked otherwise), else the user's records."""
    if train_records is None:
        train_records, val_records = generate()
        if text_column is None and positions == "all" and not chat_template:
            text_column = "text"
        chat_template = bool(chat_template)
    else:
        name = f"custom-{name}"
        if val_records is None:
            raise ValueError("val_records is required with train_records")
    data = build_data(name, train_records, val_records, positions=positions, text_column=text_column,
                      prompt_column=prompt_column, response_column=response_column,
                      chat_template=chat_template, k=k, r=r)
    return train_records, val_records, data


def run_mislabeled(*, train_records: list[dict] | None = None, val_records: list[dict] | None = None,
                   label_column: str = "label", clean_column: str = "is_clean", text_column: str | None = None,
                   prompt_column: str = "prompt", response_column: str = "response",
                   methods: str | Sequence[str] | None = None, model: Any = "default", positions: str = "all",
                   seed: int = 0, n_train: int = 200, n_val: int = 50, flip_rate: float = 0.5,
                   batch_size: int = 8, lora=None, chat_template: bool | None = None, k: int = 8,
                   r: int | None = 64, device: str = "auto", dtype: str = "auto", top_frac: float = 0.1,
                   share_forward: bool = True, progress: bool = False, log=None,
                   details: dict | None = None) -> list[dict]:
    """Mislabeled data detection (text analogue of the paper's cat/dog task).

    Pairwise AUC/recall with pseudo-label 1 when the training sample has the valuation sample's
    label and is clean; ``clean_auc`` / ``detection_rate`` rank training samples by their mean value
    over the valuation set against ``is_clean``."""
    from .tasks import make_mislabeled

    lm = resolve_model(model, device, dtype)
    train_records, val_records, data = _detection_data(
        "mislabeled", lambda: make_mislabeled(seed, n_train=n_train, n_val=n_val, flip_rate=flip_rate),
        train_records, val_records, positions=positions, text_column=text_column, prompt_column=prompt_column,
        response_column=response_column, chat_template=chat_template, k=k, r=r)
    ytr, yva = encode_labels(labels_of(train_records, label_column, "train"),
                             labels_of(val_records, label_column, "val"))
    clean = as_bool(labels_of(train_records, clean_column, "train"), clean_column)
    pseudo = (yva[:, None] == ytr[None, :]) & clean[None, :]
    mats = value_matrices(lm, data, parse_methods(methods), batch_size=batch_size, lora=lora,
                          share_forward=share_forward, progress=progress, log=log)
    rows = _detection_rows(mats, pseudo, clean, top_frac)
    if details is not None:
        details.update({"data": data, "matrices": {m: r["matrix"] for m, r in mats.items()},
                        "info": {m: r["info"] for m, r in mats.items()}, "is_clean": clean})
    return rows


def run_noise(*, train_records: list[dict] | None = None, val_records: list[dict] | None = None,
              clean_column: str = "is_clean", label_column: str | None = "class_id",
              text_column: str | None = None, prompt_column: str = "prompt", response_column: str = "response",
              methods: str | Sequence[str] | None = None, model: Any = "default", positions: str = "all",
              seed: int = 0, n_train: int = 500, n_val: int = 50, rate: float = 0.4, batch_size: int = 8,
              lora=None, chat_template: bool | None = None, k: int = 8, r: int | None = 64,
              device: str = "auto", dtype: str = "auto", top_frac: float = 0.1, share_forward: bool = True,
              progress: bool = False, log=None, details: dict | None = None) -> list[dict]:
    """Noisy data detection (analogue of the paper's Noise-Huatuo-Complex-CoT, Table 7).

    ``detection_rate``: share of clean samples among the top ``top_frac`` training samples by value
    against a clean valuation set; ``clean_auc``: ROC AUC of that value against ``is_clean``. When a
    ``label_column`` exists, AUC/recall use pseudo-label = same class and clean (else: clean)."""
    from .noise import make_noise_corpus

    lm = resolve_model(model, device, dtype)
    train_records, val_records, data = _detection_data(
        "noise", lambda: make_noise_corpus(seed, n_train=n_train, n_val=n_val, rate=rate),
        train_records, val_records, positions=positions, text_column=text_column, prompt_column=prompt_column,
        response_column=response_column, chat_template=chat_template, k=k, r=r)
    clean = as_bool(labels_of(train_records, clean_column, "train"), clean_column)
    if label_column and all(label_column in rec for rec in list(train_records) + list(val_records)):
        ytr, yva = encode_labels(labels_of(train_records, label_column, "train"),
                                 labels_of(val_records, label_column, "val"))
        pseudo = (yva[:, None] == ytr[None, :]) & clean[None, :]
    else:
        pseudo = np.repeat(clean[None, :], len(val_records), axis=0)
    mats = value_matrices(lm, data, parse_methods(methods), batch_size=batch_size, lora=lora,
                          share_forward=share_forward, progress=progress, log=log)
    rows = _detection_rows(mats, pseudo, clean, top_frac)
    if details is not None:
        details.update({"data": data, "matrices": {m: r["matrix"] for m, r in mats.items()},
                        "info": {m: r["info"] for m, r in mats.items()}, "is_clean": clean})
    return rows


# ----------------------------------------------------------------------------- output
_COLUMNS = (
    ("auc_mean", "auc_std", "AUC"),
    ("recall_mean", "recall_std", "Recall"),
    ("detection_rate", None, "Clean in top 10%"),
    ("clean_auc", None, "Clean AUC"),
)


def markdown_table(results: Sequence[dict], *, digits: int = 3) -> str:
    """Markdown table: method, AUC mean +- std, recall mean +- std, (detection columns), seconds."""
    cols = [c for c in _COLUMNS if any(c[0] in r for r in results)]
    cpu = any("cpu_seconds" in r for r in results)
    head = ["Method"] + [c[2] for c in cols] + ["Wall s"] + (["CPU s"] if cpu else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in results:
        cells = [str(r["method"])]
        for mean_key, std_key, _ in cols:
            if mean_key not in r:
                cells.append("")
            elif std_key and std_key in r:
                cells.append(f"{r[mean_key]:.{digits}f} ± {r[std_key]:.{digits}f}")
            else:
                cells.append(f"{r[mean_key]:.{digits}f}")
        cells.append(f"{r['seconds']:.1f}")
        if cpu:
            cells.append(f"{r['cpu_seconds']:.1f}" if "cpu_seconds" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def speedups(results: Sequence[dict], reference: str = "sparse") -> dict[str, float]:
    """seconds(method) / seconds(reference) for every gradient method present."""
    ref = next((r["seconds"] for r in results if r["method"] == reference), None)
    if not ref:
        return {}
    return {r["method"]: r["seconds"] / ref for r in results if r["method"] in GRADIENT_METHODS}
