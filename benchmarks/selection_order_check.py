"""Does a change of the selection code keep the order? The pairwise strategies' orders of this
checkout against another checkout's (say, the previous commit) and against a float64 computation.

    git worktree add /tmp/previous 23a999c
    .venv/bin/python benchmarks/selection_order_check.py --other /tmp/previous --work /tmp/order-check

Two kinds of features, each ranked in a fresh process per checkout:
- ``real``: the curation benchmark's ``mixed`` set (900 training / 100 valuation samples), features
  extracted once with the default model and today's default feature configuration into a store
  under ``--work``; the whole order of each strategy.
- ``synthetic``: ``--synthetic-n`` samples of ``forvalue bench scale``'s generator in memory against
  100 valuation samples, top 10%; also ranked by this checkout with the features in float64 (the
  reference of the same definition without float32 rounding).

Prints, per kind and strategy, how many positions differ and each order's clean share and
template coverage (real features) or timing (synthetic).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("balanced", "round-robin", "max-cosine")


def _real(work: str, stage: str) -> dict:
    """``extract``: the mixed set's features into ``work``/store; else the strategies' whole orders."""
    import pickle

    from curation_sets import curation_set
    from forvalue.data.samples import samples_from_records
    from forvalue.valuation.features import FeatureConfig
    from forvalue.store.feature_store import FeatureStore
    from forvalue.valuator import Valuator

    tr, va = curation_set("mixed")
    train, val = samples_from_records(tr).samples, samples_from_records(va).samples
    store = FeatureStore(Path(work) / "store")
    if stage == "extract":
        v = Valuator("default", store=store)
        v.featurize(train + val)
        (Path(work) / "fingerprint.pkl").write_bytes(pickle.dumps(v.lm.fingerprint))
        return {}
    fp = pickle.loads((Path(work) / "fingerprint.pkl").read_bytes())
    v = Valuator.from_store(store, fp, FeatureConfig())
    ids, val_ids = [s.sample_id for s in train], [s.sample_id for s in val]
    return {s: v.rank_stored(ids, val_ids, s).order.tolist() for s in STRATEGIES}


def _synthetic(n: int, float64: bool) -> dict:
    import numpy as np

    from forvalue.benchmarks.scale import synthetic_features
    from forvalue.curation.selection import needed_prefix, rank_features

    train = synthetic_features(np.random.default_rng(0), [f"s{i}" for i in range(n)], 64, 128)
    val = synthetic_features(np.random.default_rng(12345), [f"v{i}" for i in range(100)], 64, 128)
    if float64:
        train.vectors, val.vectors = train.vectors.astype(np.float64), val.vectors.astype(np.float64)
    out = {}
    for s in STRATEGIES:
        t0 = time.perf_counter()
        order = rank_features(train, val, s, limit=needed_prefix(n, "top_p", 10)).order
        out[s] = {"order": order[:needed_prefix(n, "top_p", 10)].tolist(), "seconds": time.perf_counter() - t0}
    return out


def _in(tree: Path, fn: str, *args) -> dict:
    """``fn(*args)`` of this script run with ``tree``'s forvalue first on the path, in a fresh process."""
    code = (f"import json, sys; sys.path.insert(0, {str(tree)!r}); sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); "
            f"from selection_order_check import {fn} as f; print(json.dumps(f(*json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", required=True, help="another checkout of the project (e.g. a git worktree)")
    p.add_argument("--work", required=True, help="folder for the real set's feature store (kept)")
    p.add_argument("--synthetic-n", type=int, default=20000)
    args = p.parse_args(argv)
    import numpy as np

    from curation_sets import curation_set, selection_metrics

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "fingerprint.pkl").exists():
        _in(ROOT, "_real", str(work), "extract")
    here, other = _in(ROOT, "_real", str(work), "rank"), _in(Path(args.other), "_real", str(work), "rank")
    tr, _ = curation_set("mixed")
    clean = np.array([r["is_clean"] for r in tr])
    classes = np.array([r["class_id"] for r in tr])
    print("| features | strategy | positions | differ from the other checkout | differ from float64 (this / other) "
          "| this checkout | other checkout |\n|---|---|---:|---:|---:|---|---|")
    for s in STRATEGIES:
        a, b = np.array(here[s]), np.array(other[s])
        m = {k: round(v, 3) for k, v in selection_metrics(a, clean, classes).items()}
        mo = {k: round(v, 3) for k, v in selection_metrics(b, clean, classes).items()}
        print(f"| real (mixed, 900) | {s} | {len(a)} | {int((a != b).sum())} | - | {m} | {mo} |")
    mine, theirs = _in(ROOT, "_synthetic", args.synthetic_n, False), _in(Path(args.other), "_synthetic",
                                                                          args.synthetic_n, False)
    exact = _in(ROOT, "_synthetic", args.synthetic_n, True)
    for s in STRATEGIES:
        a, b, x = (np.array(d[s]["order"]) for d in (mine, theirs, exact))
        print(f"| synthetic ({args.synthetic_n} x 100, top 10%) | {s} | {len(a)} | {int((a != b).sum())} | "
              f"{int((a != x).sum())} / {int((b != x).sum())} | {mine[s]['seconds']:.2f} s | "
              f"{theirs[s]['seconds']:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
