"""``forvalue select``: a curated subset of a scored training file, without a forward pass."""

from __future__ import annotations

from . import options as o
from .curate import add_dropped_option, write_subset
from ..data.holdout import plural
from .output import check_out


def register(sub, parents) -> None:
    p = sub.add_parser("select", parents=parents, help="select a curated subset from scores already computed",
                       description="Keep a subset of a scored training file, chosen by a selection strategy, without a "
                                   "forward pass: raw-mean and cosine-mean read the scores table; balanced, round-robin "
                                   "and max-cosine load the features from the store the scores table records "
                                   "(`forvalue score ... --out scores.parquet`); with --engine ray their passes over the "
                                   "store run one Ray task per shard.")
    p.add_argument("--scores", required=True, help="the output of `forvalue score`")
    p.add_argument("--train", required=True, help="the training file that was scored")
    p.add_argument("--out", required=True, help="the kept rows (.parquet, .jsonl or .csv)")
    p.add_argument("--store", default=None, help="feature store folder (default: the one the scores table records)")
    add_dropped_option(p)
    o.add_selection_options(p)
    o.add_engine_options(p)
    o.add_column_options(p)
    p.set_defaults(func=run_select)


def run_select(args) -> int:
    from .scores_table import ranking_from_scores
    from ..curation.selection import needed_prefix

    out = check_out(args.out, inputs=(args.train, args.scores))
    if args.dropped:
        check_out(args.dropped, inputs=(args.train, args.scores, args.out))
    engine = o.engine_config(args)
    if args.gpus_per_worker is not None:
        raise o.UsageError("--gpus-per-worker: select runs no model (it reads stored features)")
    mode, value = o.subset_size(args)
    o.check_size(mode, value)
    train = o.load_data(args.train, args).samples
    o.check_count(len(train), mode, value, args.train)
    ranking = ranking_from_scores(train, args.scores, args.strategy, store=args.store,
                                  limit=needed_prefix(len(train), mode, value), engine=engine,
                                  limits=o.check_limits(args))
    if "engine" in ranking.info:
        e = ranking.info["engine"]
        print(f"ray: {plural(e['workers'], 'worker')}, {e['batches']} shard tasks ({e['retried_tasks']} retried), "
              f"{e['rows_per_s']:.0f} stored samples read/s, start-up {e['startup_s']:.1f}s")
    write_subset(args, out, train, ranking, mode, value, {"scores": str(args.scores), "train": str(args.train)})
    return 0
