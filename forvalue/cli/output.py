"""Tables the commands write: Parquet, JSONL or CSV by suffix, atomically, with what produced them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_write

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def check_out(path: str | Path) -> Path:
    """An output path whose suffix names a format we write."""
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{out}: unknown output format {out.suffix or '(no suffix)'!r}; use .parquet, .jsonl or .csv")
    return out


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(rows: list[dict], out: Path, meta: dict | None = None) -> None:
    """Write rows as Parquet, JSONL or CSV (by suffix) through a temporary file renamed into place.
    ``meta`` (what produced the table) goes into the Parquet schema metadata under ``forvalue``."""
    import pyarrow as pa

    out = Path(out)
    suffix = out.suffix.lower()

    def write(tmp: str) -> None:
        if suffix in (".jsonl", ".json"):
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({k: _json_safe(v) for k, v in r.items()}, ensure_ascii=False, default=str) + "\n")
            return
        table = pa.Table.from_pylist(rows)
        if meta:
            table = table.replace_schema_metadata({b"forvalue": json.dumps(meta, default=str).encode()})
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)

    atomic_write(out, write)


def score_rows(samples, values, ranks, extra: dict | None = None) -> list[dict]:
    """Rows of ``forvalue score``: sample_id, score, rank, the ``extra`` columns, the input columns."""
    from ..curation import table_rows

    cols = {"score": [float(v) for v in values], "rank": [int(r) for r in ranks]}
    for name, arr in (extra or {}).items():
        cols[name] = [float(x) for x in arr]
    return table_rows(samples, cols)


__all__ = ["SUFFIXES", "check_out", "write_table", "score_rows"]
