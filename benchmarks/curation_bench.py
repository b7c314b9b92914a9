"""Curation benchmark: selection strategies vs baselines, and fine-tuning on the subsets they keep.

    .venv/bin/python benchmarks/curation_bench.py select      [--sets mixed,...] [--methods ...]
    .venv/bin/python benchmarks/curation_bench.py mislabeled  [--methods ...]
    .venv/bin/python benchmarks/curation_bench.py finetune    --set mixed [--fractions 5,10] [--seeds 0,1,2]
    .venv/bin/python benchmarks/curation_bench.py report      # benchmarks/results/curation_report.md

Every stage appends one JSON row per finished unit of work to ``benchmarks/results/curation-*.json``
and skips the units already there, so an interrupted stage resumes where it stopped.

- ``select``: for each noisy set (math-reason, 900 training / 100 valuation samples, 40% of the
  training responses corrupted: ``mixed`` = every noise kind, or one kind per set), the clean share
  and template coverage of the first 5% and 10% of every method's order, and its clean AUC.
  Methods: the For-Value selection strategies (one forward pass with the default model, response
  positions, chat template), the cheap filters (response perplexity, IFD) and the gradient
  baselines (LoRA fine-tuned on the training set first), plus random orders (3 seeds).
- ``mislabeled``: clean AUC of every method's order on the mislabeled task (200 / 50, 50% flipped
  labels, response positions, plain prompts as in the detection benchmark).
- ``finetune``: LoRA with the library defaults (30 steps, batch 8, lr 1e-3, r=8 on every linear
  layer) on the first p% of each strategy's order, on random p% (the seed draws it), on the bottom
  p% of the default strategy, and on the full set; valuation loss on the clean valuation set.
  The seed sets LoRA init and data order (and the random draw).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"] if path.exists() else []


def _save(path: Path, rows: list[dict], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": rows}, indent=1, default=float))
    tmp.replace(path)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _model(args):
    import torch

    from forvalue.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, device=args.device, dtype=args.dtype)


def _meta(args) -> dict:
    from forvalue.benchmarks.runner import machine_info

    return {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "machine": machine_info(),
            "model": args.model}


def _labels(records):
    import numpy as np

    return (np.array([bool(r["is_clean"]) for r in records]), np.array([r["class_id"] for r in records]))


# ----------------------------------------------------------------------------- stages
def stage_select(args) -> None:
    from curation_sets import (curation_data, curation_set, method_orders, random_metrics,
                                              selection_metrics)
    from forvalue.store.feature_store import FeatureStore

    out = RESULTS / f"curation-select{args.suffix}.json"
    rows = _rows(out)
    done = {(r["set"], r["method"]) for r in rows}
    lm = _model(args)
    store = FeatureStore(args.store)
    cache: dict = {}
    for name in args.sets.split(","):
        tr, va = curation_set(name, seed=args.task_seed, n_train=args.n_train, n_val=args.n_val)
        data = curation_data(name, tr, va)
        clean, classes = _labels(tr)
        if (name, "random") not in done:
            rows.append({"set": name, "method": "random", **random_metrics(len(tr), clean, classes), "seconds": 0.0})
        todo = [m for m in args.methods.split(",") if (name, m) not in done]
        if todo:
            res = method_orders(lm, data, todo, store=store, batch_size=args.batch_size, loss_cache=cache, log=_log)
            for m, r in res.items():
                rows.append({"set": name, "method": m, **selection_metrics(r["order"], clean, classes),
                             "seconds": r["seconds"]})
                _log(f"{name} {m}: {rows[-1]}")
        _save(out, rows, _meta(args))


def stage_mislabeled(args) -> None:
    from curation_sets import method_orders
    from forvalue.benchmarks.runner import build_data
    from forvalue.benchmarks.tasks import make_mislabeled
    from forvalue.metrics import clean_share, order_clean_auc

    import numpy as np

    out = RESULTS / f"curation-mislabeled{args.suffix}.json"
    rows = _rows(out)
    done = {r["method"] for r in rows}
    tr, va = make_mislabeled(args.task_seed, n_train=200, n_val=50, flip_rate=0.5)
    data = build_data("mislabeled", tr, va, positions="response", chat_template=False)
    clean = np.array([r["is_clean"] for r in tr])
    todo = [m for m in args.methods.split(",") if m not in done]
    if todo:
        lm = _model(args)
        res = method_orders(lm, data, todo, batch_size=args.batch_size, log=_log)
        for m, r in res.items():
            rows.append({"method": m, "clean_auc": order_clean_auc(r["order"], clean),
                         "clean_10": clean_share(r["order"][:20], clean), "seconds": r["seconds"]})
            _log(f"mislabeled {m}: {rows[-1]}")
    _save(out, rows, _meta(args))


def stage_finetune(args) -> None:
    import numpy as np

    from curation_sets import curation_data, curation_set, method_orders
    from forvalue.training.evaluate import EvalConfig
    from forvalue.training.finetune import TrainConfig, finetune
    from forvalue.metrics import clean_share, coverage
    from forvalue.curation.selection import DEFAULT_STRATEGY, subset_count
    from forvalue.store.feature_store import FeatureStore

    out = RESULTS / f"curation-finetune-{args.set}{args.suffix}.json"
    rows = _rows(out)
    done = {(r["subset"], r["p"], r["seed"]) for r in rows}
    lm = _model(args)
    tr, va = curation_set(args.set, seed=args.task_seed, n_train=args.n_train, n_val=args.n_val)
    data = curation_data(args.set, tr, va)
    clean, classes = _labels(tr)
    strategies = [s for s in args.strategies.split(",") if s]
    orders = {m: r["order"] for m, r in method_orders(lm, data, strategies, store=FeatureStore(args.store),
                                                       batch_size=args.batch_size, log=_log).items()}
    n = len(tr)
    plan = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for p in [float(x) for x in args.fractions.split(",")]:
            k = subset_count(n, "top_p", p)
            for st in strategies:
                plan.append((st, p, seed, orders[st][:k]))
            plan.append(("random", p, seed, np.random.default_rng(1000 + seed).permutation(n)[:k]))
            if args.bottom:
                plan.append((f"bottom-{DEFAULT_STRATEGY}", p, seed, orders[DEFAULT_STRATEGY][::-1][:k]))
        if args.full:
            plan.append(("full", 100.0, seed, np.arange(n)))
    ecfg = EvalConfig(accuracy=False)
    for subset, p, seed, idx in plan:
        if (subset, p, seed) in done:
            continue
        t0 = time.perf_counter()
        res = finetune(lm, [data.train[i] for i in idx], out_dir=Path(args.work) / f"{subset}-{p:g}-{seed}",
                       config=TrainConfig(seed=seed, steps=args.steps), val=data.val, eval_config=ecfg,
                       overwrite=True)
        rows.append({"set": args.set, "subset": subset, "p": p, "seed": seed, "k": int(len(idx)),
                     "clean": clean_share(idx, clean), "coverage": coverage(idx, classes),
                     "val_loss": res.metrics["val_loss"], "train_loss_final": res.metrics["train_loss_final"],
                     "seconds": time.perf_counter() - t0})
        _log(f"finetune {rows[-1]}")
        _save(out, rows, _meta(args))


# ----------------------------------------------------------------------------- report
def _fmt(v, digits=2):
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def report(args) -> str:
    import numpy as np

    lines = ["# Curation benchmark", ""]
    sel = _rows(RESULTS / f"curation-select{args.suffix}.json")
    if sel:
        sets = list(dict.fromkeys(r["set"] for r in sel))
        methods = list(dict.fromkeys(r["method"] for r in sel))
        for frac in ("5", "10"):
            lines += [f"## Clean share / templates covered in the first {frac}%", "",
                      "| method | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
            for m in methods:
                cells = []
                for s in sets:
                    r = next((x for x in sel if x["set"] == s and x["method"] == m), None)
                    cells.append("" if r is None else f"{r[f'clean_{frac}']:.2f} / {r[f'coverage_{frac}']:.0f}")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["## Clean AUC of the whole order", "", "| method | " + " | ".join(s for s in sets if s != "clean") + " |",
                  "|---|" + "---:|" * len([s for s in sets if s != "clean"])]
        for m in methods:
            cells = []
            for s in sets:
                if s == "clean":
                    continue
                r = next((x for x in sel if x["set"] == s and x["method"] == m), None)
                cells.append("" if r is None or "clean_auc" not in r else f"{r['clean_auc']:.3f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    mis = _rows(RESULTS / f"curation-mislabeled{args.suffix}.json")
    if mis:
        lines += ["## Mislabeled task: clean AUC", "", "| method | clean AUC | clean share of the first 10% | s |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['clean_auc']:.3f} | {r['clean_10']:.2f} | {r['seconds']:.1f} |" for r in mis]
        lines.append("")
    for path in sorted(RESULTS.glob(f"curation-finetune-*{args.suffix}.json")):
        ft = _rows(path)
        if not ft:
            continue
        lines += [f"## Fine-tuning on `{ft[0]['set']}`: valuation loss (mean ± std over seeds)", "",
                  "| subset | p% | k | clean | templates | runs | valuation loss | per seed |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        keys = list(dict.fromkeys((r["subset"], r["p"]) for r in ft))
        for subset, p in sorted(keys, key=lambda x: (x[1], x[0])):
            rs = sorted((r for r in ft if r["subset"] == subset and r["p"] == p), key=lambda r: r["seed"])
            vl = np.array([r["val_loss"] for r in rs])
            sd = float(vl.std(ddof=1)) if len(vl) > 1 else 0.0
            lines.append(f"| {subset} | {p:g} | {rs[0]['k']} | {np.mean([r['clean'] for r in rs]):.2f} | "
                         f"{np.mean([r['coverage'] for r in rs]):.1f} | {len(rs)} | {vl.mean():.4f} ± {sd:.4f} | "
                         + ", ".join(f"{v:.4f}" for v in vl) + " |")
        lines.append("")
    text = "\n".join(lines)
    path = RESULTS / f"curation_report{args.suffix}.md"
    path.write_text(text)
    print(text)
    return text


def main(argv=None) -> int:
    from curation_sets import CURATION_METHODS, CURATION_SETS
    from forvalue.curation.selection import STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["select", "mislabeled", "finetune", "report"])
    ap.add_argument("--sets", default=",".join(CURATION_SETS))
    ap.add_argument("--set", default="mixed", help="finetune: the set to fine-tune on")
    ap.add_argument("--methods", default=",".join(CURATION_METHODS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help="finetune: For-Value strategies")
    ap.add_argument("--fractions", default="5,10", help="finetune: subset sizes in percent")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--no-bottom", dest="bottom", action="store_false")
    ap.add_argument("--no-full", dest="full", action="store_false")
    ap.add_argument("--task-seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=900)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--store", default=str(ROOT / ".forvalue" / "bench" / "curation-features"))
    ap.add_argument("--work", default=str(ROOT / ".forvalue" / "bench" / "curation-finetune"))
    ap.add_argument("--suffix", default="", help="suffix of the result files (e.g. -smoke)")
    args = ap.parse_args(argv)
    bad = [m for m in args.strategies.split(",") if m and m not in STRATEGIES]
    if bad:
        ap.error(f"unknown strategies {bad}")
    {"select": stage_select, "mislabeled": stage_mislabeled, "finetune": stage_finetune,
     "report": report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
