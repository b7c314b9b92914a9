"""Fine-tune on For-Value top-p% vs random-p% vs bottom-p%, tracked in MLflow.

    .venv/bin/python benchmarks/finetune_bench.py [--seeds 0,1,2] [--p 5] [--steps 12] ...

1. The DataInf math-with-reasoning task (``math-reason``; 10 classes, default 90 training and 10
   valuation samples per class) is generated with ``--task-seed``.
2. Every training sample is valued against the whole valuation set with For-Value (``sparse``,
   response positions, the bundled default model); features are cached in ``--store``.
3. For every seed and strategy (top / random / bottom p%, same k), a LoRA fine-tune with the same
   steps, batch size and hyper-parameters, then evaluation on the valuation set: valuation loss
   (mean NLL per response token, on ``--loss-limit`` evenly spaced samples) and accuracy (greedy
   decoding, exact match of the final number, on ``--accuracy-limit`` evenly spaced samples).
   The seed sets LoRA init, data order and the random subset; the top/bottom subsets do not
   change with the seed.
4. Prints the subsets' class mix, every run, and a Markdown table of mean and std (ddof=1) over
   seeds. Every run is an MLflow run (children of one comparison run) in the tracking store
   (``--tracking-uri``, default ``sqlite:///<cwd>/.forvalue/mlflow.db``).
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="math-reason")
    ap.add_argument("--task-seed", type=int, default=0)
    ap.add_argument("--n-train-per-class", type=int, default=90)
    ap.add_argument("--n-val-per-class", type=int, default=10)
    ap.add_argument("--p", type=float, default=5.0, help="subset size in percent of the training set")
    ap.add_argument("--strategies", default="top,random,bottom")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--method", choices=["lora", "full"], default="lora")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-layers", type=int, default=0, help="LoRA in the last n layers only (0: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="bfloat16", help="model dtype for scoring, training and eval")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default). On a shared CPU, 1 avoids OpenMP threads "
                         "spinning against other processes (measured 4-7x faster here)")
    ap.add_argument("--loss-limit", type=int, default=0, help="valuation samples for the loss (0: all)")
    ap.add_argument("--accuracy-limit", type=int, default=50, help="valuation samples for accuracy (0: all)")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--no-base", action="store_true", help="skip evaluating the base model")
    ap.add_argument("--out", default=".forvalue/bench/finetune")
    ap.add_argument("--store", default=".forvalue/bench/features", help="feature store for the scores")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--json", default=None, help="write all rows and the summary here")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from forvalue.benchmarks.tasks import make_task
    from forvalue.data import samples_from_records
    from forvalue.evaluate import EvalConfig
    from forvalue.features import FeatureConfig
    from forvalue.finetune import TrainConfig, compare_strategies, select_subset, subset_size
    from forvalue.models import load_model
    from forvalue.scoring import score
    from forvalue.store import FeatureStore
    from forvalue.tracking import Tracker

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    t_all = time.perf_counter()
    train_rec, val_rec = make_task(args.task, args.task_seed, args.n_train_per_class, args.n_val_per_class)
    train = samples_from_records(train_rec, source=f"{args.task}-train").samples
    val = samples_from_records(val_rec, source=f"{args.task}-val").samples
    print(f"# {args.task}: {len(train)} training / {len(val)} valuation samples (task seed {args.task_seed})")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")

    t = time.perf_counter()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"# model {lm.fingerprint.id} on {lm.device} ({time.perf_counter() - t:.1f}s)", flush=True)

    t = time.perf_counter()
    res = score(lm, train, val, method="sparse", config=FeatureConfig(positions="response"),
                store=FeatureStore(args.store), batch_size=8)
    values = res.values
    print(f"# For-Value scores: {time.perf_counter() - t:.1f}s ({res.info})", flush=True)
    k = subset_size(len(train), p=args.p)
    classes = [r["class"] for r in train_rec]
    for st in ("top", "bottom"):
        idx = select_subset(len(train), st, values=values, k=k)
        mix = collections.Counter(classes[i] for i in idx)
        print(f"# {st}-{k} class mix: {dict(mix.most_common())}")
    mix = collections.Counter(classes[i] for i in select_subset(len(train), "random", k=k, seed=seeds[0]))
    print(f"# random-{k} (seed {seeds[0]}) class mix: {dict(mix.most_common())}", flush=True)

    config = TrainConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         lora_r=args.lora_r, lora_layers=args.lora_layers or None)
    ecfg = EvalConfig(accuracy=True, extractor="last-number", max_new_tokens=args.max_new_tokens,
                      loss_limit=args.loss_limit or None, accuracy_limit=args.accuracy_limit or None,
                      batch_size=8, gen_batch_size=32)
    tracker = Tracker(args.tracking_uri, experiment="forvalue-finetune-bench")
    print(f"# tracking: {tracker.tracking_uri} (experiment {tracker.experiment})")
    print(f"# train: {json.dumps(config.to_params())}")
    print(f"# eval: loss on {args.loss_limit or len(val)}, accuracy on {args.accuracy_limit or len(val)} "
          f"evenly spaced valuation samples, max_new_tokens {args.max_new_tokens}", flush=True)
    print("strategy\tseed\tk\ttrain_loss\tval_loss\taccuracy\ttrain_s\teval_s\tmlflow_run", flush=True)

    rows_out = []

    def on_run(row, result):
        rows_out.append(row)
        acc = row.get("accuracy")
        print(f"{row['strategy']}\t{row['seed']}\t{row['k']}\t{row.get('train_loss_final') or float('nan'):.4f}\t"
              f"{row['val_loss']:.4f}\t{'-' if acc is None else f'{acc:.3f}'}\t"
              f"{row.get('train_seconds') or 0:.0f}\t{row.get('eval_seconds') or 0:.0f}\t{row.get('mlflow_run_id')}",
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows_out, "partial": True}, indent=1, default=str))

    comp = compare_strategies(lm, train, val, values=values, out_root=args.out, k=k, strategies=strategies,
                              seeds=seeds, config=config, eval_config=ecfg, include_base=not args.no_base,
                              tracker=tracker, source=f"{args.task}-train (task seed {args.task_seed})",
                              on_run=on_run)
    total = time.perf_counter() - t_all
    print()
    print(f"k = {k} of {len(train)} ({args.p:g}%), {args.steps} steps x batch {args.batch_size}, "
          f"{len(seeds)} seeds; total {total / 60:.1f} min")
    print()
    print(comp.markdown)
    print()
    print(f"MLflow comparison run: {comp.mlflow_run_id} ({tracker.tracking_uri})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": comp.rows, "summary": comp.summary, "k": k,
                                               "args": vars(args), "seconds": total}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
