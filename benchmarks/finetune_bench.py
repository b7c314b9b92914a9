"""Fine-tune on a For-Value selection's top-p% vs random-p% vs bottom-p%, evaluated on held-out data.

    .venv/bin/python benchmarks/finetune_bench.py [--selection balanced] [--seeds 0,1,2] [--p 5] ...

A curated subset is chosen to lower its valuation set's loss, so that loss flatters it. This
benchmark evaluates every fine-tune on a held-out evaluation set of the same task that the
selection never saw, and reports the valuation-set loss beside it.

1. The DataInf math-with-reasoning task (``math-reason``; 10 classes) is generated with
   ``--task-seed`` as ``make_task(task, seed, n_train_per_class, n_val_per_class +
   n_eval_per_class)``: default 90 training samples per class, and per class 20 more, of which the
   first ``--n-val-per-class`` (10) form the valuation set and the rest (``--n-eval-per-class``, 10)
   the evaluation set. Evaluation samples whose content id (``Sample.sample_id``) equals a training
   or valuation sample's are dropped and counted (``n_eval_removed``; expected 0).
   (The task draws every class's numbers in one stream, so the training set differs from that of
   a run without an evaluation set: ``--n-eval-per-class 0`` gives the old setup.)
2. Every training sample is featurized with For-Value (``sparse``, response positions, the bundled
   default model) together with the valuation set; features are cached in ``--store``. The
   selection strategy ``--selection`` (:data:`forvalue.curation.selection.STRATEGIES`, default
   ``balanced``) orders the training samples from those features
   (:func:`forvalue.curation.selection.rank_features`); ``raw-mean`` is the raw For-Value score. The
   evaluation set is never featurized.
3. For every seed and strategy (top / random / bottom p% of that order, same k; ``full``: every
   training sample), a LoRA fine-tune with the same steps, batch size and hyper-parameters
   (:func:`forvalue.training.finetune.compare_strategies`), then evaluation on the held-out evaluation set
   (``val_loss``: mean NLL per response token, on ``--loss-limit`` evenly spaced samples; and, unless
   ``--no-accuracy``, accuracy: greedy decoding, exact match of the final number, on
   ``--accuracy-limit`` evenly spaced samples), and the loss of the same fine-tuned model on the
   valuation set that chose the subset (``valuation_loss``, the adapter merged into a copy of the
   base model as ``load_finetuned`` does; the base model once). The seed sets LoRA init, data order
   and the random subset; the top/bottom subsets do not change with the seed.
4. Prints the subsets' class mix, every run, the library's comparison table (on the evaluation
   set), and two Markdown tables of mean ± std (ddof=1) over seeds per strategy: loss on the
   held-out evaluation set and loss on the valuation set; then each strategy minus random on both
   sets, in units of the pooled sd. Every run is an MLflow run (children of one comparison run) in
   the tracking store (``--tracking-uri``, default ``sqlite:///<cwd>/.forvalue/mlflow.db``),
   evaluated on the evaluation set (``eval_*`` params: source ``file``, not seen by the
   selection); the valuation-set loss is logged on each fine-tune run as ``valuation_set_loss``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forvalue.curation.selection import DEFAULT_STRATEGY, STRATEGIES as SELECTIONS  # noqa: E402  (numpy only)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sd with ddof=1 (None for one value), n)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, sd, len(vals)


def _pooled_sd(a: tuple, b: tuple) -> float | None:
    """Pooled sd of two (mean, sd, n) groups: sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2))."""
    (_, s1, n1), (_, s2, n2) = a, b
    dof = (n1 - 1 if s1 is not None else 0) + (n2 - 1 if s2 is not None else 0)
    if dof <= 0:
        return None
    return math.sqrt(((n1 - 1) * (s1 or 0.0) ** 2 + (n2 - 1) * (s2 or 0.0) ** 2) / dof)


def _split_by_class(val_rec: list[dict], n_val: int) -> tuple[list[dict], list[dict]]:
    """Each class's first ``n_val`` records (in task order) to the valuation set, the rest to the
    evaluation set; both keep the task's class-by-class order."""
    seen: collections.Counter = collections.Counter()
    val, ev = [], []
    for r in val_rec:
        (val if seen[r["class"]] < n_val else ev).append(r)
        seen[r["class"]] += 1
    return val, ev


def _loss_tables(rows: list[dict], order: list[str], eval_title: str = "held-out evaluation set"
                 ) -> tuple[list[dict], str, list[dict]]:
    """Per strategy mean ± sd of the held-out loss and of the valuation-set loss (Markdown), and each
    strategy minus random on both sets in pooled-sd units."""
    sets = (("eval", "val_loss", eval_title), ("valuation", "valuation_loss", "valuation set"))
    names = [s for s in order if any(r["strategy"] == s for r in rows)]
    stats: dict = {}
    summary = []
    for name in names:
        rs = [r for r in rows if r["strategy"] == name]
        out = {"strategy": name, "k": rs[0]["k"], "runs": len(rs), "seeds": [r["seed"] for r in rs]}
        for key, field, _ in sets:
            m = _mean_sd([r.get(field) for r in rs])
            stats[name, key] = m
            out[f"{key}_loss_mean"], out[f"{key}_loss_sd"], out[f"{key}_loss_n"] = m
            out[f"{key}_loss_values"] = [r.get(field) for r in rs]
        summary.append(out)

    def fmt(mean, sd):
        return "-" if mean is None else f"{mean:.4f} ± {'-' if sd is None else f'{sd:.4f}'}"

    md = []
    for key, _, title in sets:
        md += [f"Loss on the {title} (mean NLL per response token; mean ± sd over seeds, ddof=1):", "",
               "| strategy | k | runs | loss (mean ± sd) |", "|---|---:|---:|---:|"]
        md += [f"| {s['strategy']} | {s['k']} | {s['runs']} | {fmt(s[f'{key}_loss_mean'], s[f'{key}_loss_sd'])} |"
               for s in summary]
        md.append("")
    diffs = []
    if "random" in names:
        md += ["Strategy minus random (negative: lower loss than random), in units of the pooled sd of the two:", "",
               "| strategy | set | diff | pooled sd | diff / pooled sd |", "|---|---|---:|---:|---:|"]
        for name in names:
            if name in ("random", "base"):
                continue
            for key, _, title in sets:
                a, b = stats[name, key], stats["random", key]
                if a[0] is None or b[0] is None:
                    continue
                diff = a[0] - b[0]
                psd = _pooled_sd(a, b)
                d = diff / psd if psd else None
                diffs.append({"strategy": name, "vs": "random", "set": key, "diff": diff, "pooled_sd": psd,
                              "diff_in_sd": d})
                md.append(f"| {name} | {title} | {diff:+.4f} | {'-' if psd is None else f'{psd:.4f}'} | "
                          f"{'-' if d is None else f'{d:+.2f}'} |")
    return summary, "\n".join(md).rstrip(), diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="math-reason")
    ap.add_argument("--task-seed", type=int, default=0)
    ap.add_argument("--n-train-per-class", type=int, default=90)
    ap.add_argument("--n-val-per-class", type=int, default=10, help="valuation samples per class (the selection's)")
    ap.add_argument("--n-eval-per-class", type=int, default=10,
                    help="held-out evaluation samples per class, never seen by the selection (0: evaluate on the "
                         "valuation set, as before)")
    ap.add_argument("--p", type=float, default=5.0, help="subset size in percent of the training set")
    ap.add_argument("--selection", default=DEFAULT_STRATEGY, choices=list(SELECTIONS),
                    help="selection strategy whose order top/bottom take from (raw-mean: the raw For-Value score)")
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
    ap.add_argument("--loss-limit", type=int, default=0,
                    help="evaluation (and valuation) samples for the loss (0: all)")
    ap.add_argument("--accuracy-limit", type=int, default=50, help="evaluation samples for accuracy (0: all)")
    ap.add_argument("--no-accuracy", action="store_true", help="loss only: skip greedy decoding (much faster)")
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
    from forvalue.data.samples import samples_from_records
    from forvalue.training.evaluate import EvalConfig, evaluate
    from forvalue.valuation.features import FeatureConfig
    from forvalue.training.finetune import (STRATEGIES, TrainConfig, compare_strategies, run_evaluation, select_subset,
                                            subset_size)
    from forvalue.data.holdout import EvalSet, from_valuation
    from forvalue.models.loading import load_model
    from forvalue.store.feature_store import FeatureStore
    from forvalue.training.tracking import Tracker, subset_digest
    from forvalue.valuator import Valuator

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    t_all = time.perf_counter()

    # ---------------------------------------------------------------- data: training, valuation, evaluation
    n_ev = args.n_eval_per_class
    train_rec, all_val_rec = make_task(args.task, args.task_seed, args.n_train_per_class,
                                       args.n_val_per_class + n_ev)
    val_rec, eval_rec = _split_by_class(all_val_rec, args.n_val_per_class)
    train = samples_from_records(train_rec, source=f"{args.task}-train").samples
    val = samples_from_records(val_rec, source=f"{args.task}-val").samples
    print(f"# {args.task}: {len(train)} training / {len(val)} valuation / {len(eval_rec)} held-out evaluation "
          f"samples (task seed {args.task_seed})")
    if n_ev:
        ev_all = samples_from_records(eval_rec, source=f"{args.task}-eval").samples
        train_ids, val_ids = {s.sample_id for s in train}, {s.sample_id for s in val}
        in_train = sum(s.sample_id in train_ids for s in ev_all)
        in_val = sum(s.sample_id in val_ids for s in ev_all)
        keep = [i for i, s in enumerate(ev_all) if s.sample_id not in train_ids and s.sample_id not in val_ids]
        ev_samples = [ev_all[i] for i in keep]
        ev_classes = [eval_rec[i]["class"] for i in keep]
        overlap = len(ev_all) - len(keep)
        eset = EvalSet("file", f"{args.task}-eval (task seed {args.task_seed}, {n_ev} per class after the first "
                               f"{args.n_val_per_class} valuation samples)",
                       subset_digest([s.sample_id for s in ev_samples]), ev_samples, n_removed=overlap,
                       n_selection=len(val))
        print(f"# evaluation set: content overlap with training {in_train}, with valuation {in_val}; "
              f"{overlap} dropped, {len(ev_samples)} kept (class mix {dict(collections.Counter(ev_classes))})")
    else:
        eset = from_valuation(val, name=f"{args.task}-val", version=subset_digest([s.sample_id for s in val]))
        in_train = in_val = overlap = 0
    for w in eset.warnings:
        print(f"# warning: {w}")
    print(f"# evaluation: {eset.describe()}; params {json.dumps(eset.params())}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")

    t = time.perf_counter()
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"# model {lm.fingerprint.id} on {lm.device} ({time.perf_counter() - t:.1f}s)", flush=True)

    # ---------------------------------------------------------------- scores and the selection's order
    t = time.perf_counter()
    v = Valuator(lm, FeatureConfig(positions="response"), store=FeatureStore(args.store), batch_size=8)
    tr, va = v.featurize(train), v.featurize(val)
    res = v.score_features(tr.features, va.features)
    values = res.values
    print(f"# For-Value features and scores: {time.perf_counter() - t:.1f}s "
          f"(computed {tr.computed + va.computed}, reused {tr.reused + va.reused})", flush=True)
    t = time.perf_counter()
    ranking = v.rank(tr.features, va.features, args.selection)
    order = ranking.order
    print(f"# selection {args.selection}: order of {len(order)} in {time.perf_counter() - t:.1f}s "
          f"({json.dumps({key: x for key, x in ranking.info.items() if isinstance(x, (int, float, str))})})",
          flush=True)
    k = subset_size(len(train), p=args.p)
    classes = [r["class"] for r in train_rec]
    mixes = {}
    for st in ("top", "bottom"):
        idx = select_subset(len(train), st, values=values, k=k, order=order)
        mixes[st] = dict(collections.Counter(classes[i] for i in idx).most_common())
        print(f"# {st}-{k} ({args.selection}) class mix: {mixes[st]}")
    idx = select_subset(len(train), "random", k=k, seed=seeds[0])
    mixes[f"random-seed{seeds[0]}"] = dict(collections.Counter(classes[i] for i in idx).most_common())
    print(f"# random-{k} (seed {seeds[0]}) class mix: {mixes[f'random-seed{seeds[0]}']}", flush=True)
    top_idx = [int(i) for i in order[:k]]

    # ---------------------------------------------------------------- fine-tunes
    config = TrainConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         lora_r=args.lora_r, lora_layers=args.lora_layers or None)
    ecfg = EvalConfig(accuracy=not args.no_accuracy, extractor="last-number", max_new_tokens=args.max_new_tokens,
                      loss_limit=args.loss_limit or None, accuracy_limit=args.accuracy_limit or None,
                      batch_size=8, gen_batch_size=32)
    vcfg = EvalConfig(accuracy=False, loss_limit=args.loss_limit or None, batch_size=8)   # valuation-set loss
    eval_dtype = "float32" if args.method == "full" else args.dtype   # as compare_strategies trains a full run
    tracker = Tracker(args.tracking_uri, experiment="forvalue-finetune-bench")
    print(f"# tracking: {tracker.tracking_uri} (experiment {tracker.experiment})")
    print(f"# train: {json.dumps(config.to_params())}")
    acc = "no accuracy" if args.no_accuracy else (f"accuracy on {args.accuracy_limit or len(eset.samples)}, "
                                                 f"max_new_tokens {args.max_new_tokens}")
    print(f"# eval: loss on {args.loss_limit or len(eset.samples)} evenly spaced evaluation samples, {acc}; "
          f"valuation-set loss on {args.loss_limit or len(val)}", flush=True)
    print("strategy\tseed\tk\ttrain_loss\teval_loss\tvaluation_loss\taccuracy\ttrain_s\teval_s\tmlflow_run",
          flush=True)

    rows_out = []

    def on_run(row, result):
        t0 = time.perf_counter()
        if result is None:   # the base model, not fine-tuned
            row["valuation_loss"] = evaluate(lm, val, vcfg).metrics["val_loss"]
        else:
            ev = run_evaluation(lm, val, adapter=result.output_dir, config=vcfg, tracker=None, dtype=eval_dtype)
            row["valuation_loss"] = ev.result.metrics["val_loss"]
            if row.get("mlflow_run_id"):
                tracker.client.log_metric(row["mlflow_run_id"], "valuation_set_loss", row["valuation_loss"])
        row["valuation_eval_seconds"] = time.perf_counter() - t0
        rows_out.append(row)
        a = row.get("accuracy")
        print(f"{row['strategy']}\t{row['seed']}\t{row['k']}\t{row.get('train_loss_final') or float('nan'):.4f}\t"
              f"{row['val_loss']:.4f}\t{row['valuation_loss']:.4f}\t{'-' if a is None else f'{a:.3f}'}\t"
              f"{row.get('train_seconds') or 0:.0f}\t{(row.get('eval_seconds') or 0) + row['valuation_eval_seconds']:.0f}"
              f"\t{row.get('mlflow_run_id')}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows_out, "partial": True}, indent=1, default=str))

    comp = compare_strategies(lm, train, eset.samples, values=values, order=order, selection=args.selection,
                              out_root=args.out, k=k, strategies=strategies, seeds=seeds, config=config,
                              eval_config=ecfg, include_base=not args.no_base, tracker=tracker,
                              source=f"{args.task}-train (task seed {args.task_seed})", on_run=on_run,
                              evaluation=eset.params())
    total = time.perf_counter() - t_all
    eval_title = "held-out evaluation set" if n_ev else "evaluation set (= the valuation set, seen by the selection)"
    summary, md, diffs = _loss_tables(comp.rows, ["base", *STRATEGIES], eval_title)
    print()
    print(f"k = {k} of {len(train)} ({args.p:g}%, selection {args.selection}), {args.steps} steps x batch "
          f"{args.batch_size}, {len(seeds)} seeds; evaluation set {len(eset.samples)} samples ({eset.source}), valuation "
          f"set {len(val)}; total {total / 60:.1f} min")
    print()
    print(f"Comparison table (compare_strategies; on the {eval_title}):")
    print()
    print(comp.markdown)
    print()
    print(md)
    print()
    print(f"MLflow comparison run: {comp.mlflow_run_id} ({tracker.tracking_uri})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": comp.rows, "summary": comp.summary, "loss_summary": summary, "vs_random": diffs,
            "markdown": md, "k": k, "selection": args.selection, "selection_info": ranking.info,
            "class_mix": mixes, "top_indices": top_idx, "top_sample_ids": [train[i].sample_id for i in top_idx],
            "evaluation": eset.params() | {"overlap_train": in_train, "overlap_valuation": in_val,
                                           "n_val": len(val), "n_train": len(train)},
            "mlflow_run_id": comp.mlflow_run_id, "tracking_uri": tracker.tracking_uri,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "args": vars(args), "seconds": total}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
