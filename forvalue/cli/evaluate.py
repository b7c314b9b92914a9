"""``forvalue eval``: evaluate a (fine-tuned) model: loss, perplexity, accuracy, tracked in MLflow.

    forvalue eval --adapter ft/top5 --data val.jsonl --extractor last-number
"""

from __future__ import annotations

from pathlib import Path

from . import options as o
from .finetune import add_compute_options, add_eval_options, add_tracking_options, eval_config, tracker
from .output import check_out, write_table


def register(sub, parents) -> None:
    p = sub.add_parser("eval", parents=parents, help="evaluate a (fine-tuned) model: loss, perplexity, accuracy",
                       description="Valuation loss and perplexity on response tokens, and task accuracy by greedy "
                                   "decoding with an answer extractor; logged as an MLflow run (a child of the "
                                   "fine-tune run when --adapter carries one).")
    p.add_argument("--data", required=True,
                   help="evaluation data (prompt/response or messages; an 'answer' column is used when present)")
    p.add_argument("--model", default=None, help="base model (default: the one recorded with --adapter, else 'default')")
    p.add_argument("--adapter", default=None, help="a `forvalue finetune` output folder (LoRA adapter or full model)")
    p.add_argument("--finetune-run-id", default=None, help="MLflow run to link to (default: the adapter's)")
    p.add_argument("--out", default=None, help="write per-sample predictions (.jsonl, .parquet or .csv)")
    p.add_argument("--plain", action="store_true", help="do not apply the tokenizer's chat template")
    p.add_argument("--max-length", type=int, default=None)
    add_compute_options(p)
    add_eval_options(p, accuracy_default=True)
    add_tracking_options(p)
    o.add_column_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.finetune import run_evaluation

    o.set_threads(args)
    out = check_out(args.out) if args.out else None
    if args.model is None and args.adapter is None:
        args.model = "default"
    data = o.load_data(args.data, args)
    ecfg = eval_config(args, chat_template=not args.plain, max_length=args.max_length)
    track = tracker(args)
    r = run_evaluation(args.model, data.samples, config=ecfg, adapter=args.adapter, tracker=track,
                       finetune_run_id=args.finetune_run_id, dataset_name=Path(args.data).stem, device=args.device,
                       dtype=args.dtype or "auto")
    m = r.result.metrics
    line = f"{len(data.samples)} samples, model {r.model_fingerprint}: loss {m['val_loss']:.4f}, " \
           f"perplexity {m['val_perplexity']:.3f}"
    if "accuracy" in m:
        line += f", accuracy {m['accuracy']:.3f} ({int(m['n_correct'])}/{int(m['n_eval'])}, {args.extractor})"
    print(line)
    if out and r.result.accuracy is not None:
        write_table(r.result.accuracy.predictions, out)
        print(f"predictions -> {args.out}")
    if r.mlflow_run_id:
        link = f", child of fine-tune run {r.finetune_run_id}" if r.finetune_run_id else ""
        print(f"MLflow run {r.mlflow_run_id}{link} in {track.tracking_uri} ({r.mlflow_url})")
    return 0
