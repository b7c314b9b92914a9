"""Bounded features: bytes stored per sample against AUC and recall (benchmarks/bounded_sets.py).

    .venv/bin/python benchmarks/bounded_bench.py run     [--tasks sentence,math,math-reason,math-long]
                                                          [--positions all,response] [--ks 8,32]
    .venv/bin/python benchmarks/bounded_bench.py report  # prints the tables of docs/benchmarks.md

``run`` appends one JSON entry per (task, positions) to benchmarks/results/bounded.json and skips
the ones already there, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "bounded.json"
DRAWS = ROOT / "benchmarks" / "results" / "bounded-draws.json"
BUDGET = 32 * 1024
# the configurations the report compares (the product default is the first bounded one)
SHOWN = [
    {"k": 8, "r": 64, "store_dtype": "float32", "energy": 1.0, "max_rows": None},
    {"k": 32, "r": 128, "store_dtype": "float32", "energy": 1.0, "max_rows": None},
]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {"meta": {}, "results": []}


def _save(doc: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(f".{OUT.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    tmp.replace(OUT)


def run(args) -> int:
    import torch

    from bounded_sets import run_task
    from forvalue.benchmarks.runner import machine_info
    from forvalue.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    doc = _load()
    doc["meta"] = {"machine": machine_info(), "command": " ".join(sys.argv), "model": args.model}
    lm = load_model(args.model)
    ks = [int(k) for k in args.ks.split(",")]
    for task in args.tasks.split(","):
        for positions in args.positions.split(","):
            if any(x["task"] == task and x["positions"] == positions for x in doc["results"]):
                continue
            t0 = time.perf_counter()
            res = run_task(lm, task, positions, ks=ks, exact=positions == "all" or task == "math-long", log=_log)
            res["seconds"] = time.perf_counter() - t0
            doc["results"].append(res)
            _save(doc)
            _log(f"[{task}/{positions}] done in {res['seconds']:.0f} s")
    return 0


def draws(args) -> int:
    import torch

    from bounded_sets import projection_draws
    from forvalue.benchmarks.runner import machine_info
    from forvalue.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    doc = json.loads(DRAWS.read_text()) if DRAWS.exists() else {"meta": {}, "results": []}
    doc["meta"] = {"machine": machine_info(), "command": " ".join(sys.argv), "model": args.model}
    lm = load_model(args.model)
    for task in args.tasks.split(","):
        if any(x["task"] == task for x in doc["results"]):
            continue
        doc["results"].append(projection_draws(lm, task, "all", log=_log))
        tmp = DRAWS.with_name(f".{DRAWS.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=float))
        tmp.replace(DRAWS)
    return 0


def report(args) -> int:
    from bounded_sets import best_rows, markdown

    doc = _load()
    results = doc["results"]
    shown = list(SHOWN)
    for c in args.configs or []:
        k, r, dt, e, cap = c.split(":")
        shown.append({"k": int(k), "r": int(r), "store_dtype": dt, "energy": float(e),
                      "max_rows": int(cap) if cap not in ("", "-", "0") else None})
    print(markdown(results, shown))
    print()
    for x in results:
        best = best_rows(x, BUDGET)[:3]
        ref = x.get("exact", {}).get("recall")
        print(f"{x['task']} {x['positions']}: exact recall {ref if ref is None else round(ref, 3)}; best within "
              f"32 KB: " + "; ".join(f"k={b['k']} r={b['r']} {b['store_dtype']} e={b['energy']} cap={b['max_rows']}"
                                    f" {b['bytes_per_sample'] / 1024:.1f} KB recall {b['recall']:.3f}" for b in best))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--tasks", default="sentence,math,math-reason,math-long")
    p.add_argument("--positions", default="all,response")
    p.add_argument("--ks", default="8,32")
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(fn=run)
    p = sub.add_parser("draws", help="recall over projection seeds (r=64, 128) with the default bounds")
    p.add_argument("--tasks", default="math-reason")
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(fn=draws)
    p = sub.add_parser("report")
    p.add_argument("--configs", nargs="*", help="more rows: k:r:dtype:energy:max_rows")
    p.set_defaults(fn=report)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
