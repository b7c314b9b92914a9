"""Orders of the same checked pool side by side, from a store a `forvalue curate` run wrote (no model):
`balanced` (the default: each unit's turn takes the highest cosine x min(1, response tokens / the
unit's)), `balanced` with other powers of that share (0: the cosine alone, the default before),
`raw-mean`, and two stages (the cosine-only `balanced`'s first m*k, then the raw score).
For each: the kept kinds, the mean response tokens of the kept clean rows, the label values covered;
``--kept-dir`` writes each order's top k as ``kept-<order>.parquet`` (column ``id``) for
benchmarks/real_curation_finetune.py ``--kept``.

    .venv/bin/python benchmarks/real_curation_orders.py --data DATA --store STORE --kind-column kind \\
        --clean clean --kept-dir KEPT
    .venv/bin/python benchmarks/real_curation_orders.py --data MIXED --store STORE2 --kind-column noise \\
        --clean none --group-column class
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    import polars as pl

    from benchmarks.check_limits import load_stored_run, stored_run_parser
    from forvalue.curation.consistency import inputs_of, run_checks
    from forvalue.curation.selection import rank_features

    ap = stored_run_parser(__doc__)
    ap.add_argument("--group-column", default=None)
    ap.add_argument("--kept-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    rows, train, val, tf, vf = load_stored_run(args.data, args.store)
    kinds = np.array([r[args.kind_column] for r in rows])
    groups = np.array([r.get(args.group_column, "") if args.group_column else "" for r in rows])
    checked = run_checks(inputs_of(tf), inputs_of(vf))
    k = round(args.fraction * len(train))
    clean = kinds == args.clean
    balanced = rank_features(tf, vf, "balanced", exclude=checked.dropped)
    power = {p: rank_features(tf, vf, "balanced", exclude=checked.dropped, length_power=p).order
             for p in (0.0, 0.5)}
    raw = balanced.raw

    def two_stage(m: int) -> np.ndarray:
        first = power[0.0][:m * k]
        return first[np.argsort(-raw[first], kind="stable")]

    orders = {"balanced": balanced.order, **{f"balanced-share-{p:g}": o for p, o in power.items()},
              "raw-mean": rank_features(tf, vf, "raw-mean", exclude=checked.dropped).order,
              "two-stage-2": two_stage(2), "two-stage-3": two_stage(3)}
    print(f"| order | {args.clean} share of the top {k} | kept kinds | response tokens of the kept {args.clean} "
          f"(pool: {tf.n_positions[clean].mean():.1f}) | {args.group_column or 'groups'} kept |\n|---|---:|---|---:|---:|")
    for name, order in orders.items():
        top = order[:k]
        mix = collections.Counter(kinds[top])
        print(f"| {name} | {mix[args.clean] / k:.3f} | {', '.join(f'{a} {b}' for a, b in sorted(mix.items()))} | "
              f"{tf.n_positions[top[clean[top]]].mean():.1f} | {len(set(groups[top]))} of {len(set(groups))} |")
        if args.kept_dir:
            args.kept_dir.mkdir(parents=True, exist_ok=True)
            pl.DataFrame({"id": [rows[i]["id"] for i in top]}).write_parquet(args.kept_dir / f"kept-{name}.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
