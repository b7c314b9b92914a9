"""Tables the commands write: Parquet, JSONL or CSV by suffix, atomically, with what produced them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError
from ..io import atomic_write

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def check_out(path: str | Path, inputs: tuple = ()) -> Path:
    """An output table we can write, checked before any work: a known suffix, not one of the
    ``inputs`` (links resolved), not a folder, in a folder that exists or can be made and is writable."""
    import os

    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a file name (.parquet, .jsonl or .csv)")
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{out}: unknown output format {out.suffix or '(no suffix)'!r}; use .parquet, .jsonl or .csv")
    target = out.resolve()
    for src in inputs:
        if src is not None and Path(src).exists() and Path(src).resolve() == target:
            raise ConfigError(f"{out}: the output would replace the input {src}; write it elsewhere")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{out}: no permission to write in {parent}")
    return out


def check_folder(path: str | Path, what: str) -> Path:
    """A folder ForValue writes into (feature store, output folder): not an existing file."""
    import os

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: the {what} must be a folder, and this is a file")
    parent = folder.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: cannot create or write the {what} here ({parent} is not a writable folder)")
    return folder


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
        table = pa.Table.from_pylist(_flat(rows) if suffix == ".csv" else rows)
        if meta:
            table = table.replace_schema_metadata({b"forvalue": json.dumps(meta, default=str).encode()})
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)

    atomic_write(out, write)


def _flat(rows: list[dict]) -> list[dict]:
    """CSV cells are text: nested values (lists, objects) become JSON strings."""
    return [{k: json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list, tuple)) else v
             for k, v in r.items()} for r in rows]


def score_rows(samples, values, ranks, extra: dict | None = None) -> list[dict]:
    """Rows of ``forvalue score``: sample_id, score, rank, the ``extra`` columns, the input columns."""
    from .scores_table import table_rows

    cols = {"score": [float(v) for v in values], "rank": [int(r) for r in ranks]}
    for name, arr in (extra or {}).items():
        cols[name] = [float(x) for x in arr]
    return table_rows(samples, cols)


__all__ = ["SUFFIXES", "check_out", "check_folder", "write_table", "score_rows"]
