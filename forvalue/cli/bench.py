"""``forvalue bench``: benchmark tables (Markdown) and JSON.

- ``influence``: influential data identification, AUC and recall (DataInf tasks or your files);
- ``mislabeled`` / ``noise``: detection of flipped labels / noisy responses;
- ``vlm-style`` / ``vlm-mislabeled``: the synthetic image tasks;
- ``scale``: re-scoring a synthetic feature store of N samples (time, plain-read time, bytes, memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..config import add_options, from_args
from ..valuation.features import FeatureConfig
from ..io import atomic_write_text
from ..models.loading import ModelConfig


def _lora_settings():
    from ..baselines.lora import LoraSettings

    return LoraSettings


def _common(p: argparse.ArgumentParser, *, positions_default: str = "all") -> None:
    from ..benchmarks.runner import ALL_METHODS, DEFAULT_METHODS

    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(ALL_METHODS)} (default: %(default)s)")
    add_options(p, FeatureConfig, include=("positions", "k", "r"), defaults={"positions": positions_default})
    add_options(p, ModelConfig, include=("model", "device", "dtype", "batch_size"))
    p.add_argument("--seed", type=int, default=0, help="data generator and LoRA seed")
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
    add_options(p.add_argument_group("gradient baselines (LoRA)"), _lora_settings(), dest_prefix="lora_")
    p.add_argument("--json", default=None, metavar="OUT", help="write {'results': [...], 'meta': {...}} here")


def register(sub, parents) -> argparse.ArgumentParser:
    """``bench`` with sub-commands ``influence``, ``mislabeled``, ``noise``, ``vlm-style``, ``vlm-mislabeled``."""
    from ..benchmarks.tasks import TASKS

    bench = sub.add_parser("bench", help="benchmarks: influential data, mislabeled and noisy data detection, VLM tasks")
    bsub = bench.add_subparsers(dest="bench_command", required=True)

    p = bsub.add_parser("influence", parents=parents,
                        help="influential data identification: AUC and recall (DataInf tasks)")
    p.add_argument("--task", choices=list(TASKS), default=None, help="built-in task (or --train/--val/--label-column)")
    p.add_argument("--label-column", default=None, help="class column of --train/--val files")
    p.add_argument("--n-train-per-class", type=int, default=90)
    p.add_argument("--n-val-per-class", type=int, default=10)
    _common(p)
    p.set_defaults(func=run_influence)

    p = bsub.add_parser("mislabeled", parents=parents, help="mislabeled data detection (50%% of training labels flipped)")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--flip-rate", type=float, default=0.5)
    p.add_argument("--label-column", default="label")
    p.add_argument("--clean-column", default="is_clean")
    _common(p)
    p.set_defaults(func=run_mislabeled)

    p = bsub.add_parser("noise", parents=parents,
                        help="noisy data detection: share of clean samples in the top 10%% by value")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--label-column", default="class_id")
    p.add_argument("--clean-column", default="is_clean")
    _common(p)
    p.set_defaults(func=run_noise)
    _register_vlm(bsub, parents)
    _register_scale(bsub, parents)
    return bench


def _register_scale(bsub, parents) -> None:
    from ..curation.selection import STRATEGIES

    p = bsub.add_parser("scale", parents=parents,
                        help="re-scoring a synthetic feature store of N samples: seconds, plain read, bytes, peak RSS")
    p.add_argument("--samples", type=int, required=True, metavar="N", help="samples in the synthetic store")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="where the store is built and kept (reused when it is there); default: a temporary "
                        "folder, removed afterwards")
    p.add_argument("--rows", type=int, default=64, help="rows per sample (the stored bound; >= 1)")
    p.add_argument("--r", type=int, default=FeatureConfig().r, help="projection width (>= 1; default: the product's)")
    p.add_argument("--n-val", type=_int_list, default=[100], metavar="N[,N...]",
                   help="valuation samples (several, comma-separated: each is timed in the same run)")
    p.add_argument("--shard-size", type=int, default=4096, help="samples per shard (>= 1)")
    p.add_argument("--strategy", type=_strategy_list, default=None, metavar="S[,S...]",
                   help="also time these selection strategies over the streamed store (comma-separated; "
                        f"{', '.join(sorted(STRATEGIES))})")
    p.add_argument("--subset-percent", type=float, default=10.0,
                   help="with --strategy: the share selected (above 0, at most 100)")
    p.add_argument("--checks", action="store_true",
                   help="with --strategy: time each strategy again after the consistency checks (their per-sample "
                        "values read from the store, failing samples never picked), in the same run")
    p.add_argument("--checksums", action="store_true",
                   help="also time the re-scoring with each way reads check the shard files' sha256 (off: sizes "
                        "only; stamp: the default, each file hashed once per state; full: every file hashed by the "
                        "process), alternated 5 times in the same run, and print each over the unchecked time")
    p.add_argument("--json", default=None, metavar="OUT", help="write {'results': [...], 'meta': {...}} here")
    p.set_defaults(func=run_scale)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers, comma-separated") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: one or more whole numbers >= 1")
    return values


def _strategy_list(text: str) -> list[str]:
    from ..curation.selection import STRATEGIES

    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in STRATEGIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown strategy {(bad or [text])[0]!r}; choose from "
                                         f"{', '.join(sorted(STRATEGIES))}")
    return names


def _register_vlm(bsub, parents) -> None:
    for name, fn, help_ in (("vlm-style", run_vlm_style, "VLM subject/style task: AUC and recall (Pillow drawings)"),
                            ("vlm-mislabeled", run_vlm_mislabeled, "VLM mislabeled detection (50%% labels flipped)")):
        p = bsub.add_parser(name, parents=parents, help=help_)
        add_options(p, ModelConfig, include=("model", "device", "dtype", "batch_size"),
                    defaults={"model": None, "batch_size": 4})
        p.add_argument("--methods", default="sparse,exact,emb")
        add_options(p, FeatureConfig, include=("positions", "k", "r"))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", default=None, metavar="OUT")
        if name == "vlm-style":
            p.add_argument("--n-subjects", type=int, default=3)
            p.add_argument("--n-styles", type=int, default=2)
            p.add_argument("--n-val-per-class", type=int, default=2)
        else:
            p.add_argument("--n-train", type=int, default=40)
            p.add_argument("--n-val", type=int, default=10)
            p.add_argument("--flip-rate", type=float, default=0.5)
        p.set_defaults(func=fn)


# ----------------------------------------------------------------------------- runs
def _read(path: str) -> list[dict]:
    from ..data.reader import read_records
    from ..errors import DataError

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
    return from_args(_lora_settings(), args, dest_prefix="lora_", seed=args.seed)


def _check_json(args) -> None:
    """``--json OUT`` checked before the benchmark runs (a file that can be written, not an input)."""
    if args.json:
        from .output import check_out

        check_out(args.json, inputs=(getattr(args, "train", None), getattr(args, "val", None)), suffixes=None)


def _kwargs(args) -> dict:
    from ..benchmarks.runner import parse_methods

    _check_json(args)
    r = None if args.r == 0 else args.r
    return dict(methods=parse_methods(args.methods), model=args.model, positions=args.positions, seed=args.seed,
                batch_size=args.batch_size, lora=_lora(args), chat_template=args.chat_template, k=args.k, r=r,
                device=args.device, dtype=args.dtype, progress=not args.quiet,
                log=None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))


def _files(args, kw: dict) -> bool:
    from .options import UsageError

    if (args.train is None) != (args.val is None):
        raise UsageError("forvalue bench: give both --train and --val")
    if args.train is None:
        return False
    kw.update(train_records=_read(args.train), val_records=_read(args.val), text_column=args.text_column,
              prompt_column=args.prompt_column, response_column=args.response_column)
    return True


def _write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def _finish(args, bench: str, rows: list[dict], meta: dict, t0: float) -> int:
    from ..benchmarks.runner import machine_info, markdown_table, speedups

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


def run_influence(args) -> int:
    from ..benchmarks.runner import run_influence as run
    from .options import UsageError

    t0 = time.perf_counter()
    kw = _kwargs(args)
    if _files(args, kw):
        if args.task:
            raise UsageError("forvalue bench influence: give --task or --train/--val, not both")
        if not args.label_column:
            raise UsageError("forvalue bench influence: --label-column is required with --train/--val")
        kw["label_column"] = args.label_column
        meta = {"train": args.train, "val": args.val, "label_column": args.label_column}
    else:
        if not args.task:
            raise UsageError("forvalue bench influence: give --task or --train/--val/--label-column")
        kw.update(task=args.task, n_train_per_class=args.n_train_per_class, n_val_per_class=args.n_val_per_class)
        meta = {"task": args.task, "n_train_per_class": args.n_train_per_class,
                "n_val_per_class": args.n_val_per_class}
    return _finish(args, "influence", run(**kw), meta, t0)


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


def run_mislabeled(args) -> int:
    from ..benchmarks.runner import run_mislabeled as run

    return _detection(args, "mislabeled", run, {"flip_rate": args.flip_rate})


def run_noise(args) -> int:
    from ..benchmarks.runner import run_noise as run

    return _detection(args, "noise", run, {"rate": args.rate})


def _vlm_kwargs(args) -> dict:
    from .options import UsageError

    _check_json(args)
    if not args.model:
        raise UsageError(f"forvalue bench {args.bench_command}: --model is required (an image-text-to-text model "
                         "folder or hub id: LLaVA, Qwen2-VL/Qwen2.5-VL, Idefics3/SmolVLM, Mllama)")
    return dict(methods=[m.strip() for m in args.methods.split(",") if m.strip()], seed=args.seed,
                positions=args.positions, batch_size=args.batch_size, k=args.k, r=args.r or None,
                device=args.device, dtype=args.dtype, progress=not args.quiet)


def _vlm_report(args, rows) -> int:
    from ..benchmarks.runner import markdown_table

    print(markdown_table(rows))
    if args.json:
        _write_json(args.json, {"results": rows, "meta": {"model": args.model, "seed": args.seed}})
    return 0


def run_vlm_style(args) -> int:
    from ..benchmarks.vlm import run_vlm_style as run

    rows = run(args.model, n_subjects=args.n_subjects, n_styles=args.n_styles,
               n_val_per_class=args.n_val_per_class, **_vlm_kwargs(args))
    return _vlm_report(args, rows)


def run_vlm_mislabeled(args) -> int:
    from ..benchmarks.vlm import run_vlm_mislabeled as run

    rows = run(args.model, n_train=args.n_train, n_val=args.n_val, flip_rate=args.flip_rate, **_vlm_kwargs(args))
    return _vlm_report(args, rows)


def run_scale(args) -> int:
    import tempfile

    from ..benchmarks.runner import machine_info
    from ..benchmarks.scale import check_options, run

    check_options(args.samples, rows=args.rows, r=args.r, shard_size=args.shard_size, percent=args.subset_percent)
    _check_json(args)
    _check_space(args)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="forvalue-scale-") as tmp:
        res = run(args.samples, root=args.store or tmp, rows=args.rows, r=args.r, n_val=args.n_val,
                  shard_size=args.shard_size, strategy=args.strategy, percent=args.subset_percent, log=log,
                  checks=args.checks, checksums=args.checksums)
    print(f"| samples | bytes/sample | read s | rescore s | rescore/read | rescore peak RSS MB |\n|---|---|---|---|---|---|\n"
          f"| {res['samples']} | {res['bytes_per_sample']:.0f} | {res['read_seconds']:.2f} | "
          f"{res['rescore_seconds']:.2f} | {res['rescore_over_read']:.2f} | {res['rescore_peak_rss_mb']:.0f} |")
    if res.get("selection"):
        print(f"\nselection, top {args.subset_percent:g}% (ratios: over the re-scoring with the same valuation set, "
              f"this run)\n\n| samples | valuation samples | strategy | rescore s | select s | select/rescore | "
              f"select peak RSS MB | passes | refilled units |\n|---|---|---|---|---|---|---|---|---|")
        for row in res["selection"]:
            print(f"| {res['samples']} | {row['n_val']} | {row['strategy']} | {row['rescore_seconds']:.2f} | "
                  f"{row['select_seconds']:.2f} | {row['select_over_rescore']:.2f} | {row['select_peak_rss_mb']:.0f} | "
                  f"{row['select_passes']} | {row['refilled_units']} |")
    if res.get("checksums"):
        n = len(res["checksums"][0]["all_seconds"])
        print(f"\nchecksums on read ({n} alternated rounds; ratios over the unchecked re-scoring of this run; cpu: "
              f"user + system of the process, median; checks: the time inside the checks, median)\n\n"
              f"| samples | checksums | rescore s (best / median) | over unchecked (best / median) | cpu s | cpu over "
              f"unchecked | checks s | checks / rescore | hashed GB | peak RSS MB |\n"
              f"|---|---|---|---|---|---|---|---|---|---|")
        for row in res["checksums"]:
            print(f"| {res['samples']} | {row['checksums']} | {row['rescore_seconds']:.2f} / "
                  f"{row['median_seconds']:.2f} | {row['over_unchecked']:.3f} / {row['median_over_unchecked']:.3f} | "
                  f"{row['cpu_seconds']:.2f} | {row['cpu_over_unchecked']:.3f} | {row['check_seconds']:.3f} | "
                  f"{row['check_share']:.2%} | {row['hashed_bytes'] / 1e9:.2f} | {row['peak_rss_mb']:.0f} |")
    if args.json:
        _write_json(args.json, {"results": [res], "meta": {
            "bench": "scale", "command": "forvalue " + " ".join(sys.argv[1:]) if sys.argv else "",
            "machine": machine_info(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}})
    return 0


def _check_space(args) -> None:
    """The store folder (``--store`` or a temporary one) can be made and has room for what the
    benchmark writes (estimated from its sizes), before anything is written."""
    import shutil
    import tempfile
    from pathlib import Path

    from ..benchmarks.scale import bytes_to_write
    from ..errors import ConfigError
    from .output import check_folder

    root = Path(check_folder(args.store, "scale benchmark store") if args.store else tempfile.gettempdir())
    need = bytes_to_write(root, args.samples, rows=args.rows, r=args.r, shard_size=args.shard_size)
    where = root.resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise ConfigError(f"forvalue bench scale: --samples {args.samples} writes about {need / 1e9:,.1f} GB into "
                          f"{root}, and {where} has {free / 1e9:,.1f} GB free; use fewer samples or a --store on a "
                          f"larger disk")


def main(argv: list[str] | None = None) -> int:
    """``forvalue bench ...`` with ``bench`` implied (``python -m forvalue.cli.bench influence ...``)."""
    from .options import common_parent
    from .runner import run_command

    parser = argparse.ArgumentParser(prog="forvalue", description="For-Value benchmarks (same as `forvalue bench`)")
    register(parser.add_subparsers(dest="command", required=True), [common_parent()])
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "bench":
        argv = ["bench"] + argv
    return run_command(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
