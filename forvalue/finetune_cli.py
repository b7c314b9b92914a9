"""``forvalue finetune`` and ``forvalue eval``: fine-tune on a (curated) subset, evaluate, track in MLflow.

    forvalue finetune --train train.jsonl --subset-scores scores.parquet --top-p 5 --val val.jsonl --out ft/top5
    forvalue finetune --train train.jsonl --strategy random --k 45 --seed 1 --out ft/random45
    forvalue eval --adapter ft/top5 --data val.jsonl --extractor last-number

``forvalue.cli`` registers both with :func:`add_finetune_parsers`; ``python -m forvalue.finetune_cli``
runs them on their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataError

# forvalue.cli's column options and reader are imported where they are used, so that forvalue.cli
# may import this module at its top (no import cycle).


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $FORVALUE_MLFLOW_URI, $MLFLOW_TRACKING_URI, "
                        "else sqlite:///<cwd>/.forvalue/mlflow.db)")
    g.add_argument("--experiment", default="forvalue-finetune", help="MLflow experiment name")
    g.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def _add_compute_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, mps")
    g.add_argument("--dtype", default=None,
                   help="model dtype; default: fp32 on CPU / bf16 on GPU (LoRA), fp32 (full fine-tuning)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def _add_eval_options(p: argparse.ArgumentParser, *, accuracy_default: bool) -> None:
    g = p.add_argument_group("evaluation")
    if accuracy_default:
        g.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                       help="valuation loss and perplexity only (no generation)")
    else:
        g.add_argument("--accuracy", action="store_true", help="also task accuracy by greedy decoding")
    g.add_argument("--extractor", default="last-number",
                   help="answer extractor: last-number (final number, math tasks), exact, or regex:PATTERN "
                        "(last match; its first group if any)")
    g.add_argument("--answer-field", default="answer",
                   help="column with the reference answer (else the extractor is applied to the response)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--eval-limit", type=int, default=0, help="accuracy on n evenly spaced samples (0: all)")
    g.add_argument("--eval-batch-size", type=int, default=16, help="prompts per generation batch")


def _eval_config(args, *, chat_template: bool, max_length):
    from .evaluate import EvalConfig, parse_extractor

    parse_extractor(args.extractor)  # fail early on a bad pattern
    return EvalConfig(accuracy=args.accuracy, extractor=args.extractor, answer_field=args.answer_field or None,
                      max_new_tokens=args.max_new_tokens, accuracy_limit=args.eval_limit or None,
                      gen_batch_size=args.eval_batch_size, chat_template=chat_template, max_length=max_length)


def _tracker(args):
    if args.no_track:
        return None
    from .tracking import Tracker

    return Tracker(args.tracking_uri, experiment=args.experiment)


def _set_threads(args) -> None:
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def _choose(args) -> tuple[str, int | None, float | None]:
    """(strategy, k, p) from --strategy/--k/--p and the --top-p/--bottom-p/--top-k shorthands."""
    shorthand = [(n, v) for n, v in (("top_p", args.top_p), ("bottom_p", args.bottom_p), ("top_k", args.top_k))
                 if v is not None]
    if len(shorthand) > 1:
        raise SystemExit("forvalue finetune: give only one of --top-p, --bottom-p, --top-k")
    strategy, k, p = args.strategy, args.k, args.p
    if shorthand:
        name, v = shorthand[0]
        if strategy not in (None, name.split("_")[0]) or k is not None or p is not None:
            raise SystemExit(f"forvalue finetune: --{name.replace('_', '-')} already sets the strategy and size")
        strategy = name.split("_")[0]
        k, p = (int(v), None) if name == "top_k" else (None, float(v))
    if strategy is None:
        strategy = "full" if k is None and p is None else ("top" if args.subset_scores else "random")
    if strategy != "full" and k is None and p is None:
        raise SystemExit(f"forvalue finetune: strategy {strategy} needs --k N or --p PERCENT")
    if k is not None and p is not None:
        raise SystemExit("forvalue finetune: give --k or --p, not both")
    return strategy, k, p


# ----------------------------------------------------------------------------- commands
def cmd_finetune(args) -> int:
    from .finetune import SubsetInfo, TrainConfig, finetune, select_subset, subset_size

    from .cli import _load

    _set_threads(args)
    strategy, k, p = _choose(args)
    data = _load(args.train, args)
    train = data.samples
    order = None
    if strategy in ("top", "bottom"):
        from .curation import ranking_from_scores

        if not args.subset_scores:
            raise SystemExit(f"forvalue finetune: strategy {strategy} needs --subset-scores (the output of `forvalue score`)")
        size = subset_size(len(train), k=k, p=p)
        ranking = ranking_from_scores(train, args.subset_scores, args.selection, store=args.store,
                                      limit=size if strategy == "top" else None)
        order = ranking.order
    idx = select_subset(len(train), strategy, k=k, p=p, seed=args.seed, order=order)
    subset = [train[i] for i in idx]
    val = _load(args.val, args).samples if args.val else None
    config = TrainConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                         lora_targets=args.lora_targets, lora_layers=args.lora_layers or None,
                         chat_template=not args.plain, max_length=args.max_length,
                         eval_every=args.eval_every)
    ecfg = _eval_config(args, chat_template=not args.plain, max_length=args.max_length) if val else None
    selection = args.selection if strategy in ("top", "bottom") else None
    info = SubsetInfo(strategy=strategy, k=len(idx), p=p, source=str(Path(args.train).resolve()),
                      n_total=len(train), name=f"{Path(args.train).stem}-{strategy}-{len(idx)}", selection=selection)
    tracker = _tracker(args)
    res = finetune(args.model, subset, out_dir=args.out, config=config, val=val, eval_config=ecfg, tracker=tracker,
                   subset=info, device=args.device, dtype=args.dtype, overwrite=args.overwrite,
                   progress=not args.quiet)
    m = res.metrics
    how = f"{strategy}, {selection}" if selection else strategy
    print(f"fine-tuned ({config.method}) on {len(subset)} of {len(train)} samples ({how}"
          f"{'' if strategy == 'full' else f', seed {args.seed}' if strategy == 'random' else ''}), "
          f"{config.steps} steps x batch {config.batch_size}: train loss {m['train_loss_final']:.4f} "
          f"({m['train_seconds']:.0f}s)")
    if val:
        line = f"valuation: loss {m['val_loss']:.4f}, perplexity {m['val_perplexity']:.3f}"
        if "accuracy" in m:
            line += f", accuracy {m['accuracy']:.3f} ({int(m['n_correct'])}/{int(m['n_eval'])})"
        print(line)
    print(f"{'adapter' if config.method == 'lora' else 'model'}: {res.output_dir}")
    if res.mlflow_run_id:
        print(f"MLflow run {res.mlflow_run_id} in {tracker.tracking_uri} ({res.mlflow_url})")
    return 0


def cmd_eval(args) -> int:
    from .cli import _load
    from .finetune import eval_run

    _set_threads(args)
    if args.model is None and args.adapter is None:
        args.model = "default"
    data = _load(args.data, args)
    ecfg = _eval_config(args, chat_template=not args.plain, max_length=args.max_length)
    tracker = _tracker(args)
    r = eval_run(args.model, data.samples, config=ecfg, adapter=args.adapter, tracker=tracker,
                 finetune_run_id=args.finetune_run_id, dataset_name=Path(args.data).stem, device=args.device,
                 dtype=args.dtype or "auto")
    m = r.result.metrics
    line = f"{len(data.samples)} samples, model {r.model_fingerprint}: loss {m['val_loss']:.4f}, " \
           f"perplexity {m['val_perplexity']:.3f}"
    if "accuracy" in m:
        line += f", accuracy {m['accuracy']:.3f} ({int(m['n_correct'])}/{int(m['n_eval'])}, {args.extractor})"
    print(line)
    if args.out and r.result.accuracy is not None:
        from .cli import write_table

        write_table(r.result.accuracy.predictions, Path(args.out))
        print(f"predictions -> {args.out}")
    if r.mlflow_run_id:
        link = f", child of fine-tune run {r.finetune_run_id}" if r.finetune_run_id else ""
        print(f"MLflow run {r.mlflow_run_id}{link} in {tracker.tracking_uri} ({r.mlflow_url})")
    return 0


def _guard(fn):
    """FinetuneError / TrackingError / bad extractor: one line, exit status 2 (as the core CLI does
    for DataError and ModelError)."""

    def run(args) -> int:
        from .finetune import FinetuneError
        from .tracking import TrackingError

        try:
            return fn(args)
        except (FinetuneError, TrackingError) as e:
            print(f"forvalue: error: {e}", file=sys.stderr)
            return 2
        except ValueError as e:
            if type(e) is ValueError and "extractor" in str(e):
                print(f"forvalue: error: {e}", file=sys.stderr)
                return 2
            raise

    run.__name__ = fn.__name__
    return run


# ----------------------------------------------------------------------------- parsers
def add_finetune_parsers(subparsers) -> None:
    """Register ``finetune`` and ``eval`` on the ``forvalue`` command's subparsers."""
    from .cli import _add_column_options

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    p = subparsers.add_parser("finetune", parents=[common], help="fine-tune a causal LM on a (curated) subset, tracked in MLflow",
                              description="Supervised fine-tuning (loss on response tokens only) on a subset chosen by "
                                          "For-Value scores (top/bottom), at random, or the full file.")
    p.add_argument("--train", required=True, help="training data (JSONL, Parquet, CSV or HF save_to_disk folder)")
    p.add_argument("--val", default=None, help="valuation data: loss/perplexity (and --accuracy) after training")
    p.add_argument("--out", required=True, help="output folder: the LoRA adapter (or the full model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    g = p.add_argument_group("subset")
    g.add_argument("--subset-scores", default=None, help="scores of the training file (`forvalue score` output)")
    g.add_argument("--strategy", choices=["top", "random", "bottom", "full"], default=None,
                   help="default: full without --k/--p; top with --subset-scores; random otherwise")
    from .selection import DEFAULT_STRATEGY, STRATEGIES

    g.add_argument("--selection", choices=list(STRATEGIES), default=DEFAULT_STRATEGY,
                   help="the order top / bottom take from (default %(default)s; see `forvalue select --help`); "
                        "raw-mean and cosine-mean need only the scores table, the others the feature store it records")
    g.add_argument("--store", default=None, help="feature store folder (default: the one the scores table records)")
    g.add_argument("--k", type=int, default=None, help="subset size (samples)")
    g.add_argument("--p", type=float, default=None, help="subset size (percent of the training set)")
    g.add_argument("--top-p", type=float, default=None, help="shorthand for --strategy top --p P")
    g.add_argument("--bottom-p", type=float, default=None, help="shorthand for --strategy bottom --p P")
    g.add_argument("--top-k", type=int, default=None, help="shorthand for --strategy top --k K")
    g = p.add_argument_group("training")
    g.add_argument("--model", default="default", help="base model: 'default', a folder, a .gguf file or a hub id")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--lora", dest="method", action="store_const", const="lora", help="LoRA adapter (default)")
    m.add_argument("--full", dest="method", action="store_const", const="full", help="full fine-tuning")
    p.set_defaults(method="lora")
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--lr", type=float, default=None, help="default 1e-3 (LoRA), 5e-5 (full)")
    g.add_argument("--seed", type=int, default=0, help="LoRA init, data order and the random subset")
    g.add_argument("--lora-r", type=int, default=8)
    g.add_argument("--lora-alpha", type=int, default=16)
    g.add_argument("--lora-targets", default="all-linear", help="all-linear or comma-separated module names")
    g.add_argument("--lora-layers", type=int, default=0, help="LoRA in the last n layers only (0: all)")
    g.add_argument("--eval-every", type=int, default=0, help="valuation loss every n steps (0: at the end)")
    g.add_argument("--plain", action="store_true", help="do not apply the tokenizer's chat template")
    g.add_argument("--max-length", type=int, default=None)
    _add_compute_options(p)
    _add_eval_options(p, accuracy_default=False)
    _add_tracking_options(p)
    _add_column_options(p)
    p.set_defaults(func=_guard(cmd_finetune))

    p = subparsers.add_parser("eval", parents=[common], help="evaluate a (fine-tuned) model: loss, perplexity, accuracy",
                              description="Valuation loss and perplexity on response tokens, and task accuracy by "
                                          "greedy decoding with an answer extractor; logged as an MLflow run (a "
                                          "child of the fine-tune run when --adapter carries one).")
    p.add_argument("--data", required=True, help="evaluation data (prompt/response or messages; an 'answer' column is used when present)")
    p.add_argument("--model", default=None, help="base model (default: the one recorded with --adapter, else 'default')")
    p.add_argument("--adapter", default=None, help="a `forvalue finetune` output folder (LoRA adapter or full model)")
    p.add_argument("--finetune-run-id", default=None, help="MLflow run to link to (default: the adapter's)")
    p.add_argument("--out", default=None, help="write per-sample predictions (.jsonl, .parquet or .csv)")
    p.add_argument("--plain", action="store_true", help="do not apply the tokenizer's chat template")
    p.add_argument("--max-length", type=int, default=None)
    _add_compute_options(p)
    _add_eval_options(p, accuracy_default=True)
    _add_tracking_options(p)
    _add_column_options(p)
    p.set_defaults(func=_guard(cmd_eval))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forvalue", description="fine-tune and evaluate on curated subsets")
    sub = parser.add_subparsers(dest="command", required=True)
    add_finetune_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .cli import run_command

    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
