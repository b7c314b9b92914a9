"""Streamed data path: peak memory of `forvalue validate` and of the Dagster registration against
the number of rows.

    .venv/bin/python benchmarks/stream_bench.py [--rows 1000000,10000000] [--work /tmp/forvalue-stream]
                                                [--json benchmarks/results/stream.json]

For each size a JSONL file of synthetic prompt/response rows is written (streamed, kept under
--work for reuse); then, each in a fresh process so that its peak RSS is its own:

- ``validate``: ``forvalue validate --data FILE`` (polars batches, nothing kept);
- ``register``: the ``training_dataset`` asset materialized with Dagster (an ephemeral instance, a
  fresh DuckDB catalog): content hash, streamed batches into the staging table, one transaction.

Flat memory means the peak RSS of the largest size stays within a small factor of the smallest's
(printed as ``rss ratio``), while the file grows by the size ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("apple river stone cloud tiger paper green music light storm seven eleven quickly answer "
         "because number total left right people bought each").split()


def write_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` rows of {"id", "prompt", "response"} (~150 bytes each), written in blocks."""
    import numpy as np

    if path.exists() and path.with_suffix(".done").exists():
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            a, b = rng.integers(1, 1000, m), rng.integers(1, 1000, m)
            w = rng.integers(0, len(WORDS), (m, 6))
            lines = []
            for i in range(m):
                words = " ".join(WORDS[j] for j in w[i])
                lines.append(json.dumps({"id": f"r{start + i}", "prompt": f"What is {a[i]} plus {b[i]}? ({words})",
                                         "response": f"{a[i]} plus {b[i]} is {a[i] + b[i]}."}))
            fh.write("\n".join(lines) + "\n")
    tmp.replace(path)
    path.with_suffix(".done").write_text("")
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def validate_step(path: str) -> dict:
    import io
    from contextlib import redirect_stdout

    from forvalue.cli import main

    t0 = time.perf_counter()
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["validate", "--data", path])
    return {"seconds": time.perf_counter() - t0, "rc": rc, "peak_rss_mb": _peak_mb(), "output": out.getvalue()[-300:]}


def register_step(path: str, root: str) -> dict:
    from dagster import DagsterInstance, materialize

    from forvalue_assets.ingest.assets import training_dataset
    from forvalue_assets.partitions import training_datasets
    from resources import DuckDBStoreResource

    catalog = Path(root) / "catalog.duckdb"
    for p in (catalog, catalog.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(training_datasets.name, ["big"])
    t0 = time.perf_counter()
    res = materialize([training_dataset], partition_key="big", instance=instance,
                      resources={"catalog": DuckDBStoreResource(path=str(catalog))},
                      run_config={"ops": {"training_dataset": {"config": {"path": path}}}})
    seconds = time.perf_counter() - t0
    meta = res.asset_materializations_for_node("training_dataset")[0].metadata
    return {"seconds": seconds, "ok": res.success, "rows": meta["dagster/row_count"].value,
            "peak_rss_mb": _peak_mb(), "catalog_mb": catalog.stat().st_size / 2**20}


def _child(step: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.stream_bench import {step}_step as f; "
            f"r = f(*json.loads(sys.argv[1])); print('RESULT ' + json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{step} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--work", default="/tmp/forvalue-stream")
    ap.add_argument("--steps", default="validate,register")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.rows.split(",")]:
        t0 = time.perf_counter()
        path = write_jsonl(work / f"rows-{n}.jsonl", n)
        row = {"rows": n, "file_mb": path.stat().st_size / 2**20, "write_seconds": time.perf_counter() - t0}
        for step in args.steps.split(","):
            res = _child(step, str(path)) if step == "validate" else _child(step, str(path), str(work))
            row[step] = res
            print(f"[{time.strftime('%H:%M:%S')}] {n} rows {step}: {res['seconds']:.1f} s, peak RSS "
                  f"{res['peak_rss_mb']:.0f} MB", flush=True)
            _save(args.json, rows + [row])      # after every step: a long run keeps what it measured
        rows.append(row)
    print("\n| rows | file MB | validate s | validate peak RSS MB | register s | register peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        v, g = r.get("validate", {}), r.get("register", {})
        print(f"| {r['rows']} | {r['file_mb']:.0f} | {v.get('seconds', 0):.1f} | {v.get('peak_rss_mb', 0):.0f} | "
              f"{g.get('seconds', 0):.1f} | {g.get('peak_rss_mb', 0):.0f} |")
    if len(rows) > 1:
        for step in args.steps.split(","):
            print(f"{step}: rss ratio {rows[-1][step]['peak_rss_mb'] / rows[0][step]['peak_rss_mb']:.2f} for "
                  f"{rows[-1]['rows'] / rows[0]['rows']:.0f}x the rows")
    _save(args.json, rows)
    return 0


def _save(path: str | None, rows: list[dict]) -> None:
    if path:
        from forvalue.benchmarks.runner import machine_info

        Path(path).write_text(json.dumps({"results": rows, "meta": {"command": " ".join(sys.argv),
                                                                     "machine": machine_info()}}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
