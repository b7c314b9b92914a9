"""Catalog queries with short-lived connections: the catalog's way (the file attached to one in-memory
DuckDB per process, forvalue/catalog/attach.py) against starting a DuckDB on the file for each query
(what the catalog did before), in one run, on the same catalog and the same named query.

    .venv/bin/python benchmarks/catalog_connect_bench.py [--queries 300] [--json FILE]

Prints milliseconds per query for each way and their ratio. A Dagster curation run makes hundreds
of such queries (the pipeline tests: ~160 per run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _catalog(folder: Path):
    from forvalue.catalog.db import KIND_DATASET, Catalog
    from forvalue.data.samples import samples_from_records

    cat = Catalog(folder / "forvalue.duckdb")
    data = samples_from_records([{"prompt": f"q{i}", "response": f"a{i}"} for i in range(200)], source="d.jsonl")
    cat.register_set(KIND_DATASET, "d1", "v1", folder / "d.jsonl", data.samples)
    return cat


def _per_query_database(cat, n: int) -> float:
    """Seconds per query when each query starts its own DuckDB on the file (the former way)."""
    import duckdb

    sql, params = cat.sql("current_dataset"), {"name": "d1"}
    t0 = time.perf_counter()
    for _ in range(n):
        con = duckdb.connect(str(cat.path), read_only=True)
        try:
            con.execute(sql, params).fetchall()
        finally:
            con.close()
    return (time.perf_counter() - t0) / n


def _attached(cat, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        cat.fetch("current_dataset", name="d1")
    return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cat = _catalog(Path(tmp))
        assert cat.fetch("current_dataset", name="d1") is not None
        old = min(_per_query_database(cat, args.queries) for _ in range(3))
        new = min(_attached(cat, args.queries) for _ in range(3))
    row = {"queries": args.queries, "per_query_database_ms": round(old * 1e3, 2), "attached_ms": round(new * 1e3, 2),
           "speedup": round(old / new, 1)}
    print("| queries | a DuckDB per query, ms | attached, ms | speed-up |")
    print("|---:|---:|---:|---:|")
    print(f"| {row['queries']} | {row['per_query_database_ms']} | {row['attached_ms']} | {row['speedup']}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
