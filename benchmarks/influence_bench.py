"""Influence benchmarks: influential data (sentence, math, math-reason), mislabeled and noisy data
detection, For-Value against the LoRA gradient baselines, on the bundled default model.

Every (benchmark, task, positions, method group, size) is one job whose results go to
``<out-dir>/<job>.json`` (the same JSON as ``forvalue bench ... --json``); a job whose file exists is
skipped (``--force`` reruns it), so an interrupted run resumes. At the end all JSON files in the
folder are collected into ``<out-dir>/influence_report.md``.

    python benchmarks/influence_bench.py                      # everything (hours on a laptop CPU)
    python benchmarks/influence_bench.py --only forvalue      # For-Value methods only
    python benchmarks/influence_bench.py --report-only        # rebuild influence_report.md from the JSON files

Each job is equivalent to one ``forvalue bench`` command line, printed in the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forvalue.cli.bench import main as bench_main  # noqa: E402
from forvalue.benchmarks.runner import markdown_table  # noqa: E402

FV = "sparse,exact,emb"
GRAD = "hessian-free,datainf,hyperinf"


def jobs(args) -> list[tuple[str, list[str]]]:
    """(job name, CLI argv) in priority order."""
    out = []
    tasks = args.tasks.split(",")
    positions = args.positions.split(",")
    grad_tasks = [t for t in args.gradient_tasks.split(",") if t]
    sz = ["--n-train-per-class", str(args.n_train_per_class), "--n-val-per-class", str(args.n_val_per_class)]
    gsz = ["--n-train-per-class", str(args.grad_n_train_per_class), "--n-val-per-class", str(args.grad_n_val_per_class)]
    reduced = (args.grad_n_train_per_class, args.grad_n_val_per_class) != (args.n_train_per_class, args.n_val_per_class)
    for pos in positions:
        if args.only in (None, "forvalue"):
            for t in tasks:
                out.append((f"influence-{t}-{pos}-forvalue-n{args.n_train_per_class}",
                            ["influence", "--task", t, "--positions", pos, "--methods", FV] + sz))
        if args.only in (None, "gradients") and pos in args.gradient_positions.split(","):
            for t in grad_tasks:
                if reduced:
                    out.append((f"influence-{t}-{pos}-forvalue-n{args.grad_n_train_per_class}",
                                ["influence", "--task", t, "--positions", pos, "--methods", FV] + gsz))
                out.append((f"influence-{t}-{pos}-gradients-n{args.grad_n_train_per_class}",
                            ["influence", "--task", t, "--positions", pos, "--methods", GRAD] + gsz))
        if args.only in (None, "detection"):
            for bench in args.detection.split(","):
                if bench:
                    methods = FV + ("," + GRAD if pos in args.gradient_positions.split(",") else "")
                    out.append((f"{bench}-{pos}", [bench, "--positions", pos, "--methods", methods]))
    return out


def _key(payload: dict) -> tuple:
    m = payload.get("meta", {})
    size = (m.get("n_train_per_class"), m.get("n_val_per_class")) if m.get("bench") == "influence" else \
        (m.get("n_train"), m.get("n_val"))
    return (m.get("bench", "?"), m.get("task", m.get("train", "?")), m.get("positions", "?"), size)


def _size_text(key: tuple) -> str:
    bench, _, _, (a, b) = key
    if bench == "influence":
        return f"{a} train / {b} val per class ({10 * (a or 0)} / {10 * (b or 0)})"
    return f"{a} train / {b} val"


def summary(groups: dict) -> list[str]:
    """One table per positions setting over the influence tasks: AUC / recall per method and task,
    and the wall time of each method relative to For-Value sparse on the same task."""
    out = []
    for pos in ("all", "response"):
        keys = sorted((k for k in groups if k[0] == "influence" and k[2] == pos and isinstance(k[1], str)),
                      key=lambda k: (str(k[1]), -(k[3][0] or 0)))
        tasks, seen = [], set()
        for k in keys:                      # the largest size per task
            if k[1] not in seen:
                seen.add(k[1])
                tasks.append(k)
        if not tasks:
            continue
        methods = list(dict.fromkeys(r["method"] for k in tasks for r in groups[k]["rows"]))
        head = "| Method | " + " | ".join(f"{k[1]} AUC | {k[1]} recall | {k[1]} × sparse" for k in tasks) + " |"
        out += [f"### Summary: influence tasks, positions {pos}", "", head,
                "|---|" + "---:|---:|---:|" * len(tasks)]
        for m in methods:
            cells = []
            for k in tasks:
                rows = {r["method"]: r for r in groups[k]["rows"]}
                r, ref = rows.get(m), rows.get("sparse")
                if r is None:
                    cells += ["-", "-", "-"]
                    continue
                ratio = f"{r['seconds'] / ref['seconds']:.1f}" if ref else "-"
                cells += [f"{r['auc_mean']:.3f}", f"{r['recall_mean']:.3f}", ratio]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def report(out_dir: Path) -> str:
    """Merge the job files by (benchmark, task, positions, size) into one table each, with each
    gradient method's wall time relative to For-Value sparse on the same data."""
    groups: dict[tuple, dict] = {}
    machine = None
    for path in sorted(out_dir.glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except ValueError:
            continue
        meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
        if "results" not in payload or meta.get("bench") not in ("influence", "mislabeled", "noise"):
            continue   # another benchmark's file in the same folder
        machine = machine or meta.get("machine")
        g = groups.setdefault(_key(payload), {"rows": [], "commands": []})
        g["rows"] += payload["results"]
        g["commands"].append(meta.get("command", ""))
    order = {"influence": 0, "mislabeled": 1, "noise": 2}
    parts = ["# Influence benchmark results (generated by benchmarks/influence_bench.py)", ""]
    if machine:
        parts += ["Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()), ""]
    parts += summary(groups)
    for key in sorted(groups, key=lambda k: (k[2] != "all", order.get(k[0], 9), str(k[1]), -(k[3][0] or 0))):
        g = groups[key]
        rows = g["rows"]
        ref = next((r["seconds"] for r in rows if r["method"] == "sparse"), None)
        parts += [f"### {key[0]} / {key[1]} / positions {key[2]} / {_size_text(key)}", ""]
        table = markdown_table(rows).splitlines()
        if ref:
            table[0] += " × sparse |"
            table[1] += "---:|"
            for i, r in enumerate(rows):
                table[2 + i] += f" {r['seconds'] / ref:.1f} |"
        parts += table + [""] + [f"    {c}" for c in g["commands"]] + [""]
    text = "\n".join(parts)
    (out_dir / "influence_report.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--model", default="default")
    p.add_argument("--tasks", default="sentence,math,math-reason")
    p.add_argument("--positions", default="all,response")
    p.add_argument("--gradient-tasks", default="sentence,math,math-reason",
                   help="tasks that also run the gradient baselines")
    p.add_argument("--gradient-positions", default="all", help="positions for which gradient baselines run")
    p.add_argument("--detection", default="mislabeled,noise")
    p.add_argument("--n-train-per-class", type=int, default=90)
    p.add_argument("--n-val-per-class", type=int, default=10)
    p.add_argument("--grad-n-train-per-class", type=int, default=90)
    p.add_argument("--grad-n-val-per-class", type=int, default=10)
    p.add_argument("--only", choices=["forvalue", "gradients", "detection"], default=None)
    p.add_argument("--force", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their commands")
    p.add_argument("--report-only", action="store_true")
    args, extra = p.parse_known_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for name, argv in jobs(args):
            target = out_dir / f"{name}.json"
            full = argv + ["--model", args.model, "--json", str(target), "--quiet"] + extra
            if args.dry_run:
                print(f"{name}: forvalue bench {' '.join(full)}")
                continue
            if target.exists() and not args.force:
                print(f"skip {name} (done)", flush=True)
                continue
            print(f"== {name}: forvalue bench {' '.join(full)}", flush=True)
            t0 = time.perf_counter()
            sys.argv = ["forvalue", "bench"] + full
            rc = bench_main(["bench"] + full)
            print(f"== {name} done in {time.perf_counter() - t0:.0f} s (rc {rc})", flush=True)
    print(report(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
