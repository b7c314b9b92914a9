"""The Dagster ``curated_subset`` asset over a large registered dataset: time and peak memory.

    .venv/bin/python benchmarks/subset_asset_bench.py --samples 1000000 --store /work/scale/s1m \
        --root /tmp/subset-bench --json benchmarks/results/subset-asset-1m.json

Builds (once, under ``--root``) a catalog whose training dataset holds the N samples of the
synthetic store of ``forvalue bench scale`` (same ids; each sample a prompt and a ~200-character
response, stored as the real registration stores it), a valuation set of ``--n-val`` samples whose
features go into the same store, the model and feature runs, and the scores of the dataset against
the valuation set (re-scored from the store). Then materializes ``curated_subset`` for the pair in
a fresh process (Dagster's ``materialize``; explanations off, since no model is loaded) and reports
its wall time and the peak RSS of that process (``ru_maxrss``), for each subset size given.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET, VALUATION = "bench_train", "bench_val"


def _settings(store_root: str, rows: int, r: int):
    from forvalue.benchmarks.scale import synthetic_config, synthetic_fingerprint

    return synthetic_fingerprint(), synthetic_config(rows, r)


def build(root: Path, store_root: str, n: int, n_val: int, rows: int, r: int) -> None:
    """The catalog of the benchmark (skipped when it holds scores already)."""
    import numpy as np

    from forvalue.benchmarks.scale import synthetic_features
    from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, Catalog
    from forvalue.data.samples import Sample
    from forvalue.valuation.feature_source import StoreSource
    from forvalue.valuation.scoring import source_values
    from forvalue.store.feature_store import FeatureStore

    cat = Catalog(root / "catalog.duckdb")
    fp, cfg = _settings(store_root, rows, r)
    if cat.path.exists() and cat.latest_score_run(DATASET, VALUATION, cfg.id) is not None:
        return
    store = FeatureStore(store_root)
    source = StoreSource(store, fp, cfg)
    ids = source.sample_ids[:n]
    if len(ids) < n:
        raise SystemExit(f"the store at {store_root} holds {len(ids)} samples, fewer than {n}")
    words = "the of and to in is that for it as with was on be by this are from at".split()

    def sample(sid: str, row: int, prefix: str) -> Sample:
        rng = np.random.default_rng(row)
        prompt = f"{prefix} question {row}: " + " ".join(rng.choice(words, 12))
        response = " ".join(rng.choice(words, 40))
        return Sample(sample_id=sid, prompt=prompt, response=response, row=row,
                      record={"id": f"{prefix}-{row}", "prompt": prompt, "response": response, "source": prefix})

    t0 = time.perf_counter()
    cat.register_set(KIND_DATASET, DATASET, "v1", "bench_train.jsonl",
                     [sample(s, i + 1, "train") for i, s in enumerate(ids)], fmt="jsonl")
    val_ids = [f"v{i}" for i in range(n_val)]
    val = synthetic_features(np.random.default_rng(12345), val_ids, rows, r)
    try:
        StoreSource(store, fp, cfg, val_ids)
    except KeyError:
        store.write_shard(val, fp, cfg)
    cat.register_set(KIND_VALUATION, VALUATION, "v1", "bench_val.jsonl",
                     [sample(s, i + 1, "val") for i, s in enumerate(val_ids)], fmt="jsonl")
    cat.record_model(fp, spec="synthetic")
    runs = [cat.record_feature_run(kind=kind, name=name, version="v1", model_id=fp.id, config=cfg, n_samples=k,
                                   n_computed=k, n_reused=0, n_shards_written=1, store_folder=store_root)
            for kind, name, k in ((KIND_DATASET, DATASET, n), (KIND_VALUATION, VALUATION, n_val))]
    raw, normalized, norm = source_values(StoreSource(store, fp, cfg, ids), val)
    cat.replace_scores(dataset_name=DATASET, dataset_version="v1", valuation_set=VALUATION, valuation_version="v1",
                       model_id=fp.id, feature_config_id=cfg.id, sample_ids=ids, values=raw, normalized=normalized,
                       norms=norm, train_feature_run_id=runs[0], val_feature_run_id=runs[1])
    print(f"built the catalog: {n} samples registered and scored in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)


def materialize(root: str, store_root: str, rows: int, r: int, mode: str, value: float, strategy: str) -> dict:
    """One materialization of curated_subset in this process: seconds and peak RSS."""
    import dagster as dg

    from forvalue_assets.curation.assets import curated_subset
    from forvalue_assets.partitions import pair_key, training_datasets, valuation_sets
    from resources import (CurationResource, DuckDBStoreResource, EngineResource, FeatureStoreResource,
                           ModelResource, ray_resource_from_env)

    _, cfg = _settings(store_root, rows, r)
    resources = {"catalog": DuckDBStoreResource(path=str(Path(root) / "catalog.duckdb"),
                                                export_dir=str(Path(root) / "subsets")),
                 "feature_store": FeatureStoreResource(root=store_root, **{k: getattr(cfg, k) for k in (
                     "positions", "k", "r", "seed", "chat_template", "max_length", "store_dtype", "energy",
                     "max_rows")}),
                 "curation": CurationResource(mode=mode, value=value, strategy=strategy, explain=False),
                 "model": ModelResource(), "engine": EngineResource(), "ray": ray_resource_from_env()}
    (Path(root) / "dagster").mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(Path(root) / "dagster")) as instance:
        instance.add_dynamic_partitions(training_datasets.name, [DATASET])
        instance.add_dynamic_partitions(valuation_sets.name, [VALUATION])
        t0 = time.perf_counter()
        res = dg.materialize([curated_subset], partition_key=pair_key(DATASET, VALUATION), instance=instance,
                             resources=resources)
        seconds = time.perf_counter() - t0
        meta = res.asset_materializations_for_node("curated_subset")[0].metadata
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "kept": meta["dagster/row_count"].value, "n_total": meta["n_total"].value,
            "parquet_bytes": Path(meta["parquet"].value).stat().st_size}


def _child(fn: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"from subset_asset_bench import {fn} as f; print(json.dumps(f(*json.loads(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--store", required=True, help="a store built by `forvalue bench scale --store DIR`")
    p.add_argument("--root", required=True, help="where the catalog and the subsets go (kept between runs)")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--r", type=int, default=128)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--subset", action="append", default=None, metavar="MODE:VALUE:STRATEGY",
                   help="subsets to materialize (default: top_p:10:balanced and drop_lowest_p:10:balanced)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--build-only", json.dumps(
        [str(root), args.store, args.samples, args.n_val, args.rows, args.r])], check=True)
    build_s = time.perf_counter() - t0
    rows = []
    for spec in args.subset or ["top_p:10:balanced", "drop_lowest_p:10:balanced"]:
        mode, value, strategy = spec.split(":")
        res = _child("materialize", str(root), args.store, args.rows, args.r, mode, float(value), strategy)
        rows.append({"mode": mode, "value": float(value), "strategy": strategy, **res})
        print(f"{mode} {value} {strategy}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB, "
              f"{res['kept']} kept of {res['n_total']}", file=sys.stderr, flush=True)
    print("| samples | subset | strategy | seconds | peak RSS MB | kept | Parquet MB |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {args.samples} | {row['mode']} {row['value']:g} | {row['strategy']} | {row['seconds']:.1f} | "
              f"{row['peak_rss_mb']:.0f} | {row['kept']} | {row['parquet_bytes'] / 1e6:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "meta": {
            "command": " ".join(sys.argv), "build_seconds": build_s,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}}, indent=2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--build-only":
        build(Path(json.loads(sys.argv[2])[0]), *json.loads(sys.argv[2])[1:])
        sys.exit(0)
    sys.exit(main())
