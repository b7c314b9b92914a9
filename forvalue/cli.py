"""The ``forvalue`` command: score, features, demo (and bench, when the benchmarks are installed)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ._version import __version__
from .data import Columns, DataError, LoadedData, load_samples
from .features import FeatureConfig


# ----------------------------------------------------------------------------- shared options
def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default",
                   help="'default' (bundled SmolLM2-135M-Instruct), a model folder, a .gguf file or a hub id")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code (off by default)")


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--positions", choices=["response", "all"], default="response",
                   help="score the response tokens (default) or every next-token position")
    g.add_argument("--k", type=int, default=8, help="top-k predicted tokens kept per position (sparse)")
    g.add_argument("--r", type=int, default=64, help="projection width of the hidden side (sparse); 0 keeps d")
    g.add_argument("--seed", type=int, default=0, help="seed of the projection")
    g.add_argument("--plain", action="store_true", help="do not apply the tokenizer's chat template")
    g.add_argument("--max-length", type=int, default=None, help="longest sample in tokens (default: model context)")


def _add_column_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("columns")
    g.add_argument("--text-column", default=None, help="plain-text samples in this column")
    g.add_argument("--prompt-column", default="prompt")
    g.add_argument("--response-column", default="response")
    g.add_argument("--messages-column", default="messages")
    g.add_argument("--id-column", default="id")
    g.add_argument("--label-column", default=None)
    g.add_argument("--image-column", default=None)
    g.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="stop at the first bad row (default) or skip bad rows and report them")


def default_store() -> str:
    """The feature store the CLI keeps features in: $FORVALUE_FEATURES, else .forvalue/features (the
    platform's default too), so later commands re-rank without a forward pass."""
    return os.environ.get("FORVALUE_FEATURES") or ".forvalue/features"


def _add_store_option(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--store", default=None,
                   help="feature store folder: reuse and keep the sparse features (default: $FORVALUE_FEATURES, "
                        "else .forvalue/features); `forvalue select` and `forvalue finetune` re-rank from it")
    g.add_argument("--no-store", action="store_true", help="keep no features (re-ranking then needs a new forward pass)")


def _store_root(args) -> str | None:
    return None if args.no_store else (args.store or default_store())


def _add_selection_options(p: argparse.ArgumentParser) -> None:
    from .selection import DEFAULT_STRATEGY, STRATEGIES

    g = p.add_argument_group("selection")
    size = g.add_mutually_exclusive_group(required=True)
    size.add_argument("--top-k", type=int, default=None, help="keep the first k samples of the order")
    size.add_argument("--top-p", type=float, default=None, help="keep the first p percent")
    size.add_argument("--drop-lowest-p", type=float, default=None, help="keep all but the last p percent")
    size.add_argument("--bottom-p", type=float, default=None, help="the last p percent, least valuable first (to inspect)")
    g.add_argument("--strategy", choices=list(STRATEGIES), default=DEFAULT_STRATEGY,
                   help="how samples are ordered (default %(default)s): " +
                        "; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()))


def _columns(args) -> Columns:
    return Columns(prompt=args.prompt_column, response=args.response_column, messages=args.messages_column,
                   text=args.text_column, id=args.id_column, label=args.label_column, image=args.image_column)


def _config(args) -> FeatureConfig:
    return FeatureConfig(positions=args.positions, k=args.k, r=args.r or None, seed=args.seed,
                         chat_template=not args.plain, max_length=args.max_length)


def _load(path: str, args) -> LoadedData:
    data = load_samples(path, columns=_columns(args), on_error=args.on_error)
    if data.skipped:
        print(f"{path}: skipped {len(data.skipped)} rows", file=sys.stderr)
        for s in data.skipped[:20]:
            print(f"  row {s.row}, field {s.field!r}: {s.reason}", file=sys.stderr)
        if len(data.skipped) > 20:
            print(f"  ... and {len(data.skipped) - 20} more", file=sys.stderr)
    return data


def _model(args):
    from .models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def _drop_unencodable(lm, data: LoadedData, config: FeatureConfig, on_error: str) -> list:
    """Apply the length check (and tokenization errors) with the same raise/skip rule as reading."""
    from .features import encode_all

    _, skipped = encode_all(lm, data.samples, config, on_error=on_error)
    if not skipped:
        return data.samples
    bad = {id(s) for s, _ in skipped}
    print(f"{data.path}: skipped {len(skipped)} samples the model cannot take", file=sys.stderr)
    for s, e in skipped[:20]:
        print(f"  {e}", file=sys.stderr)
    kept = [s for s in data.samples if id(s) not in bad]
    if not kept:
        raise DataError(data.path, None, None, "no samples left after skipping")
    return kept


# ----------------------------------------------------------------------------- output
def write_table(rows: list[dict], out: Path, meta: dict | None = None) -> None:
    """Write rows as Parquet, JSONL or CSV (by suffix), atomically: temp file, then rename.
    ``meta`` (what produced the table) goes into the Parquet schema metadata under ``forvalue``."""
    import pyarrow as pa

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        suffix = out.suffix.lower()
        if suffix in (".jsonl", ".json"):
            import json

            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        else:
            table = pa.Table.from_pylist(rows)
            if meta:
                import json

                table = table.replace_schema_metadata({b"forvalue": json.dumps(meta, default=str).encode()})
            if suffix == ".csv":
                import pyarrow.csv as pacsv

                pacsv.write_csv(table, tmp)
            else:
                import pyarrow.parquet as pq

                pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def score_rows(samples, values, ranks, extra: dict | None = None) -> list[dict]:
    """Rows of ``forvalue score``: sample_id, score, rank, the ``extra`` columns, the input columns."""
    from .curation import table_rows

    columns = {"score": [float(v) for v in values], "rank": [int(r) for r in ranks]}
    for name, arr in (extra or {}).items():
        columns[name] = [float(x) for x in arr]
    return table_rows(samples, columns)


def _columns_meta(args) -> dict:
    return {k: v for k, v in vars(_columns(args)).items() if v is not None}


# ----------------------------------------------------------------------------- commands
def cmd_score(args) -> int:
    from .scoring import rank, score
    from .store import FeatureStore

    train = _load(args.train, args)
    val = _load(args.val, args)
    lm = _model(args)
    config = _config(args)
    tr = _drop_unencodable(lm, train, config, args.on_error)
    va = _drop_unencodable(lm, val, config, args.on_error)
    root = _store_root(args)
    store = FeatureStore(root) if root and args.method in ("sparse", "emb") else None
    result = score(lm, tr, va, method=args.method, config=config, batch_size=args.batch_size,
                   store=store, progress=not args.quiet)
    ranks = rank(result.values)
    extra = {} if result.normalized is None else {"normalized": result.normalized, "norm": result.norms}
    rows = score_rows(tr, result.values, ranks, extra)
    rows.sort(key=lambda r: r["rank"])
    meta = {"model": lm.fingerprint.to_dict(), "method": args.method, "feature_config": config.to_dict(),
            "feature_config_id": config.id, "train": str(args.train), "val": str(args.val),
            "n_val": len(va), "val_ids": [s.sample_id for s in va], "columns": _columns_meta(args),
            "store": str(Path(root).resolve()) if store is not None else None, "code_version": __version__}
    write_table(rows, Path(args.out), meta)
    print(f"scored {len(tr)} training samples against {len(va)} valuation samples "
          f"({args.method}, {result.seconds:.1f}s, model {lm.fingerprint.id}) -> {args.out}")
    return 0


def _size(args) -> tuple[str, float]:
    for mode in ("top_k", "top_p", "bottom_p", "drop_lowest_p"):
        if getattr(args, mode, None) is not None:
            return mode, float(getattr(args, mode))
    raise SystemExit("forvalue: give one of --top-k, --top-p, --bottom-p, --drop-lowest-p")


def _write_subset(args, samples, ranking, mode: str, value: float, meta: dict) -> None:
    from .curation import subset_rows

    try:
        idx = ranking.indices(mode, value)
    except ValueError as e:
        raise DataError(str(args.train), None, None, str(e)) from None
    rows = subset_rows(samples, ranking, idx)
    meta = meta | {"strategy": ranking.strategy, "mode": mode, "value": value, "n_total": len(samples),
                   "n_selected": len(rows), "code_version": __version__}
    write_table(rows, Path(args.out), meta)
    print(f"kept {len(rows)} of {len(samples)} training samples ({ranking.strategy}, {mode.replace('_', '-')} "
          f"{value:g}) -> {args.out}")


def cmd_curate(args) -> int:
    from .features import extract_sparse
    from .selection import needed_prefix, rank_features
    from .store import FeatureStore

    mode, value = _size(args)
    train = _load(args.train, args)
    val = _load(args.val, args)
    lm = _model(args)
    config = _config(args)
    tr = _drop_unencodable(lm, train, config, args.on_error)
    va = _drop_unencodable(lm, val, config, args.on_error)
    if _store_root(args):
        store = FeatureStore(_store_root(args))
        tf = store.ensure(lm, tr, config, batch_size=args.batch_size, progress=not args.quiet).features
        vf = store.ensure(lm, va, config, batch_size=args.batch_size, progress=not args.quiet).features
    else:
        tf = extract_sparse(lm, tr, config, batch_size=args.batch_size, progress=not args.quiet)
        vf = extract_sparse(lm, va, config, batch_size=args.batch_size, progress=not args.quiet)
    ranking = rank_features(tf, vf, args.strategy, limit=needed_prefix(len(tr), mode, value))
    meta = {"model": lm.fingerprint.to_dict(), "method": "sparse", "feature_config": config.to_dict(),
            "feature_config_id": config.id, "train": str(args.train), "val": str(args.val), "n_val": len(va)}
    _write_subset(args, tr, ranking, mode, value, meta)
    return 0


def cmd_select(args) -> int:
    from .curation import ranking_from_scores
    from .selection import needed_prefix

    mode, value = _size(args)
    train = _load(args.train, args).samples
    ranking = ranking_from_scores(train, args.scores, args.strategy, store=args.store,
                                  limit=needed_prefix(len(train), mode, value))
    _write_subset(args, train, ranking, mode, value, {"scores": str(args.scores), "train": str(args.train)})
    return 0


def cmd_features(args) -> int:
    from .store import FeatureStore

    data = _load(args.data, args)
    lm = _model(args)
    config = _config(args)
    samples = _drop_unencodable(lm, data, config, args.on_error)
    store = FeatureStore(args.out)
    res = store.ensure(lm, samples, config, batch_size=args.batch_size, shard_size=args.shard_size,
                       progress=not args.quiet)
    print(f"{len(samples)} samples: {res.computed} computed, {res.reused} already stored "
          f"({res.features.n_rows} rows) in {store.folder(lm.fingerprint, config)}")
    return 0


def _short(s, width: int = 90) -> str:
    text = s.response if s.response is not None else (s.text or s.messages[-1]["content"])
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_demo(args) -> int:
    from .demo import demo_paths
    from .scoring import rank, score

    train_path, val_path = demo_paths()
    train = load_samples(train_path).samples
    val = load_samples(val_path).samples
    lm = _model(args)
    config = _config(args)
    result = score(lm, train, val, method=args.method, config=config, batch_size=args.batch_size,
                   progress=not args.quiet)
    ranks = rank(result.values)
    order = sorted(range(len(train)), key=lambda i: ranks[i])
    print(f"For-Value ({args.method}) of {len(train)} training samples against {len(val)} valuation samples")
    print(f"model {lm.fingerprint.id}, {result.seconds:.1f}s\n")

    def show(title, idx):
        print(title)
        print(f"{'rank':>4}  {'score':>10}  {'quality':<18}  response")
        for i in idx:
            q = train[i].record.get("quality", "")
            print(f"{ranks[i]:>4}  {result.values[i]:>10.3f}  {q:<18}  {_short(train[i])}")
        print()

    n = min(args.top, len(train))
    show(f"Top {n} (most valuable):", order[:n])
    show(f"Bottom {n} (least valuable):", order[-n:])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forvalue", description="Forward-only data valuation (For-Value) for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("score", parents=[common], help="value training samples against a valuation set")
    p.add_argument("--train", required=True, help="training data: JSONL, Parquet, CSV or HF save_to_disk folder")
    p.add_argument("--val", required=True, help="valuation data, same formats")
    p.add_argument("--method", choices=["sparse", "exact", "full", "emb"], default="sparse")
    p.add_argument("--out", required=True, help="output table (.parquet, .jsonl or .csv)")
    _add_store_option(p)
    _add_model_options(p)
    _add_feature_options(p)
    _add_column_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("curate", parents=[common], help="score and select a curated subset in one command",
                       description="Value every training sample against the valuation set and keep a subset chosen by "
                                   "a selection strategy. Writes the kept rows with every input column plus score "
                                   "(the For-Value), normalized (cosine with the mean valuation gradient), norm, rank "
                                   "(position in the strategy's order) and strategy.")
    p.add_argument("--train", required=True, help="training data: JSONL, Parquet, CSV or HF save_to_disk folder")
    p.add_argument("--val", required=True, help="valuation data, same formats")
    p.add_argument("--out", required=True, help="the kept rows (.parquet, .jsonl or .csv)")
    _add_store_option(p)
    _add_selection_options(p)
    _add_model_options(p)
    _add_feature_options(p)
    _add_column_options(p)
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("select", parents=[common], help="select a curated subset from scores already computed",
                       description="Keep a subset of a scored training file, chosen by a selection strategy, without a "
                                   "forward pass: raw-mean and cosine-mean read the scores table; balanced, round-robin "
                                   "and max-cosine load the features from the store the scores table records "
                                   "(`forvalue score --store DIR ... --out scores.parquet`).")
    p.add_argument("--scores", required=True, help="the output of `forvalue score`")
    p.add_argument("--train", required=True, help="the training file that was scored")
    p.add_argument("--out", required=True, help="the kept rows (.parquet, .jsonl or .csv)")
    p.add_argument("--store", default=None, help="feature store folder (default: the one the scores table records)")
    _add_selection_options(p)
    _add_column_options(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("features", parents=[common], help="extract and store sparse features (only what is missing)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--shard-size", type=int, default=512, help="samples per Parquet shard")
    _add_model_options(p)
    _add_feature_options(p)
    _add_column_options(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("demo", parents=[common], help="value the bundled demo dataset and print the top and bottom samples")
    p.add_argument("--method", choices=["sparse", "exact", "full", "emb"], default="sparse")
    p.add_argument("--top", type=int, default=5)
    _add_model_options(p)
    _add_feature_options(p)
    p.set_defaults(func=cmd_demo)

    from .benchmarks.cli import add_bench_parser
    from .benchmarks.vlm import add_vlm_bench_parsers
    from .finetune_cli import add_finetune_parsers

    bench = add_bench_parser(sub)
    add_vlm_bench_parsers(next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction)))
    add_finetune_parsers(sub)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; bad data or model -> one line on stderr, exit 2."""
    from .models import ModelError

    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        return args.func(args)
    except (DataError, ModelError) as e:
        print(f"forvalue: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    try:
        return run_command(build_parser(), argv)
    except KeyboardInterrupt:
        print("forvalue: interrupted; finished shards are kept, rerun to complete", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
