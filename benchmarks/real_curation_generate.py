"""What the fine-tunes of benchmarks/real_curation_finetune.py answer when they must solve the
problem themselves: greedy generation on the evaluation problems the selection never saw, the final
number compared with the gold answer (exact match; :func:`forvalue.training.evaluate.evaluate_accuracy`,
extractor ``last-number``). Teacher-forced answer accuracy saturates (the final number is copied
from the gold reasoning); generation is the measure that can see what a wrong final answer or
another problem's solution teaches.

    .venv/bin/python benchmarks/real_curation_generate.py --adapters ADAPTERS --data DATA --limit 100 \\
        --max-new-tokens 256 --threads 2 --json benchmarks/results/real-curation-generate.json

``ADAPTERS`` holds the adapter folders the fine-tune benchmark wrote (``<set>-seed<k>``); the base
model is evaluated too. Prints a table: per training set, the mean and standard deviation of the
accuracy over seeds, and how many generations ended without a number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _evaluate(lm, samples, args) -> dict:
    from forvalue.training.evaluate import evaluate_accuracy

    t0 = time.perf_counter()
    acc = evaluate_accuracy(lm, samples, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    return {"accuracy": acc.accuracy, "n_correct": acc.n_correct, "n": acc.n, "n_no_answer": acc.n_no_answer,
            "seconds": round(time.perf_counter() - t0, 1),
            "examples": [{k: p[k] for k in ("id", "reference", "prediction", "correct")} for p in acc.predictions[:5]]}


def _table(runs: dict, base: dict | None) -> str:
    sets: dict[str, list[dict]] = {}
    for name, r in runs.items():
        sets.setdefault(name.rsplit("-seed", 1)[0], []).append(r)
    lines = ["| training set | accuracy (mean +- sd over seeds) | per seed | no number |", "|---|---:|---|---:|"]
    if base:
        lines.append(f"| base model | {base['accuracy']:.3f} | - | {base['n_no_answer']} |")
    for s, rs in sets.items():
        accs = [r["accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {s} | {statistics.mean(accs):.3f} +- {sd:.3f} | {', '.join(f'{a:.2f}' for a in accs)} | "
                     f"{sum(r['n_no_answer'] for r in rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapters", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="folder with eval.jsonl")
    ap.add_argument("--limit", type=int, default=100, help="evaluation problems (the first N of eval.jsonl)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sets", default="", help="comma-separated set names to run (default: every adapter folder)")
    ap.add_argument("--no-base", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from forvalue.data.samples import load_samples
    from forvalue.models.loading import ModelConfig
    from forvalue.training.finetune import load_finetuned

    torch.set_num_threads(args.threads)
    samples = load_samples(args.data / "eval.jsonl").samples[: args.limit]
    wanted = {s for s in args.sets.split(",") if s}
    folders = sorted(p for p in args.adapters.iterdir() if (p / "adapter_config.json").exists()
                     and (not wanted or p.name.rsplit("-seed", 1)[0] in wanted))
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "n_eval": len(samples), "runs": {}}
    if not args.no_base:
        out["base"] = _evaluate(ModelConfig(model="default", device="cpu", dtype="float32").load(), samples, args)
        print(f"base: {out['base']['accuracy']:.3f} ({out['base']['seconds']} s)", flush=True)
    for folder in folders:
        lm = load_finetuned(folder, base="default", device="cpu", dtype="float32")
        out["runs"][folder.name] = r = _evaluate(lm, samples, args)
        print(f"{folder.name}: {r['accuracy']:.3f} ({r['n_no_answer']} without a number, {r['seconds']} s)", flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    out["markdown"] = _table(out["runs"], out.get("base"))
    print(out["markdown"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
