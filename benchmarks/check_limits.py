"""The consistency checks' limits side by side, on the check values a `forvalue curate` run stored:
each combination of grounding and answer limits (the valuation set's maximum or a quantile), the
strategy's top 10% counted per label (no model, no forward pass).

    .venv/bin/python benchmarks/check_limits.py --data DATA --store STORE --kind-column kind --clean clean
    .venv/bin/python benchmarks/check_limits.py --data MIXED --store STORE2 --kind-column noise --clean none

``DATA`` holds train.jsonl and val.jsonl (with the label column), ``STORE`` the feature store the
curate run wrote (one model and feature configuration).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _limit(q: float | None) -> str:
    return "none" if q is None else "max" if q >= 1 else f"q{q:g}"


def load_stored_run(data: Path, store_path: str):
    """(rows of train.jsonl, train samples, valuation samples, their stored features) of a curate run's
    store (one model and feature configuration), read without the model."""
    from forvalue.data.samples import load_samples
    from forvalue.models.loading import ModelFingerprint
    from forvalue.store.feature_store import FeatureStore
    from forvalue.valuation.features import FeatureConfig

    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines() if x.strip()]
    train = load_samples(data / "train.jsonl").samples
    val = load_samples(data / "val.jsonl").samples
    store = FeatureStore(store_path)
    (folder,) = store.folders()
    info = json.loads(next(folder.glob("shard-*.json")).read_text())
    fp, cfg = ModelFingerprint.from_dict(info["model"]), FeatureConfig.from_dict(info["feature_config"])
    return (rows, train, val, store.load(fp, cfg, [s.sample_id for s in train]),
            store.load(fp, cfg, [s.sample_id for s in val]))


def stored_run_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a script over a stored curate run: --data, --store, --kind-column, --clean,
    --fraction."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="train.jsonl and val.jsonl, with the label column")
    ap.add_argument("--store", required=True, help="the feature store the curate run wrote")
    ap.add_argument("--kind-column", default="kind")
    ap.add_argument("--clean", default="clean", help="the label value of clean target rows")
    ap.add_argument("--fraction", type=float, default=0.10, help="the subset's share of the pool")
    return ap


def main(argv=None) -> int:
    from forvalue.curation.consistency import Checked, inputs_of, threshold_check
    from forvalue.curation.selection import rank_features

    ap = stored_run_parser(__doc__)
    ap.add_argument("--strategy", default="balanced")
    args = ap.parse_args(argv)
    rows, train, val, tf, vf = load_stored_run(args.data, args.store)
    kinds = np.array([r[args.kind_column] for r in rows])
    ti, vi = inputs_of(tf), inputs_of(vf)
    k = round(args.fraction * len(train))
    print(f"| grounding limit | answer limit | clean share of the top {k} | kept per kind | clean dropped | dropped |\n"
          "|---|---|---:|---|---:|---:|")
    for qg in (1.0, 0.95, 0.9):
        for qa in (None, 1.0, 0.95, 0.9):
            checked = Checked([threshold_check("grounding", ti, vi, qg)]
                              + ([threshold_check("answer", ti, vi, qa)] if qa else []))
            order = rank_features(tf, vf, args.strategy, exclude=checked.dropped, limit=k).order
            top = collections.Counter(kinds[order[:k]])
            print(f"| {_limit(qg)} | {_limit(qa)} | {top[args.clean] / k:.3f} | "
                  f"{', '.join(f'{a} {b}' for a, b in sorted(top.items()))} | "
                  f"{int((kinds[checked.failed] == args.clean).sum())} | {int(checked.failed.sum())} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
