"""``forvalue features``: extract and store sparse features (only those missing)."""

from __future__ import annotations

from ..errors import ConfigError, DataError
from . import options as o
from .output import check_folder


def register(sub, parents) -> None:
    p = sub.add_parser("features", parents=parents, help="extract and store sparse features (only what is missing)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="feature store folder")
    p.add_argument("--shard-size", type=int, default=512, help="samples per shard")
    o.add_model_options(p)
    o.add_feature_options(p)
    o.add_column_options(p)
    o.add_engine_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store.feature_store import FeatureStore
    from ..valuator import Valuator

    if args.shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {args.shard_size}")
    engine = o.engine_config(args)
    # on Ray the device is the actors' (a driver without a GPU may run actors that have one)
    mcfg, fcfg = (o.model_config(args), o.feature_config(args)) if engine.is_ray else o.checked_configs(args)
    store = FeatureStore(check_folder(args.out, "feature store"))
    if engine.is_ray:
        return _run_ray(args, engine, mcfg, fcfg, store)
    data = o.load_data(args.data, args)
    v = Valuator(mcfg, fcfg, store=store)
    samples = o.drop_unencodable(v.lm, data, v.config, args.on_error)
    res = v.featurize(samples, shard_size=args.shard_size, progress=not args.quiet)
    o.report_store(store)
    print(f"{len(samples)} samples: {res.computed} computed, {res.reused} already stored "
          f"({res.features.n_rows} rows) in {store.folder(v.lm.fingerprint, v.config)}")
    return 0


def _run_ray(args, engine, mcfg, fcfg, store) -> int:
    """On Ray: the file is streamed batch by batch into Ray's object store (this process holds one
    batch), the actors load the model (this process does not), check their samples' lengths with
    --on-error's rule and store their shards."""
    from ..engines.ray_features import featurize_file

    res = featurize_file(mcfg, args.data, fcfg, store.root, engine, columns=o.columns(args),
                         shard_size=args.shard_size, on_error=args.on_error, progress=not args.quiet)
    st = res.stats
    report_skipped(args.data, st.skipped)
    kept = res.samples - sum(1 for sid, _ in st.skipped if sid is not None)
    if kept <= 0:
        raise DataError(args.data, None, None, "no samples left after skipping")
    print(f"{kept} samples: {res.computed} computed, {res.reused} already stored ({res.n_rows} rows written) in "
          f"{res.folder}")
    print(f"ray: {st.workers} workers ({st.processes} processes), {st.rows_per_s:.1f} samples/s, "
          f"{st.retried_tasks} retried tasks, start-up {st.startup_s:.1f}s, {st.seconds:.1f}s in all")
    return 0


def report_skipped(path, skipped) -> None:
    import sys

    if skipped:
        print(f"{path}: skipped {len(skipped)} rows or samples (bad rows, samples the model cannot take)",
              file=sys.stderr)
        for _, reason in skipped[:20]:
            print(f"  {reason}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)


def check_ray_store(root) -> None:
    if root is None:
        raise o.UsageError("--engine ray keeps the features in a store: drop --no-store")


def ray_featurize_sets(args, engine, mcfg, fcfg, root):
    """--engine ray with --train / --val: the missing features of both sets computed and stored by one
    Ray actor pool (this process loads no model; call inside a ``ray_session``, after
    :func:`check_ray_store`). Returns (training samples, valuation samples, both without the skipped
    ones; the model fingerprint; the run)."""
    from ..engines.ray_features import featurize

    train, val = o.load_data(args.train, args), o.load_data(args.val, args)
    feats = featurize(mcfg, train.samples + val.samples, fcfg, root, engine, on_error=args.on_error,
                      progress=not args.quiet)
    report_skipped(f"{train.path} / {val.path}", feats.stats.skipped)
    skip = {sid for sid, _ in feats.stats.skipped}
    tr = [s for s in train.samples if s.sample_id not in skip]
    va = [s for s in val.samples if s.sample_id not in skip]
    if not tr or not va:
        raise DataError(train.path if not tr else val.path, None, None, "no samples left after skipping")
    return tr, va, feats.fingerprint, feats
