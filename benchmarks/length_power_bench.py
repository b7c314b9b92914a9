"""`balanced`'s length share side by side: a valuation unit's turn takes the training sample with
the highest cosine x min(1, its response tokens / the unit's)^p (p = 0: the cosine alone, the
default before; 1: the default). Beside them, two other ways to stop preferring short samples,
computed here from the same cosines (not product settings): ``tokens^0.5``, the cosine x the
square root of the response tokens, uncapped (it rewards inserted junk text), and ``norm^0.5``,
the cosine x ||G||^0.5 (it rewards a high loss as much as a long response). One feature extraction
per set (default model and feature configuration, through a store), then every variant ranks the
same features, with the consistency checks (the product's default) and without them (the strategy
alone).

Sets: the curation benchmark's math-reason sets (10 templates, 40% of the training responses
corrupted by one noise kind, or by all in ``mixed``; benchmarks/curation_sets.py) and the
mislabeled sentiment task. Per set and power: clean share / templates covered of the first 5% and
10%, the clean AUC of the whole order, and the mean response tokens of the kept clean samples of
the first 10% (the cosine alone prefers short ones).

    .venv/bin/python benchmarks/length_power_bench.py --threads 2 --json benchmarks/results/length-power.json

``--timing N``: instead, the cost of the share: `balanced`'s first 10% of N synthetic samples in
memory (the scale benchmark's features, 64 rows of r=64 each, 100 valuation samples) with the share
(power 1) and without it (power 0), alternately, 3 rounds; prints the median seconds and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

POWERS = (0.0, 0.5, 1.0)


def sets(names: list[str]):
    """(name, BenchData, is_clean, classes) per set."""
    from curation_sets import curation_data, curation_set

    from forvalue.benchmarks.runner import build_data
    from forvalue.benchmarks.tasks import make_mislabeled

    for name in names:
        if name == "mislabeled":
            tr, va = make_mislabeled(0, n_train=200, n_val=50, flip_rate=0.5)
            data = build_data("mislabeled", tr, va, positions="response", chat_template=False)
            yield name, data, np.array([r["is_clean"] for r in tr]), np.array([r.get("label", "") for r in tr])
        else:
            tr, va = curation_set(name)
            yield (name, curation_data(name, tr, va), np.array([bool(r["is_clean"]) for r in tr]),
                   np.array([r["class_id"] for r in tr]))


def weighted_order(tf, vf, exclude, weight: np.ndarray) -> np.ndarray:
    """`balanced`'s order with cosine x ``weight`` [n] as the units' preference: the same units and
    visit order as the product's, a round-robin over dense [units, n] values."""
    from forvalue.curation.selection import valuation_units

    units, visit, _ = valuation_units(vf, smooth=3, max_units=1024, seed=0)
    key = np.concatenate([c for _, c in units.blocks(tf)], axis=1) * weight[None, :]
    ranked = np.argsort(-key, axis=1, kind="stable")
    taken = np.zeros(len(tf), bool)
    exclude = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
    taken[exclude] = True
    ptr, out, turn = np.zeros(len(units), np.int64), [], 0
    while len(out) < len(tf) - len(exclude):
        u = visit[turn % len(units)]
        while taken[ranked[u, ptr[u]]]:
            ptr[u] += 1
        out.append(ranked[u, ptr[u]])
        taken[out[-1]] = True
        turn += 1
    return np.concatenate([np.array(out, np.int64), exclude])


def timing(n: int, rounds: int = 3) -> None:
    from forvalue.benchmarks.scale import synthetic_features
    from forvalue.curation.selection import needed_prefix, rank_features

    rng = np.random.default_rng(0)
    train = synthetic_features(rng, [f"s{i}" for i in range(n)], 64, 64)
    train.n_positions = rng.integers(8, 200, size=n)
    val = synthetic_features(rng, [f"v{i}" for i in range(100)], 64, 64)
    limit = needed_prefix(n, "top_p", 10)
    seconds: dict[float, list[float]] = {0.0: [], 1.0: []}
    for _ in range(rounds):
        for p in seconds:
            t0 = time.perf_counter()
            rank_features(train, val, "balanced", limit=limit, length_power=p)
            seconds[p].append(time.perf_counter() - t0)
    med = {p: float(np.median(v)) for p, v in seconds.items()}
    print(f"balanced, first 10% of {n:,} samples, 100 valuation samples, median of {rounds}: "
          f"share {med[1.0]:.2f} s, cosine alone {med[0.0]:.2f} s, ratio {med[1.0] / med[0.0]:.3f}")


def main(argv=None) -> int:
    import torch
    from curation_sets import CURATION_SETS, selection_metrics

    from forvalue.curation.consistency import checks_for, inputs_of
    from forvalue.curation.selection import rank_features
    from forvalue.models.loading import load_model
    from forvalue.store.feature_store import FeatureStore
    from forvalue.valuator import Valuator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join([s for s in CURATION_SETS if s != "clean"] + ["mislabeled"]))
    ap.add_argument("--powers", default=",".join(f"{p:g}" for p in POWERS))
    ap.add_argument("--no-others", dest="others", action="store_false",
                    help="leave out the tokens^0.5 and norm^0.5 variants")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--store", default=str(ROOT / ".forvalue" / "bench" / "length-power-features"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--timing", type=int, default=0, metavar="N", help="time the share on N synthetic samples")
    args = ap.parse_args(argv)
    if args.timing:
        timing(args.timing)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    powers = [float(p) for p in args.powers.split(",")]
    lm = load_model(args.model)
    store = FeatureStore(args.store)
    rows = []
    print("| set | checks | balanced's units prefer | clean / templates, first 5% | first 10% | clean AUC | "
          "response tokens of the kept clean (first 10%) |\n|---|---|---:|---:|---:|---:|---:|", flush=True)
    for name, data, clean, classes in sets(args.sets.split(",")):
        t0 = time.perf_counter()
        valuator = Valuator(lm, data.config, store=store)
        tf, vf = valuator.featurize(data.train).features, valuator.featurize(data.val).features
        seconds = time.perf_counter() - t0
        k10 = max(1, round(0.1 * len(tf)))
        others = {"cosine x tokens^0.5": np.sqrt(tf.n_positions.astype(float)),
                  "cosine x norm^0.5": np.sqrt(tf.sample_norms())} if args.others else {}
        variants = [(f"cosine x share^{p:g}", p, None) for p in powers] + [(k, None, w) for k, w in others.items()]
        checked, _ = checks_for(inputs_of(tf), inputs_of(vf), data.config.checks, limits=valuator.limits)
        for checks in (True, False):
            dropped = checked.dropped if checks and checked is not None else None
            for label, p, weight in variants:
                order = (rank_features(tf, vf, "balanced", exclude=dropped, length_power=p).order if weight is None
                         else weighted_order(tf, vf, dropped, weight))
                m = selection_metrics(order, clean, classes)
                top = order[:k10]
                tokens = float(tf.n_positions[top[clean[top]]].mean()) if clean[top].any() else float("nan")
                rows.append({"set": name, "checks": checks, "variant": label, **m, "clean_tokens_10": tokens,
                             "feature_seconds": seconds})
                print(f"| {name} | {'on' if checks else 'off'} | {label} | {m['clean_5']:.2f} / {m['coverage_5']} | "
                      f"{m['clean_10']:.2f} / {m['coverage_10']} | {m.get('clean_auc', float('nan')):.3f} | "
                      f"{tokens:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["length_power_bench.py"] + (argv or sys.argv[1:])),
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
