"""``forvalue score``: value every training sample against a valuation set."""

from __future__ import annotations

from pathlib import Path

from ..data.holdout import plural
from .._version import __version__
from . import options as o
from .output import check_out, score_rows, write_table

METHOD_CHOICES = ("sparse", "exact", "full-vocab", "emb")


def register(sub, parents) -> None:
    p = sub.add_parser("score", parents=parents, help="value training samples against a valuation set")
    p.add_argument("--train", required=True, help="training data: JSONL, Parquet, CSV or HF save_to_disk folder")
    p.add_argument("--val", required=True, help="valuation data, same formats")
    p.add_argument("--method", choices=METHOD_CHOICES, default="sparse",
                   help="sparse (default, stored form), exact (paper Algorithm 1), full-vocab (the whole "
                        "vocabulary), emb (hidden-state baseline)")
    p.add_argument("--out", required=True, help="output table (.parquet, .jsonl or .csv)")
    o.add_store_option(p)
    o.add_model_options(p)
    o.add_feature_options(p)
    o.add_column_options(p)
    o.add_engine_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..valuation.scoring import normalize_method, rank

    out = check_out(args.out, inputs=(args.train, args.val))
    method = normalize_method(args.method)
    if o.engine_config(args).is_ray and method != "sparse":
        raise o.UsageError(f"--engine ray scores stored sparse features; --method {args.method} needs --engine local")
    root = o.store_root(args)
    v = o.valuator(args, root if method in ("sparse", "emb") else None)
    train, val = o.load_data(args.train, args), o.load_data(args.val, args)
    with v.session():   # on Ray: one connection for the actor pool and the scoring
        prep = o.prepare(v, args, train, val)
        tr, va = prep.sets
        result = v.score(tr, va, method=method, progress=not args.quiet)
    o.report_store(v.store)
    ranks = rank(result.values)
    extra = {} if result.normalized is None else {"normalized": result.normalized, "norm": result.norms}
    rows = sorted(score_rows(tr, result.values, ranks, extra), key=lambda r: r["rank"])
    fp = v.fingerprint
    meta = {"model": fp.to_dict(), "method": method, "feature_config": v.config.to_dict(),
            "feature_config_id": v.config.id, "train": str(args.train), "val": str(args.val),
            "n_val": len(va), "val_ids": [s.sample_id for s in va], "columns": o.columns_meta(args),
            "store": str(Path(root).resolve()) if v.store is not None else None, "code_version": __version__}
    if prep.run is not None:
        meta["engine"] = {"features": prep.run.stats.to_dict(), "scoring": result.info.get("engine")}
    write_table(rows, out, meta)
    if prep.run is None:
        print(f"scored {len(tr)} training samples against {len(va)} valuation samples "
              f"({method}, {result.seconds:.1f}s, model {fp.id}) -> {args.out}")
    else:
        print(f"scored {len(tr)} training samples against {len(va)} valuation samples on Ray "
              f"({plural(v.engine.workers, 'worker')}; {prep.run.computed} features computed, "
              f"{plural(result.info['engine']['batches'], 'shard')} scored, {result.seconds:.1f}s; model {fp.id}) "
              f"-> {args.out}")
    return 0
