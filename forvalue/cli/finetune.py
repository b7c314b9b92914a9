"""``forvalue finetune``: fine-tune on a (curated) subset, evaluate, track in MLflow.

    forvalue finetune --train train.jsonl --subset-scores scores.parquet --top-p 5 --eval heldout.jsonl --out ft/top5
    forvalue finetune --train train.jsonl --part random --subset-size 45 --seed 1 --out ft/random45

``--strategy`` is the selection strategy (balanced, raw-mean, ...) as in ``curate`` and ``select``;
``--part`` says which samples of its order to train on (top, bottom), or random, or full. A size
keeps as many samples as it keeps in ``curate`` and ``select`` (:func:`forvalue.curation.selection.subset_count`),
and a size that keeps none is refused before the data is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import add_options, from_args
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


PARTS = ("top", "bottom", "random", "full")
SHORTHANDS = (("top_p", "--top-p"), ("bottom_p", "--bottom-p"), ("top_k", "--top-k"))


def register(sub, parents) -> None:
    p = sub.add_parser("finetune", parents=parents, help="fine-tune a causal LM on a (curated) subset, tracked in MLflow",
                       description="Supervised fine-tuning (loss on response tokens only) on a subset chosen by "
                                   "For-Value (top/bottom of a selection strategy's order), at random, or the full "
                                   "file.", allow_abbrev=False)   # --full would read as --full-finetune, not --part full
    p.add_argument("--train", required=True, help="training data (JSONL, Parquet, CSV or HF save_to_disk folder)")
    p.add_argument("--eval", default=None, metavar="FILE",
                   help="evaluation data the selection never saw: loss/perplexity (and --accuracy) after training; "
                        "samples also in the valuation set that scored --subset-scores are left out")
    p.add_argument("--val", default=None,
                   help="evaluate on this file when there is no --eval; when it is the valuation set that chose the "
                        "subset its losses favour the subset (a warning says so)")
    p.add_argument("--out", required=True, help="output folder: the LoRA adapter (or the full model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_subset_options(p)
    g = p.add_argument_group("training")
    from ..models.loading import ModelConfig

    add_options(g, ModelConfig, include=("model",))
    m = g.add_mutually_exclusive_group()
    m.add_argument("--lora", dest="method", action="store_const", const="lora", help="a LoRA adapter (default)")
    m.add_argument("--full-finetune", dest="method", action="store_const", const="full",
                   help="full fine-tuning of every weight")
    p.set_defaults(method="lora")
    add_options(g, TrainConfig)
    add_compute_options(p)
    add_eval_options(p, accuracy_default=False)
    add_tracking_options(p)
    o.add_column_options(p)
    p.set_defaults(func=run)


def _add_subset_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("subset")
    g.add_argument("--subset-scores", default=None, help="scores of the training file (`forvalue score` output)")
    g.add_argument("--part", choices=list(PARTS), default=None,
                   help="which samples: the top / bottom of the --strategy order, random, or full (every sample); "
                        "default: full without a size; top with --subset-scores; random otherwise")
    g.add_argument("--subset-size", dest="k", type=int, default=None, metavar="N", help="subset size in samples")
    g.add_argument("--subset-percent", dest="p", type=float, default=None, metavar="PERCENT",
                   help="subset size in percent of the training set (rounded to the nearest, as in `forvalue curate`)")
    g.add_argument("--top-p", type=float, default=None, help="shorthand for --part top --subset-percent P")
    g.add_argument("--bottom-p", type=float, default=None, help="shorthand for --part bottom --subset-percent P")
    g.add_argument("--top-k", type=int, default=None, help="shorthand for --part top --subset-size K")
    o.add_strategy_option(g, note=" for --part top / bottom (raw-mean and cosine-mean need only the scores table, "
                                  "the others the feature store it records)")
    g.add_argument("--store", default=None, help="feature store folder (default: the one the scores table records)")


def choose(args) -> tuple[str, int | None, float | None, str | None]:
    """(part, k, p, the size option given) from --part/--subset-size/--subset-percent and the
    --top-p/--bottom-p/--top-k shorthands."""
    shorthand = [(name, flag, getattr(args, name)) for name, flag in SHORTHANDS if getattr(args, name) is not None]
    if len(shorthand) > 1:
        raise UsageError("forvalue finetune: give only one of --top-p, --bottom-p, --top-k")
    part, k, p = args.part, args.k, args.p
    flag = "--subset-size" if k is not None else "--subset-percent" if p is not None else None
    if shorthand:
        name, flag, v = shorthand[0]
        if part not in (None, name.split("_")[0]) or k is not None or p is not None:
            raise UsageError(f"forvalue finetune: {flag} already sets the part and size")
        part = name.split("_")[0]
        k, p = (int(v), None) if name == "top_k" else (None, float(v))
    if k is not None and p is not None:
        raise UsageError("forvalue finetune: give --subset-size or --subset-percent, not both")
    if part is None:
        part = "full" if flag is None else ("top" if args.subset_scores else "random")
    if part == "full" and flag is not None:
        raise UsageError(f"forvalue finetune: --part full trains on every sample; leave out {flag}")
    if part != "full" and flag is None:
        raise UsageError(f"forvalue finetune: --part {part} needs --subset-size N or --subset-percent PERCENT")
    return part, k, p, flag


def _size_mode(part: str, k, p) -> tuple[str, float]:
    """The size as a selection size mode (forvalue.curation.selection.SIZE_MODES)."""
    return ("top_k", float(k)) if k is not None else ("bottom_p" if part == "bottom" else "top_p", float(p))


def _subset(args, train, part: str, k, p):
    """(indices, the selection strategy or None) of the fine-tuning subset."""
    from ..training.finetune import select_subset, subset_size

    order, strategy = None, None
    if part in ("top", "bottom"):
        from .scores_table import ranking_from_scores

        if not args.subset_scores:
            raise UsageError(f"forvalue finetune: --part {part} needs --subset-scores (the output of "
                             f"`forvalue score`)")
        strategy = args.strategy
        order = ranking_from_scores(train, args.subset_scores, strategy, store=args.store,
                                    limit=subset_size(len(train), k=k, p=p) if part == "top" else None,
                                    limits=o.check_limits(args)).order
    return select_subset(len(train), part, k=k, p=p, seed=args.seed, order=order), strategy


def run(args) -> int:
    from ..training.finetune import SubsetInfo, finetune

    o.set_threads(args)
    part, k, p, flag = choose(args)
    if flag is not None:
        o.check_size(*_size_mode(part, k, p), flag=flag)
    train = o.load_data(args.train, args).samples
    if flag is not None:
        o.check_count(len(train), *_size_mode(part, k, p), args.train, flag=flag)
    idx, selection = _subset(args, train, part, k, p)
    subset = [train[i] for i in idx]
    ev = _evaluation(args, selection is not None)
    val = ev.samples if ev else None
    config = from_args(TrainConfig, args, method=args.method)
    ecfg = eval_config(args, chat_template=config.chat_template, max_length=config.max_length) if val else None
    info = SubsetInfo(strategy=part, k=len(idx), p=p, source=str(Path(args.train).resolve()),
                      n_total=len(train), name=f"{Path(args.train).stem}-{part}-{len(idx)}", selection=selection)
    track = tracker(args)
    res = finetune(args.model, subset, out_dir=args.out, config=config, val=val, eval_config=ecfg, tracker=track,
                   subset=info, device=args.device, dtype=args.dtype, overwrite=args.overwrite,
                   on_progress=None if args.quiet else print_progress, evaluation=ev.params() if ev else None)
    _report(args, res, config, subset, train, part, selection, track, ev)
    return 0


def print_progress(progress) -> None:
    """A fine-tune's progress line ("...: step 10/30 loss 1.2345 ...") on stderr."""
    import sys

    print(progress.line(), file=sys.stderr, flush=True)


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


def _report(args, res, config, subset, train, part, selection, track, ev) -> None:
    m = res.metrics
    how = f"{part}, {selection}" if selection else part
    print(f"fine-tuned ({config.method}) on {len(subset)} of {len(train)} samples ({how}"
          f"{'' if part == 'full' else f', seed {args.seed}' if part == 'random' else ''}), "
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
