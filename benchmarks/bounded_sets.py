"""Bounded features: bytes stored per sample against influence quality (AUC, recall).

For each task and scored positions the sparse features are extracted once per top-k at the widest
projection (``R_MAX``), unbounded and in float32; every stored form is then derived from them
exactly as the feature extraction would store it (:func:`forvalue.valuation.features.bound_rows`, then the
cast), scored pairwise against the valuation set the same way, and written as a real shard to
measure its bytes on disk. A width ``r < R_MAX`` takes the first ``r`` columns of the widest
projection: those are a Gaussian projection of width ``r`` (scaled by sqrt(R_MAX / r), which no
ranking sees), so no second forward pass is needed.

Tasks: the three DataInf-recipe tasks (``sentence``, ``math``, ``math-reason``; 900 training and
100 valuation samples) and ``math-long``: eight solved ``math-reason`` problems of one class per
sample (~500 tokens; 300 training, 50 valuation samples). The reference is ``exact`` (the paper's
Algorithm 1 over the texts' vocabulary) on the same data in the same run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from itertools import product
from pathlib import Path
from typing import Sequence

import numpy as np

R_MAX = 256
TASKS = ("sentence", "math", "math-reason", "math-long")
# (r, store dtype, energy share, row cap) of every stored form measured: per width, the full rows in
# float32 (the first stored format) and every bounded form in float16
GRID = tuple([(r, "float32", 1.0, None) for r in (64, 128, 256)]
             + list(product((64, 128, 256), ("float16",), (1.0, 0.99, 0.95), (None, 128, 64))))


def long_records(seed: int = 0, per_sample: int = 8, n_train_per_class: int = 30,
                 n_val_per_class: int = 5) -> tuple[list[dict], list[dict]]:
    """``math-long``: each record is ``per_sample`` solved math-reason problems of one class."""
    from forvalue.benchmarks.tasks import make_task

    tr, va = make_task("math-reason", seed, n_train_per_class=n_train_per_class * per_sample,
                       n_val_per_class=n_val_per_class * per_sample)

    def group(records: list[dict], split: str) -> list[dict]:
        by_class: dict[int, list[dict]] = {}
        for rec in records:
            by_class.setdefault(rec["class_id"], []).append(rec)
        out = []
        for cid, recs in sorted(by_class.items()):
            for j in range(0, len(recs) - per_sample + 1, per_sample):
                part = recs[j:j + per_sample]
                prompt = f"Solve these {per_sample} math problems and show the working.\n\n"
                response = "\n\n".join(f"Problem {i + 1}. {r['text']}" for i, r in enumerate(part))
                out.append({"id": f"math-long-{split}-{len(out):04d}", "prompt": prompt, "response": response,
                            "text": prompt + response, "class": part[0]["class"], "class_id": cid})
        return out

    return group(tr, "train"), group(va, "val")


def bench_data(task: str, positions: str, *, k: int, seed: int = 0, r: int | None = R_MAX):
    """The benchmark's samples and labels (:class:`forvalue.benchmarks.runner.BenchData`), with a
    feature config that keeps every row in float32 (the stored forms are derived from it)."""
    from forvalue.benchmarks.runner import build_data, task_data

    if task == "math-long":
        tr, va = long_records(seed)
        text = "text" if positions == "all" else None
        data = build_data(task, tr, va, positions=positions, text_column=text, chat_template=False, k=k, r=r)
    else:
        data = task_data(task, positions=positions, seed=seed, k=k, r=r)
    data.config = replace(data.config, store_dtype="float32", energy=1.0, max_rows=None)
    return data


def projection_draws(lm, task: str, positions: str, *, k: int = 8, rs: Sequence[int] = (64, 128),
                     seeds: Sequence[int] = (0, 1, 2, 3, 4), energy: float = 0.99, max_rows: int | None = 128,
                     batch_size: int = 8, log=None) -> dict:
    """Recall and AUC of the stored form for several projection seeds: the features are extracted once
    without a projection, then projected exactly as extraction does (``features.projection(d, r,
    seed)``; the projection is linear, so projecting a token's summed row equals summing projected
    positions), pruned and cast as stored. Seed 0 is what the product stores."""
    import torch

    from forvalue.valuation.features import FeatureConfig, projection
    from forvalue.benchmarks.runner import encode_labels, labels_of
    from forvalue.valuator import Valuator

    say = log or (lambda msg: None)
    data = bench_data(task, positions, k=k, r=None)
    ytr, yva = encode_labels(labels_of(data.train_records, "class_id"), labels_of(data.val_records, "class_id"))
    v = Valuator(lm, data.config, batch_size=batch_size)
    t0 = time.perf_counter()
    full = [v.featurize(data.train).features, v.featurize(data.val).features]
    say(f"[{task}/{positions}] unprojected features in {time.perf_counter() - t0:.0f} s")
    d = full[0].vectors.shape[1]
    out = {"task": task, "positions": positions, "k": k, "energy": energy, "max_rows": max_rows,
           "unprojected": evaluate(*full, ytr, yva), "draws": []}
    for r in rs:
        for seed in seeds:
            P = projection(d, r, seed, "cpu", torch.float64).numpy()
            cfg = FeatureConfig(k=k, r=r, seed=seed, store_dtype="float16", energy=energy, max_rows=max_rows)
            stored = [_stored(f, (f.vectors.astype(np.float64) @ P).astype(np.float32), cfg) for f in full]
            out["draws"].append({"r": r, "seed": seed, **evaluate(*stored, ytr, yva)})
            say(f"[{task}/{positions}] r={r} seed={seed}: {out['draws'][-1]}")
    return out


def _stored(feats, vectors: np.ndarray, cfg):
    """``feats`` with its rows replaced by ``vectors`` (projected as ``cfg.r`` says), then pruned per
    sample and cast as ``cfg`` stores them (:func:`forvalue.valuation.features.bound_rows`)."""
    from forvalue.valuation.features import SparseFeatures, bound_rows

    bounds = np.searchsorted(feats.row_sample, np.arange(len(feats) + 1))
    parts = [bound_rows(feats.token_ids[bounds[i]:bounds[i + 1]], vectors[bounds[i]:bounds[i + 1]], cfg)
             for i in range(len(feats))]
    dt = np.float16 if cfg.store_dtype == "float16" else np.float32
    return SparseFeatures(sample_ids=list(feats.sample_ids),
                          row_sample=np.repeat(np.arange(len(feats)), [len(p[0]) for p in parts]),
                          token_ids=np.concatenate([p[0] for p in parts]),
                          vectors=np.concatenate([p[1] for p in parts]).astype(dt),
                          emb=feats.emb.astype(dt), n_positions=feats.n_positions, norms=np.array([p[2] for p in parts]))


def derive(feats, r: int, store_dtype: str, energy: float, max_rows: int | None):
    """The stored form of full float32 features under a configuration (see the module doc)."""
    from forvalue.valuation.features import FeatureConfig

    cfg = FeatureConfig(r=r, store_dtype=store_dtype, energy=energy, max_rows=max_rows)
    return _stored(feats, feats.vectors[:, :r] * np.float32(np.sqrt(R_MAX / r)), cfg), cfg


def stored_bytes(feats, cfg) -> int:
    """Bytes on disk of ``feats`` as one shard of the stored format ``cfg`` selects."""
    from forvalue.store.shard_format import write_files

    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), "x", feats, {"feature_config_id": cfg.id}, arrow=cfg.bounded)
        return sum(p.stat().st_size for p in files.values())


def evaluate(train, val, ytr, yva) -> dict:
    from forvalue.metrics import auc_recall
    from forvalue.valuation.scoring import sparse_scores

    m = auc_recall(sparse_scores(train, val, pairwise=True), ytr, yva)
    return {"auc": float(m["auc_mean"]), "recall": float(m["recall_mean"])}


def run_task(lm, task: str, positions: str, *, ks: Sequence[int] = (8, 32), grid=GRID, exact: bool = True,
             batch_size: int = 8, log=None) -> dict:
    """Every stored form of ``grid`` at each top-k, with exact's AUC and recall as the reference."""
    from forvalue.metrics import auc_recall
    from forvalue.valuator import Valuator
    from forvalue.benchmarks.runner import encode_labels, labels_of

    say = log or (lambda msg: None)
    out: dict = {"task": task, "positions": positions, "rows": []}
    for k in ks:
        data = bench_data(task, positions, k=k)
        ytr, yva = encode_labels(labels_of(data.train_records, "class_id"), labels_of(data.val_records, "class_id"))
        v = Valuator(lm, data.config, batch_size=batch_size)
        t0 = time.perf_counter()
        tf, vf = v.featurize(data.train).features, v.featurize(data.val).features
        say(f"[{task}/{positions}] k={k}: features of {len(tf)} + {len(vf)} samples in "
            f"{time.perf_counter() - t0:.0f} s, {tf.n_rows / len(tf):.0f} rows per sample")
        out.update(n_train=len(tf), n_val=len(vf), positions_per_sample=float(np.mean(tf.n_positions)))
        for r, dt, energy, cap in grid:
            tr_b, cfg = derive(tf, r, dt, energy, cap)
            va_b, _ = derive(vf, r, dt, energy, cap)
            rows = np.bincount(tr_b.row_sample, minlength=len(tr_b))
            out["rows"].append({"k": k, "r": r, "store_dtype": dt, "energy": energy, "max_rows": cap,
                                "bytes_per_sample": stored_bytes(tr_b, cfg) / len(tr_b),
                                "rows_mean": float(rows.mean()), "rows_max": int(rows.max()),
                                **evaluate(tr_b, va_b, ytr, yva)})
        if exact and k == ks[0]:
            t0 = time.perf_counter()
            res = Valuator(lm, replace(data.config, r=None), batch_size=batch_size).score(
                data.train, data.val, method="exact", pairwise=True)
            m = auc_recall(res.matrix, ytr, yva)
            out["exact"] = {"auc": float(m["auc_mean"]), "recall": float(m["recall_mean"]),
                            "seconds": time.perf_counter() - t0}
            say(f"[{task}/{positions}] exact: AUC {out['exact']['auc']:.3f} recall {out['exact']['recall']:.3f}")
    return out


def best_rows(result: dict, budget: float) -> list[dict]:
    """The stored forms within ``budget`` bytes per sample, best recall first."""
    rows = [r for r in result["rows"] if r["bytes_per_sample"] <= budget]
    return sorted(rows, key=lambda r: (-r["recall"], r["bytes_per_sample"]))


def markdown(results: Sequence[dict], configs: Sequence[dict]) -> str:
    """One row per configuration, a column pair (KB per sample, recall) per task/positions."""
    head = "| k | r | dtype | energy | max rows | " + " | ".join(
        f"{x['task']} {x['positions']}: KB / recall / AUC" for x in results) + " |"
    lines = [head, "|" + "---|" * (5 + len(results))]
    for c in configs:
        cells = []
        for x in results:
            row = next((r for r in x["rows"] if all(r[key] == c[key] for key in c)), None)
            cells.append("-" if row is None else
                         f"{row['bytes_per_sample'] / 1024:.1f} / {row['recall']:.3f} / {row['auc']:.3f}")
        lines.append(f"| {c['k']} | {c['r']} | {c['store_dtype']} | {c['energy']} | {c['max_rows'] or '-'} | "
                     + " | ".join(cells) + " |")
    exact = [f"{x['exact']['recall']:.3f} / {x['exact']['auc']:.3f}" if "exact" in x else "-" for x in results]
    lines.append("| exact | | | | | " + " | ".join(f"- / {e}" for e in exact) + " |")
    return "\n".join(lines)


__all__ = ["GRID", "TASKS", "long_records", "bench_data", "derive", "stored_bytes", "run_task", "best_rows",
           "markdown", "projection_draws"]
