"""Tables the commands write: Parquet, JSONL or CSV by suffix, atomically, with what produced them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import ConfigError, ForValueError
from ..io import atomic_write, check_writable

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def check_out(path: str | Path, inputs: tuple = (), suffixes: tuple | None = SUFFIXES) -> Path:
    """An output table we can write, checked before any work: a known suffix (any, with ``suffixes``
    None), not one of the ``inputs`` (links resolved), not a folder, in a folder that exists or can be
    made, where a temporary file can be created (made and removed now, as the write will)."""
    import os

    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a file name (.parquet, .jsonl or .csv)")
    if suffixes is not None and out.suffix.lower() not in suffixes:
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
    _probe(out, "a file")
    return out


def _probe(path: Path, what: str) -> None:
    """Create and remove a temporary file where ``path`` will be written (forvalue.io.check_writable);
    a ConfigError naming ``path`` when that fails (a read-only or virtual file system, a full disk)."""
    try:
        check_writable(path)
    except OSError as e:
        where = Path(e.filename).parent if getattr(e, "filename", None) else Path(path).parent
        raise ConfigError(f"{path}: cannot create {what} in {where} ({e.strerror or e})") from None


def check_folder(path: str | Path, what: str) -> Path:
    """A folder ForValue writes into (feature store, output folder): not an existing file; when it is
    still to be made, a folder that can be made (tried now with a temporary one)."""
    import os

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: the {what} must be a folder, and this is a file")
    parent = folder.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: cannot create or write the {what} here ({parent} is not a writable folder)")
    if not folder.exists():
        _probe(folder, f"the {what}")
    return folder


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(rows: list[dict], out: Path, meta: dict | None = None) -> None:
    """Write rows as Parquet, JSONL or CSV (by suffix) through a temporary file renamed into place.
    ``meta`` (what produced the table) goes into the Parquet schema metadata under ``forvalue``.
    Columns of binary data (image bytes) are left out and a column Parquet cannot hold as one type
    is written as decimal or text; one ``forvalue: note:`` line on stderr names each."""
    out = Path(out)
    suffix = out.suffix.lower()
    rows, left_out = _without_binary(rows)
    notes: list[str] = []

    def write(tmp: str) -> None:
        if suffix in (".jsonl", ".json"):
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({k: _json_safe(v) for k, v in r.items()}, ensure_ascii=False, default=str) + "\n")
            return
        table = _arrow_table(_flat(rows) if suffix == ".csv" else rows, notes if suffix == ".parquet" else [])
        if meta:
            table = table.replace_schema_metadata({b"forvalue": json.dumps(meta, default=str).encode()})
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)

    try:
        atomic_write(out, write)
    except OSError as e:
        raise ForValueError(f"{out}: cannot write it ({e.strerror or e}); nothing was written") from None
    if left_out:
        _note(f"{out}: left out the binary column{'s' if len(left_out) > 1 else ''} "
              f"{', '.join(repr(c) for c in left_out)} (image bytes and the like stay in the input file)")
    if notes:
        _note(f"{out}: " + "; ".join(notes))


def _note(text: str) -> None:
    import sys

    print(f"forvalue: note: {text}", file=sys.stderr)


def _binary(value) -> bool:
    """Bytes, or a dict / list holding bytes (a Hugging Face image, a list of images)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return any(isinstance(v, (bytes, bytearray, memoryview)) for v in items)


def _without_binary(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The rows without the columns that hold binary data in any row, and those columns' names."""
    drop = list(dict.fromkeys(k for r in rows for k, v in r.items() if _binary(v)))
    if not drop:
        return rows, []
    gone = set(drop)
    return [{k: v for k, v in r.items() if k not in gone} for r in rows], drop


def _arrow_table(rows: list[dict], notes: list[str]):
    """The rows as an Arrow table, column by column (every key of every row). A column Arrow cannot
    hold as one type is converted, and ``notes`` says how: integers beyond 64 bits become
    decimal(38, 0) (exact), anything else (mixed types, longer integers) text (JSON for non-strings)."""
    import decimal

    import pyarrow as pa

    columns = {}
    for name in dict.fromkeys(k for r in rows for k in r):
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            pass
        present = [v for v in values if v is not None]
        if all(type(v) is int and abs(v) < 10**38 for v in present):
            columns[name] = pa.array([None if v is None else decimal.Decimal(v) for v in values], pa.decimal128(38, 0))
            notes.append(f"column {name!r} holds integers beyond 64 bits: written as decimal(38, 0)")
            continue
        kinds = ", ".join(sorted({type(v).__name__ for v in present}))
        text = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                for v in values]
        columns[name] = pa.array(text, pa.string())
        notes.append(f"column {name!r} fits no one Parquet type (values: {kinds}): written as text")
    return pa.table(columns)


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
