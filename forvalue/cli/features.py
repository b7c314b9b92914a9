"""``forvalue features``: extract and store sparse features (only those missing)."""

from __future__ import annotations

from ..data.holdout import plural
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
    if args.shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {args.shard_size}")
    v = o.valuator(args, str(check_folder(args.out, "feature store")))
    if v.engine.is_ray:   # the file streamed into Ray (this process holds one batch, loads no model)
        return _report_ray(args, v.featurize_file(args.data, columns=o.columns(args), shard_size=args.shard_size,
                                                  on_error=args.on_error, progress=not args.quiet))
    data = o.load_data(args.data, args)
    samples = o.prepare(v, args, data).sets[0]
    res = v.featurize(samples, shard_size=args.shard_size, progress=not args.quiet)
    o.report_store(v.store)
    print(f"{len(samples)} samples: {res.computed} computed, {res.reused} already stored "
          f"({res.features.n_rows} rows) in {v.store.folder(v.fingerprint, v.config)}")
    return 0


def _report_ray(args, res) -> int:
    """The terminal report of a Ray feature run: skipped rows and samples, what was computed."""
    st = res.stats
    o.report_skipped(args.data, "rows or samples (bad rows, samples the model cannot take)",
                     [reason for _, reason in st.skipped])
    kept = res.samples - sum(1 for sid, _ in st.skipped if sid is not None)
    if kept <= 0:
        raise DataError(args.data, None, None, "no samples left after skipping")
    print(f"{kept} samples: {res.computed} computed, {res.reused} already stored ({res.n_rows} rows written) in "
          f"{res.folder}")
    print(f"ray: {plural(st.workers, 'worker')} ({plural(st.processes, 'process')}), {st.rows_per_s:.1f} samples/s, "
          f"{st.retried_tasks} retried tasks, start-up {st.startup_s:.1f}s, {st.seconds:.1f}s in all")
    return 0
