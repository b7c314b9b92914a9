"""``forvalue finetune``: fine-tune on a (curated) subset, evaluate, track in MLflow.

    forvalue finetune --train train.jsonl --subset-scores scores.parquet --top-p 5 --eval heldout.jsonl --out ft/top5
    forvalue finetune --train train.jsonl --strategy random --subset-size 45 --seed 1 --out ft/random45
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Deprecated, add_options, from_args
from ..training.finetune import TrainConfig
from . import options as o
from .options import UsageError


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $FORVALUE_MLFLOW_URI, $MLFLOW_TRACKING_URI, "
                        "else sqlite:///<cwd>/.forvalue/mlflow.db)")
    g.add_argument("--experiment", default="forvalue-finetune", help="MLflow experiment name")
    g.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def add_compute_options(p: argparse.ArgumentParser) -> None:
    from ..models.loading import ModelConfig

    g = p.add_argument_group("compute")
    add_options(g, ModelConfig, include=("device",))
    g.add_argument("--dtype", default=None,
                   help="model dtype; default: fp32 on CPU / bf16 on GPU (LoRA), fp32 (full fine-tuning)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def add_eval_options(p: argparse.ArgumentParser, *, accuracy_default: bool) -> None:
    from ..training.evaluate import EvalConfig

    g = p.add_argument_group("evaluation")
    if accuracy_default:
        g.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                       help="valuation loss and perplexity only (no generation)")
    else:
        g.add_argument("--accuracy", action="store_true", help="also task accuracy by greedy decoding")
    add_options(g, EvalConfig)


def eval_config(args, *, chat_template: bool, max_length):
    from ..training.evaluate import EvalConfig, parse_extractor

    parse_extractor(args.extractor)  # fail early on a bad pattern
    return from_args(EvalConfig, args, accuracy=args.accuracy, answer_field=args.answer_field or None,
                     chat_template=chat_template, max_length=max_length)


def tracker(args):
    if args.no_track:
        return None
    from ..training.tracking import Tracker

    return Tracker(args.tracking_uri, experiment=args.experiment)


def register(sub, parents) -> None:
    from ..curation.selection import DEFAULT_STRATEGY, STRATEGIES

    p = sub.add_parser("finetune", parents=parents, help="fine-tune a causal LM on a (curated) subset, tracked in MLflow",
                       description="Supervised fine-tuning (loss on response tokens only) on a subset chosen by "
                                   "For-Value (top/bottom of a selection strategy's order), at random, or the full file.")
    p.add_argument("--train", required=True, help="training data (JSONL, Parquet, CSV or HF save_to_disk folder)")
    p.add_argument("--eval", default=None, metavar="FILE",
                   help="evaluation data the selection never saw: loss/perplexity (and --accuracy) after training; "
                        "samples also in the valuation set that scored --subset-scores are left out")
    p.add_argument("--val", default=None,
                   help="evaluate on this file when there is no --eval; when it is the valuation set that chose the "
                        "subset its losses favour the subset (a warning says so)")
    p.add_argument("--out", required=True, help="output folder: the LoRA adapter (or the full model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    g = p.add_argument_group("subset")
    g.add_argument("--subset-scores", default=None, help="scores of the training file (`forvalue score` output)")
    g.add_argument("--strategy", choices=["top", "random", "bottom", "full"], default=None,
                   help="which samples: top / bottom of the selection order, random, or full (every sample); "
                        "default: full without a size; top with --subset-scores; random otherwise")
    g.add_argument("--subset-size", "--k", dest="k", type=int, default=None, action=Deprecated,
                   new_flag="--subset-size", old=("--k",), help="subset size in samples (--k is its deprecated name)")
    g.add_argument("--subset-percent", "--p", dest="p", type=float, default=None, action=Deprecated,
                   new_flag="--subset-percent", old=("--p",),
                   help="subset size in percent of the training set (--p is its deprecated name)")
    g.add_argument("--top-p", type=float, default=None, help="shorthand for --strategy top --subset-percent P")
    g.add_argument("--bottom-p", type=float, default=None, help="shorthand for --strategy bottom --subset-percent P")
    g.add_argument("--top-k", type=int, default=None, help="shorthand for --strategy top --subset-size K")
    g.add_argument("--selection", choices=list(STRATEGIES), default=DEFAULT_STRATEGY,
                   help="the order top / bottom take from (default %(default)s; see `forvalue select --help`); "
                        "raw-mean and cosine-mean need only the scores table, the others the feature store it records")
    g.add_argument("--store", default=None, help="feature store folder (default: the one the scores table records)")
    g = p.add_argument_group("training")
    from ..models.loading import ModelConfig

    add_options(g, ModelConfig, include=("model",))
    m = g.add_mutually_exclusive_group()
    m.add_argument("--lora", dest="method", action="store_const", const="lora", help="a LoRA adapter (default)")
    m.add_argument("--full-finetune", "--full", dest="method", action=Deprecated, store_const="full",
                   new_flag="--full-finetune", old=("--full",),
                   help="full fine-tuning of every weight (--full is its deprecated name)")
    p.set_defaults(method="lora")
    add_options(g, TrainConfig)
    add_compute_options(p)
    add_eval_options(p, accuracy_default=False)
    add_tracking_options(p)
    o.add_column_options(p)
    p.set_defaults(func=run)


def choose(args) -> tuple[str, int | None, float | None]:
    """(strategy, k, p) from --strategy/--subset-size/--subset-percent and the --top-p/--bottom-p/--top-k
    shorthands."""
    shorthand = [(n, v) for n, v in (("top_p", args.top_p), ("bottom_p", args.bottom_p), ("top_k", args.top_k))
                 if v is not None]
    if len(shorthand) > 1:
        raise UsageError("forvalue finetune: give only one of --top-p, --bottom-p, --top-k")
    strategy, k, p = args.strategy, args.k, args.p
    if shorthand:
        name, v = shorthand[0]
        if strategy not in (None, name.split("_")[0]) or k is not None or p is not None:
            raise UsageError(f"forvalue finetune: --{name.replace('_', '-')} already sets the strategy and size")
        strategy = name.split("_")[0]
        k, p = (int(v), None) if name == "top_k" else (None, float(v))
    if strategy is None:
        strategy = "full" if k is None and p is None else ("top" if args.subset_scores else "random")
    if strategy != "full" and k is None and p is None:
        raise UsageError(f"forvalue finetune: strategy {strategy} needs --subset-size N or --subset-percent PERCENT")
    if k is not None and p is not None:
        raise UsageError("forvalue finetune: give --subset-size or --subset-percent, not both")
    return strategy, k, p


def _subset(args, train, strategy: str, k, p):
    """(indices, the selection strategy or None) of the fine-tuning subset."""
    from ..training.finetune import select_subset, subset_size

    order, selection = None, None
    if strategy in ("top", "bottom"):
        from .scores_table import ranking_from_scores

        if not args.subset_scores:
            raise UsageError(f"forvalue finetune: strategy {strategy} needs --subset-scores (the output of "
                             f"`forvalue score`)")
        size = subset_size(len(train), k=k, p=p)
        selection = args.selection
        order = ranking_from_scores(train, args.subset_scores, selection, store=args.store,
                                    limit=size if strategy == "top" else None).order
    return select_subset(len(train), strategy, k=k, p=p, seed=args.seed, order=order), selection


def run(args) -> int:
    from ..training.finetune import SubsetInfo, finetune

    o.set_threads(args)
    strategy, k, p = choose(args)
    train = o.load_data(args.train, args).samples
    idx, selection = _subset(args, train, strategy, k, p)
    subset = [train[i] for i in idx]
    ev = _evaluation(args, selection is not None)
    val = ev.samples if ev else None
    config = from_args(TrainConfig, args, method=args.method)
    ecfg = eval_config(args, chat_template=config.chat_template, max_length=config.max_length) if val else None
    info = SubsetInfo(strategy=strategy, k=len(idx), p=p, source=str(Path(args.train).resolve()),
                      n_total=len(train), name=f"{Path(args.train).stem}-{strategy}-{len(idx)}", selection=selection)
    track = tracker(args)
    res = finetune(args.model, subset, out_dir=args.out, config=config, val=val, eval_config=ecfg, tracker=track,
                   subset=info, device=args.device, dtype=args.dtype, overwrite=args.overwrite,
                   progress=not args.quiet, evaluation=ev.params() if ev else None)
    _report(args, res, config, subset, train, strategy, selection, track, ev)
    return 0


def _evaluation(args, selected: bool):
    """The :class:`forvalue.data.holdout.EvalSet` of the final evaluation (None without --eval/--val).
    Samples the selection saw (the valuation ids --subset-scores records) are left out; --val made
    of nothing else (or with no record of them) is evaluated whole and marked as seen by the
    selection. Its warnings are printed."""
    import sys

    from ..catalog.db import content_hash
    from ..data.holdout import from_file, from_valuation

    path = args.eval or args.val
    if not path:
        return None
    samples = o.load_data(path, args).samples
    name, version = str(Path(path).resolve()), content_hash(path) if Path(path).is_file() else "folder"
    seen = None
    if selected:
        from .scores_table import read_scores_table

        seen = read_scores_table(args.subset_scores)[1].get("val_ids")
    seen_set = set(seen or ())
    if args.eval or (seen is not None and any(s.sample_id not in seen_set for s in samples)) or not selected:
        try:
            ev = from_file(samples, name=name, version=version, seen_ids=seen or ())
        except ValueError as e:
            raise UsageError(f"forvalue finetune: --eval {e}") from None
    else:
        ev = from_valuation(samples, name=name, version=version)
        if seen is None:
            ev.warnings = [f"--subset-scores records no valuation samples: if --val {path} is the valuation set that "
                           f"chose the subset, its losses favour the subset; give held-out data with --eval FILE"]
    for w in ev.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return ev


def _report(args, res, config, subset, train, strategy, selection, track, ev) -> None:
    m = res.metrics
    how = f"{strategy}, {selection}" if selection else strategy
    print(f"fine-tuned ({config.method}) on {len(subset)} of {len(train)} samples ({how}"
          f"{'' if strategy == 'full' else f', seed {args.seed}' if strategy == 'random' else ''}), "
          f"{config.steps} steps x batch {config.batch_size}: train loss {m['train_loss_final']:.4f} "
          f"({m['train_seconds']:.0f}s)")
    if ev:
        line = f"evaluated on {ev.describe()}: loss {m['val_loss']:.4f}, perplexity {m['val_perplexity']:.3f}"
        if "accuracy" in m:
            line += f", accuracy {m['accuracy']:.3f} ({int(m['n_correct'])}/{int(m['n_eval'])})"
        print(line)
    print(f"{'adapter' if config.method == 'lora' else 'model'}: {res.output_dir}")
    if res.mlflow_run_id:
        print(f"MLflow run {res.mlflow_run_id} in {track.tracking_uri} ({res.mlflow_url})")
