"""``forvalue bench influence | mislabeled | noise``: benchmark tables (Markdown) and JSON.

Registered in the ``forvalue`` command by :func:`add_bench_parser`; also runnable on its own:
``python -m forvalue.benchmarks.cli influence --task sentence``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .runner import (ALL_METHODS, DEFAULT_METHODS, machine_info, markdown_table, parse_methods, run_influence,
                     run_mislabeled, run_noise, speedups)
from .tasks import TASKS


def _read(path: str) -> list[dict]:
    from ..data import DataError, read_records

    _, rows = read_records(path)
    out = []
    for _, obj in rows:
        if isinstance(obj, DataError):
            raise obj
        out.append(obj)
    if not out:
        raise DataError(path, None, None, "no rows")
    return out


def _lora(args):
    from ..baselines import LoraSettings

    return LoraSettings(epochs=args.train_epochs, lr=args.lora_lr, batch_size=args.lora_batch_size,
                        r=args.lora_r, alpha=args.lora_alpha, seed=args.seed)


def _common(p: argparse.ArgumentParser, *, positions_default: str = "all") -> None:
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(ALL_METHODS)} (default: %(default)s)")
    p.add_argument("--positions", choices=["all", "response"], default=positions_default,
                   help="every next-token position of the text (default) or only the response tokens")
    p.add_argument("--model", default="default", help="'default' (bundled SmolLM2-135M-Instruct) or a model folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="forward / gradient batch size")
    p.add_argument("--seed", type=int, default=0, help="data generator and LoRA seed")
    p.add_argument("--k", type=int, default=8, help="sparse: top-k predicted tokens per position")
    p.add_argument("--r", type=int, default=64, help="sparse: projection width (0 keeps d)")
    ct = p.add_mutually_exclusive_group()
    ct.add_argument("--chat-template", dest="chat_template", action="store_true", default=None,
                    help="render prompt/response with the tokenizer's chat template "
                         "(default: off for the built-in tasks, on for --train files)")
    ct.add_argument("--no-chat-template", dest="chat_template", action="store_false")
    p.add_argument("--text-column", default=None, help="plain-text samples in this column (--train files)")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--response-column", default="response")
    p.add_argument("--train", default=None, help="training file (JSONL, Parquet, CSV, HF folder) instead of a built-in task")
    p.add_argument("--val", default=None, help="valuation file, same formats")
    g = p.add_argument_group("gradient baselines (LoRA)")
    g.add_argument("--train-epochs", type=float, default=1.0, help="LoRA fine-tuning epochs (default: %(default)s)")
    g.add_argument("--lora-lr", type=float, default=3e-4)
    g.add_argument("--lora-batch-size", type=int, default=8)
    g.add_argument("--lora-r", type=int, default=8)
    g.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--json", default=None, metavar="OUT", help="write {'results': [...], 'meta': {...}} here")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` with sub-commands ``influence``, ``mislabeled`` and ``noise``."""
    bench = subparsers.add_parser("bench", help="benchmarks: influential data, mislabeled and noisy data detection")
    bsub = bench.add_subparsers(dest="bench_command", required=True)

    p = bsub.add_parser("influence", help="influential data identification: AUC and recall (DataInf tasks)")
    p.add_argument("--task", choices=list(TASKS), default=None, help="built-in task (or --train/--val/--label-column)")
    p.add_argument("--label-column", default=None, help="class column of --train/--val files")
    p.add_argument("--n-train-per-class", type=int, default=90)
    p.add_argument("--n-val-per-class", type=int, default=10)
    _common(p)
    p.set_defaults(func=cmd_influence)

    p = bsub.add_parser("mislabeled", help="mislabeled data detection (50%% of training labels flipped)")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--flip-rate", type=float, default=0.5)
    p.add_argument("--label-column", default="label")
    p.add_argument("--clean-column", default="is_clean")
    _common(p)
    p.set_defaults(func=cmd_mislabeled)

    p = bsub.add_parser("noise", help="noisy data detection: share of clean samples in the top 10%% by value")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--label-column", default="class_id")
    p.add_argument("--clean-column", default="is_clean")
    _common(p)
    p.set_defaults(func=cmd_noise)
    return bench


def _kwargs(args) -> dict:
    return dict(methods=parse_methods(args.methods), model=args.model, positions=args.positions, seed=args.seed,
                batch_size=args.batch_size, lora=_lora(args), chat_template=args.chat_template, k=args.k,
                r=None if args.r == 0 else args.r, device=args.device, dtype=args.dtype,
                progress=not args.quiet, log=None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))


def _files(args, kw: dict) -> bool:
    if (args.train is None) != (args.val is None):
        raise SystemExit("forvalue bench: give both --train and --val")
    if args.train is None:
        return False
    kw.update(train_records=_read(args.train), val_records=_read(args.val), text_column=args.text_column,
              prompt_column=args.prompt_column, response_column=args.response_column)
    return True


def _write_json(path: str, payload: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, out)


def _finish(args, bench: str, rows: list[dict], meta: dict, t0: float) -> int:
    print(markdown_table(rows))
    sp = speedups(rows)
    if sp:
        print("\nWall time relative to sparse: " + ", ".join(f"{m} {x:.1f}x" for m, x in sp.items()))
    if args.json:
        meta = dict(meta, bench=bench, command="forvalue " + " ".join(sys.argv[1:]) if sys.argv else "",
                    positions=args.positions, model=args.model, seed=args.seed, machine=machine_info(),
                    lora=_lora(args).to_dict(), total_seconds=time.perf_counter() - t0,
                    finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        _write_json(args.json, {"results": rows, "meta": meta})
    return 0


def cmd_influence(args) -> int:
    t0 = time.perf_counter()
    kw = _kwargs(args)
    if _files(args, kw):
        if args.task:
            raise SystemExit("forvalue bench influence: give --task or --train/--val, not both")
        if not args.label_column:
            raise SystemExit("forvalue bench influence: --label-column is required with --train/--val")
        kw["label_column"] = args.label_column
        meta = {"train": args.train, "val": args.val, "label_column": args.label_column}
    else:
        if not args.task:
            raise SystemExit("forvalue bench influence: give --task or --train/--val/--label-column")
        kw.update(task=args.task, n_train_per_class=args.n_train_per_class, n_val_per_class=args.n_val_per_class)
        meta = {"task": args.task, "n_train_per_class": args.n_train_per_class,
                "n_val_per_class": args.n_val_per_class}
    rows = run_influence(**kw)
    return _finish(args, "influence", rows, meta, t0)


def _detection(args, bench: str, run, generator: dict) -> int:
    """``forvalue bench mislabeled|noise``: user files, or the generated task with ``generator`` options."""
    t0 = time.perf_counter()
    kw = _kwargs(args)
    kw.update(label_column=args.label_column, clean_column=args.clean_column)
    if _files(args, kw):
        meta = {"train": args.train, "val": args.val}
    else:
        kw.update(n_train=args.n_train, n_val=args.n_val, **generator)
        meta = {"task": bench, "n_train": args.n_train, "n_val": args.n_val, **generator}
    return _finish(args, bench, run(**kw), meta, t0)


def cmd_mislabeled(args) -> int:
    return _detection(args, "mislabeled", run_mislabeled, {"flip_rate": args.flip_rate})


def cmd_noise(args) -> int:
    return _detection(args, "noise", run_noise, {"rate": args.rate})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forvalue.benchmarks.cli",
                                     description="For-Value benchmarks (same as `forvalue bench`)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "bench":
        argv = ["bench"] + argv
    args = parser.parse_args(argv)
    if args.quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
