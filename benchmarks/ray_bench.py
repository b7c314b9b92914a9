"""Ray engine on this machine: the in-process engine against a local Ray with 1 and 2 workers, and
what Ray costs before the first sample.

    .venv/bin/python benchmarks/ray_bench.py [--model default] [--n 240] [--workers 1,2] [--shard-size 16]
                                             [--parts throughput,overhead] [--json benchmarks/results/ray.json]

Each engine computes the sparse features of the same ``--n`` short samples (the math-reason task)
into a fresh feature store. Reported per engine:
- ``startup_s``: Ray start (``ray.init`` of a local Ray in its own temp folder) - 0 in process;
- ``total_s``: the whole call, Ray start and shut-down, actor start-up (each actor imports torch and
  transformers and loads the model) and extraction; in process: model load + extraction;
- ``samples_per_s``: samples over the run without the Ray start (in process: without the model load;
  on Ray the actors' start-up, torch import and model load included, as a user sees it);
- part ``overhead``: a Ray run of one sample per worker: its ``total_s`` is the fixed cost of a run
  (Ray start, actors importing torch and transformers and loading the model, one tiny batch each,
  shut-down and clean-up).
- part ``read``: reading a JSONL file of ``--read-rows`` rows (no model): by this process as the
  driver streams a file into Ray's object store (every row parsed, checked, hashed and pickled before
  the first batch can start), against inside Ray (one read task per segment, a file under 512 MB cut
  in 8): seconds to the first batch of samples and to the last, and samples/s.
- part ``store``: the passes over a feature store, no model: a synthetic bounded store of
  ``--store-n`` samples (the scale benchmark's, r=128, 64 rows per sample, shards of 4,096) scored
  against ``--store-val`` valuation samples, then ranked by ``balanced`` for the top 10%, in process
  and one Ray task per shard with each worker count; ``score_s`` and ``select_s`` (the selection
  includes its own scoring pass) without the Ray start, and whether the order equals the in-process
  one.

On a 2-core machine two workers cannot give 2x: the in-process engine already uses both cores (torch
threads), and each of two actors gets one. Results go in docs/benchmarks.md ("Scale-out on Ray"), with
the discussion in docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _samples(n: int):
    from forvalue.benchmarks.tasks import make_task
    from forvalue.data.samples import Columns, samples_from_records

    tr, _ = make_task("math-reason", 0, n_train_per_class=max(1, -(-n // 10)), n_val_per_class=1)
    return samples_from_records(tr[:n], columns=Columns(text="text")).samples


def in_process(model, samples, config, root: Path, shard_size: int) -> dict:
    from forvalue.store.feature_store import FeatureStore

    t0 = time.perf_counter()
    lm = model.load()
    t1 = time.perf_counter()
    res = FeatureStore(root).ensure(lm, samples, config, batch_size=model.batch_size, shard_size=shard_size)
    t2 = time.perf_counter()
    return {"engine": "in-process", "workers": 1, "startup_s": 0.0, "model_load_s": round(t1 - t0, 2),
            "total_s": round(t2 - t0, 2), "samples_per_s": round(len(samples) / (t2 - t1), 2),
            "computed": res.computed, "retried_tasks": 0}


def on_ray(model, samples, config, root: Path, shard_size: int, workers: int) -> dict:
    from forvalue.engines import EngineConfig
    from forvalue.engines.ray_features import featurize

    t0 = time.perf_counter()
    res = featurize(model, samples, config, root, EngineConfig(engine="ray", workers=workers), shard_size=shard_size)
    total = time.perf_counter() - t0
    st = res.stats
    return {"engine": "ray", "workers": workers, "startup_s": round(st.startup_s, 2), "total_s": round(total, 2),
            "samples_per_s": round(st.rows_per_s, 2), "computed": res.computed, "retried_tasks": st.retried_tasks,
            "processes": st.processes, "batches": st.batches}


def read_file(path: Path, segment_bytes: int) -> list[dict]:
    """Time to the first batch of samples the actors can take, and to the last, for both readers."""
    from forvalue.data.samples import Columns
    from forvalue.engines import EngineConfig
    from forvalue.engines.ray_features import file_dataset
    from forvalue.engines.ray_read import datasource, plan
    from forvalue.engines.ray_session import import_ray, ray_session

    cols, out = Columns(text="text"), []
    with ray_session(None) as session:
        ray = import_ray()
        # the driver reads, checks, hashes and pickles every row into the object store before the run
        t0 = time.perf_counter()
        ds, _, _ = file_dataset(ray, path, cols, "raise", EngineConfig(engine="ray", workers=2), 2048)
        total = time.perf_counter() - t0
        n = ds.count()
        out.append({"reader": "this process (driver)", "first_batch_s": round(total, 2), "total_s": round(total, 2),
                    "samples": n, "samples_per_s": round(n / total)})
        del ds
        t0 = time.perf_counter()
        fmt, segments = plan(path, segment_bytes)
        ds = ray.data.read_datasource(datasource(path, fmt, segments, cols, 2048), override_num_blocks=len(segments))
        first, n = None, 0
        for b in ds.iter_batches(batch_size=2048, batch_format="pyarrow"):
            n += sum(1 for e in b.column("error").to_pylist() if not e)
            first = first or time.perf_counter() - t0
        total = time.perf_counter() - t0
        out.append({"reader": f"inside Ray ({len(segments)} segments, {session.cpus:g} CPUs)",
                    "first_batch_s": round(first, 2), "total_s": round(total, 2), "samples": n,
                    "samples_per_s": round(n / total)})
    return out


def store_passes(root: Path, n: int, n_val: int, workers: list[int]) -> list[dict]:
    import numpy as np

    from forvalue.benchmarks.scale import synthetic_config, synthetic_fingerprint, build_store, synthetic_features
    from forvalue.engines import EngineConfig
    from forvalue.engines.runner import part_runner
    from forvalue.valuation.feature_source import StoreSource
    from forvalue.valuation.scoring import source_values
    from forvalue.curation.selection import needed_prefix, rank_features
    from forvalue.store.feature_store import FeatureStore

    rows, r = 64, 128
    build_store(root, n, rows=rows, r=r, shard_size=4096)
    source = StoreSource(FeatureStore(root), synthetic_fingerprint(), synthetic_config(rows, r))
    val = synthetic_features(np.random.default_rng(12345), [f"v{i}" for i in range(n_val)], rows, r)
    limit = needed_prefix(n, "top_p", 10)
    out, ref = [], None
    for w in [0, *workers]:
        engine = EngineConfig(engine="ray", workers=w) if w else None
        t0 = time.perf_counter()
        with part_runner(engine) as runner:
            t1 = time.perf_counter()
            source_values(source, val, runner=runner)
            t2 = time.perf_counter()
            ranking = rank_features(source, val, "balanced", limit=limit, runner=runner)
            t3 = time.perf_counter()
        ref = ranking.order if ref is None else ref
        out.append({"engine": f"ray, {w} worker(s)" if w else "in-process", "workers": w or 1,
                    "startup_s": round(t1 - t0, 2), "score_s": t2 - t1, "select_s": t3 - t2,
                    "passes": ranking.info["passes"], "same_order": bool(np.array_equal(ranking.order, ref))})
    for row in out:   # ratios of the measured times, then rounded for the table
        row["score_vs_in_process"] = round(out[0]["score_s"] / row["score_s"], 2)
        row["select_vs_in_process"] = round(out[0]["select_s"] / row["select_s"], 2)
    for row in out:
        row["score_s"], row["select_s"] = round(row["score_s"], 2), round(row["select_s"], 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--parts", default="throughput,overhead")
    ap.add_argument("--read-rows", type=int, default=1_000_000)
    ap.add_argument("--store-n", type=int, default=50000)
    ap.add_argument("--store-val", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.parts == "store":
        return _main_store(args)
    if args.parts == "read":
        return _main_read(args)

    from forvalue.valuation.features import FeatureConfig
    from forvalue.models.loading import ModelConfig

    model = ModelConfig(model=args.model, device="cpu", batch_size=args.batch_size)
    config = FeatureConfig(positions="all")
    samples = _samples(args.n)
    parts = set(args.parts.split(","))
    workers = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fvraybench-"))
    rows = []
    try:
        if "throughput" in parts:
            rows.append(in_process(model, samples, config, tmp / "local", args.shard_size))
            for w in workers:
                rows.append(on_ray(model, samples, config, tmp / f"ray{w}", args.shard_size, w))
            base = rows[0]["samples_per_s"]
            for r in rows:
                r["speedup_vs_in_process"] = round(r["samples_per_s"] / base, 2)
        if "overhead" in parts:
            for w in workers:
                r = on_ray(model, samples[:w], config, tmp / f"overhead{w}", 1, w)
                rows.append(r | {"engine": f"ray, {w} sample(s): fixed cost", "speedup_vs_in_process": "-"})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cols = ["engine", "workers", "startup_s", "total_s", "samples_per_s", "speedup_vs_in_process", "retried_tasks"]
    _report(f"{len(samples)} samples, model {args.model}, cpu, batch size {args.batch_size}, shard size "
            f"{args.shard_size}", cols, rows, args.json, {"n": len(samples), "model": args.model})
    return 0


def _report(title: str, cols: list[str], rows: list[dict], json_path: str | None, head: dict) -> None:
    """Print the rows as a markdown table; write them with ``head`` to ``json_path``."""
    print(title)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(head | {"results": rows}, indent=1))


def _main_read(args) -> int:
    from forvalue.benchmarks.tasks import make_task

    tmp = Path(tempfile.mkdtemp(prefix="fvraybench-"))
    try:
        tr, _ = make_task("math-reason", 0, n_train_per_class=100, n_val_per_class=1)
        path = tmp / "rows.jsonl"
        with open(path, "w") as f:
            for i in range(args.read_rows):
                r = tr[i % len(tr)]
                f.write(json.dumps({"text": f"{r['text']} ({i})"}) + "\n")
        mb = path.stat().st_size / 2**20
        # the product cuts at 64 MB; a smaller file is cut in 8 here so that it is read inside Ray at all
        rows = read_file(path, min(64 * 2**20, path.stat().st_size // 8 + 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(f"reading {args.read_rows} rows ({mb:.0f} MB JSONL), no model", ["reader", "first_batch_s", "total_s",
            "samples", "samples_per_s"], rows, args.json, {"rows": args.read_rows, "mb": round(mb)})
    return 0


def _main_store(args) -> int:
    workers = [int(x) for x in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fvraybench-"))
    try:
        rows = store_passes(tmp / "store", args.store_n, args.store_val, workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cols = ["engine", "startup_s", "score_s", "score_vs_in_process", "select_s", "select_vs_in_process", "passes",
            "same_order"]
    _report(f"synthetic store: {args.store_n} samples (r=128, 64 rows each, shards of 4096), {args.store_val} "
            f"valuation samples, balanced top 10%", cols, rows, args.json, {"n": args.store_n, "n_val": args.store_val})
    return 0


if __name__ == "__main__":
    sys.exit(main())
