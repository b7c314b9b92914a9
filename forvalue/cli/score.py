"""``forvalue score``: value every training sample against a valuation set."""

from __future__ import annotations

from pathlib import Path

from .._version import __version__
from . import options as o
from .output import check_out, score_rows, write_table

METHOD_CHOICES = ("sparse", "exact", "full-vocab", "emb")


def register(sub, parents) -> None:
    p = sub.add_parser("score", parents=parents, help="value training samples against a valuation set")
    p.add_argument("--train", required=True, help="training data: JSONL, Parquet, CSV or HF save_to_disk folder")
    p.add_argument("--val", required=True, help="valuation data, same formats")
    p.add_argument("--method", choices=[*METHOD_CHOICES, "full"], default="sparse",
                   help="sparse (default, stored form), exact (paper Algorithm 1), full-vocab (the whole "
                        "vocabulary; 'full' is its deprecated name), emb (hidden-state baseline)")
    p.add_argument("--out", required=True, help="output table (.parquet, .jsonl or .csv)")
    o.add_store_option(p)
    o.add_model_options(p)
    o.add_feature_options(p)
    o.add_column_options(p)
    o.add_engine_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..valuation.scoring import normalize_method, rank
    from ..store.feature_store import FeatureStore
    from ..valuator import Valuator

    out = check_out(args.out, inputs=(args.train, args.val))
    method = normalize_method(args.method)
    engine = o.engine_config(args)
    # on Ray the device is the actors' (a driver without a GPU may run actors that have one)
    mcfg, fcfg = (o.model_config(args), o.feature_config(args)) if engine.is_ray else o.checked_configs(args)
    root = o.store_root(args)
    if engine.is_ray:
        return _run_ray(args, out, engine, mcfg, fcfg, root, method)
    store = FeatureStore(root) if root and method in ("sparse", "emb") else None
    train = o.load_data(args.train, args)
    val = o.load_data(args.val, args)
    v = Valuator(mcfg, fcfg, store=store)
    tr = o.drop_unencodable(v.lm, train, v.config, args.on_error)
    va = o.drop_unencodable(v.lm, val, v.config, args.on_error)
    result = v.score(tr, va, method=method, progress=not args.quiet)
    o.report_store(store)
    ranks = rank(result.values)
    extra = {} if result.normalized is None else {"normalized": result.normalized, "norm": result.norms}
    rows = sorted(score_rows(tr, result.values, ranks, extra), key=lambda r: r["rank"])
    meta = {"model": v.lm.fingerprint.to_dict(), "method": method, "feature_config": v.config.to_dict(),
            "feature_config_id": v.config.id, "train": str(args.train), "val": str(args.val),
            "n_val": len(va), "val_ids": [s.sample_id for s in va], "columns": o.columns_meta(args),
            "store": str(Path(root).resolve()) if store is not None else None, "code_version": __version__}
    write_table(rows, out, meta)
    print(f"scored {len(tr)} training samples against {len(va)} valuation samples "
          f"({method}, {result.seconds:.1f}s, model {v.lm.fingerprint.id}) -> {args.out}")
    return 0


def _run_ray(args, out, engine, mcfg, fcfg, root, method) -> int:
    """--engine ray: the missing features of both sets computed and stored by the Ray actors, then
    the stored training features scored one Ray task per shard (this process loads no model)."""
    from ..engines.ray_session import ray_session
    from ..valuation.scoring import rank
    from ..store.feature_store import FeatureStore
    from ..valuator import Valuator
    from .features import check_ray_store, ray_featurize_sets

    if method != "sparse":
        raise o.UsageError(f"--engine ray scores stored sparse features; --method {args.method} needs --engine local")
    check_ray_store(root)
    with ray_session(engine.ray_address):   # one Ray (and one actor pool) for both sets and the scoring
        tr, va, fp, feats = ray_featurize_sets(args, engine, mcfg, fcfg, root)
        result = Valuator.from_store(FeatureStore(root), fp, fcfg).score_stored(
            [s.sample_id for s in tr], [s.sample_id for s in va], engine=engine)
    stats = result.info["engine"]
    ranks = rank(result.values)
    rows = sorted(score_rows(tr, result.values, ranks, {"normalized": result.normalized, "norm": result.norms}),
                  key=lambda r: r["rank"])
    meta = {"model": fp.to_dict(), "method": method, "feature_config": fcfg.to_dict(), "feature_config_id": fcfg.id,
            "train": str(args.train), "val": str(args.val), "n_val": len(va), "val_ids": [s.sample_id for s in va],
            "columns": o.columns_meta(args), "store": str(Path(root).resolve()), "code_version": __version__,
            "engine": {"features": feats.stats.to_dict(), "scoring": stats}}
    write_table(rows, out, meta)
    computed = feats.computed
    print(f"scored {len(tr)} training samples against {len(va)} valuation samples on Ray ({engine.workers} workers; "
          f"{computed} features computed, {stats['batches']} shards scored, {result.seconds:.1f}s; model {fp.id}) "
          f"-> {args.out}")
    return 0
