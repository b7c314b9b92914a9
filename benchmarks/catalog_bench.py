"""Catalog writes at scale: the scores of N training samples and a subset keeping 90% of them
("drop the lowest 10%"), each written in one transaction into a fresh DuckDB catalog under its
memory limit (1 GB by default, ``FORVALUE_DUCKDB_MEMORY``).

    .venv/bin/python benchmarks/catalog_bench.py [--rows 1000000,10000000] [--keyed]
                                                 [--json benchmarks/results/catalog.json]

``--keyed`` also runs each size on the first release's `scores` table (a primary key index on
dataset, valuation set, feature config, model and sample id), for comparison. Each (size, table)
runs in a fresh process; reported: seconds of each write, whether it committed, the error if not,
and the process's peak RSS (the Python side holds the ids and values: about 100 bytes per sample).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYED = ("dagster_run_id VARCHAR, PRIMARY KEY (dataset_name, valuation_set, feature_config_id, model_id, "
         "sample_id));")


def _keyed_scores(cat) -> None:
    from forvalue.catalog.db import sql_dir

    cat.init()
    ddl = (sql_dir() / "schema.sql").read_text()
    table = ddl[ddl.index("CREATE TABLE IF NOT EXISTS scores"):]
    table = table[:table.index(");") + 2].replace("dagster_run_id     VARCHAR\n);", KEYED)
    with cat.connect() as con:
        con.execute("DROP TABLE scores")
        con.execute(table)


def step(path: str, n: int, keyed: bool) -> dict:
    import numpy as np

    from forvalue.catalog.db import Catalog

    cat = Catalog(path)
    if keyed:
        _keyed_scores(cat)
    ids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]
    values = np.random.default_rng(0).standard_normal(n)
    out: dict = {"rows": n, "keyed": keyed}
    t0 = time.perf_counter()
    try:
        cat.replace_scores(dataset_name="d", dataset_version="v" * 64, valuation_set="val",
                           valuation_version="w" * 64, model_id="m" * 16, feature_config_id="c" * 12, sample_ids=ids,
                           values=values, normalized=values, norms=np.abs(values))
        out["scores"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as e:
        out["scores"] = {"ok": False, "seconds": round(time.perf_counter() - t0, 2), "error": str(e)[:300]}
        return out | {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    run = cat.latest_score_run("d", "val", "c" * 12)
    keep = int(n * 0.9)
    import pyarrow as pa

    # the members as the subset asset hands them over: an Arrow table, not Python tuples
    members = pa.table({"sample_id": pa.array(ids[:keep], pa.string()), "rank": pa.array(np.arange(1, keep + 1), pa.int32()),
                        "score": pa.array(values[:keep], pa.float64())})
    t0 = time.perf_counter()
    cat.record_subset(score_run=run, mode="drop_lowest_p", value=10, n_total=n, members=members,
                      jsonl_path="subset.jsonl", parquet_path="subset.parquet", strategy="balanced")
    out["subset"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 2), "members": keep}
    out["catalog_mb"] = round(Path(path).stat().st_size / 2**20, 1)
    return out | {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--keyed", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step[0], int(args.step[1]), args.step[2] == "keyed")))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="fvcatbench-") as tmp:
        for n in [int(x) for x in args.rows.split(",")]:
            for keyed in ([True, False] if args.keyed else [False]):
                path = str(Path(tmp) / f"c-{n}-{int(keyed)}.duckdb")
                res = subprocess.run([sys.executable, __file__, "--step", path, str(n), "keyed" if keyed else "keyless"],
                                     capture_output=True, text=True, check=True)
                results.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]))
    print("| rows | scores table | scores s | subset (90%) s | peak RSS | catalog |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in results:
        s = r["scores"]
        table = "first release (key index)" if r["keyed"] else "today (no key index)"
        wrote = f"{s['seconds']}" if s["ok"] else f"failed after {s['seconds']} s: out of memory"
        sub = r.get("subset", {}).get("seconds", "-")
        print(f"| {r['rows']:,} | {table} | {wrote} | {sub} | {r['peak_rss_mb']:,} MB | {r.get('catalog_mb', '-')} MB |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"command": "benchmarks/catalog_bench.py " + " ".join(argv or sys.argv[1:]),
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
