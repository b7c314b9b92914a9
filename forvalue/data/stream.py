"""Streamed reading: a data file as batches of samples, never the whole file as Python objects.

JSONL, CSV and Parquet are read through polars lazy scans (``scan_lines``, ``scan_csv``,
``scan_parquet``) collected in batches of ``batch_rows`` rows; Hugging Face folders through their
Arrow stream files, batch by batch. Each batch turns into samples (the same validation as
:func:`forvalue.data.samples.load_samples`, row numbers included) and bad rows, and is then dropped, so
memory stays flat however long the file is. Validation (:func:`validate`), registration into the
catalog (:meth:`forvalue.catalog.db.Catalog.register_stream`) and ``forvalue validate`` use this path.

A CSV file that polars cannot parse (an unterminated quote, a row with extra values) is read again
with Python's csv module, streamed too, for the row numbers of its errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .samples import Columns, DataError, Sample, detect_format, record_to_sample

BATCH_ROWS = 20_000


@dataclass
class Batch:
    """One batch of a file: its valid samples, its bad rows, and how many rows it held."""

    samples: list[Sample]
    errors: list[DataError]
    n_rows: int
    keys: set = field(default_factory=set)   # column names seen in this batch


def json_line(file: str, row: int, line: str) -> dict | DataError | None:
    """One JSONL line: its object, the error for that row, or None for a blank line."""
    if not line or not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return DataError(file, row, None, f"invalid JSON: {e.msg} at column {e.colno}")
    return obj if isinstance(obj, dict) else DataError(file, row, None,
                                                       f"expected a JSON object, got {type(obj).__name__}")


def _json_rows(path: Path, batch_rows: int) -> Iterator[list[tuple[int, dict | DataError]]]:
    import polars as pl

    file = str(path)
    lf = pl.scan_lines(path).with_row_index("row", offset=1)
    first = True
    for df in lf.collect_batches(chunk_size=batch_rows):
        out = []
        for row, line in zip(df["row"].to_list(), df[df.columns[1]].to_list()):
            if first:
                line, first = line.lstrip("\ufeff"), False      # a UTF-8 byte order mark
            obj = json_line(file, row, line)
            if obj is not None:
                out.append((row, obj))
        yield out


def _frame_rows(lf, batch_rows: int) -> Iterator[list[tuple[int, dict]]]:
    for df in lf.with_row_index("__row", offset=1).collect_batches(chunk_size=batch_rows):
        rows = df.to_dicts()
        yield [(r.pop("__row"), r) for r in rows]


def _csv_rows(path: Path, batch_rows: int) -> Iterator[list[tuple[int, dict | DataError]]]:
    import polars as pl

    done = 0
    try:
        for rows in _frame_rows(pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy"), batch_rows):
            yield [(row, {k: (v if v != "" else None) for k, v in obj.items()}) for row, obj in rows]
            done += len(rows)
    except pl.exceptions.PolarsError:   # row numbers of what polars could not parse: the rest, by Python
        yield from _python_csv_rows(path, batch_rows, skip=done)


def _python_csv_rows(path: Path, batch_rows: int, skip: int = 0) -> Iterator[list[tuple[int, dict | DataError]]]:
    """CSV records by Python's csv module (the first ``skip`` already read); an unterminated quote
    ends the file with an error row."""
    import csv

    file = str(path)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(file, None, None, f"the header line is not valid CSV: {e}") from None
        out, row, line = [], 0, reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error:
                out.append((row + 1, DataError(file, row + 1, None,
                                               f"a quoted field opened on line {line + 1} is never closed")))
                break
            row, line = row + 1, reader.line_num
            if row <= skip:
                continue
            if len(values) != len(header):
                out.append((row, DataError(file, row, None, f"{len(values)} values for {len(header)} columns")))
            else:
                out.append((row, {k: (v if v != "" else None) for k, v in zip(header, values)}))
            if len(out) >= batch_rows:
                yield out
                out = []
        if out:
            yield out


def _hf_rows(path: Path, batch_rows: int) -> Iterator[list[tuple[int, dict]]]:
    import pyarrow as pa

    from .samples import _hf_data_files

    row = 0
    for f in _hf_data_files(path):
        try:
            with pa.memory_map(str(f)) as source:
                for rb in pa.ipc.open_stream(source):
                    for i in range(0, rb.num_rows, batch_rows):
                        chunk = rb.slice(i, batch_rows).to_pylist()
                        yield [(row + j + 1, obj) for j, obj in enumerate(chunk)]
                        row += len(chunk)
        except pa.ArrowInvalid as e:
            raise DataError(str(f), None, None, f"unreadable Arrow file: {e}") from None


def raw_batches(path: str | Path, *, batch_rows: int = BATCH_ROWS) -> Iterator[list[tuple[int, dict | DataError]]]:
    """Batches of (row number, dict or the error for that row) of a data file."""
    import polars as pl

    p = Path(path)
    if not p.exists():
        raise DataError(str(p), None, None, "file not found")
    fmt = detect_format(p)
    try:
        if fmt == "jsonl":
            if p.suffix.lower() == ".json" and p.read_bytes()[:64].lstrip()[:1] == b"[":
                from .samples import read_records

                yield read_records(p)[1]          # a JSON array is one document: read whole
                return
            yield from _json_rows(p, batch_rows)
        elif fmt == "csv":
            yield from _csv_rows(p, batch_rows)
        elif fmt == "parquet":
            try:
                yield from _frame_rows(pl.scan_parquet(p), batch_rows)
            except pl.exceptions.PolarsError as e:
                raise DataError(str(p), None, None, f"unreadable Parquet file: {e}") from None
        else:
            yield from _hf_rows(p, batch_rows)
    except OSError as e:
        raise DataError(str(p), None, None, f"cannot read: {e.strerror or e}") from None


def iter_batches(path: str | Path, *, columns: Columns = Columns(),
                 batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Batches of samples and bad rows of a data file (see the module docstring)."""
    for rows in raw_batches(path, batch_rows=batch_rows):
        yield to_batch(str(path), rows, columns)


def to_batch(file: str, rows: list[tuple[int, dict | DataError]], columns: Columns) -> Batch:
    """The samples and bad rows of (row number, dict or error) rows of ``file``."""
    base = Path(file).parent
    samples, errors, keys = [], [], set()
    for row, obj in rows:
        if isinstance(obj, DataError):
            errors.append(obj)
            continue
        keys.update(k for k, v in obj.items() if v not in (None, ""))
        try:
            samples.append(record_to_sample(obj, file=file, row=row, columns=columns, base=base))
        except DataError as e:
            errors.append(e)
    return Batch(samples=samples, errors=errors, n_rows=len(rows), keys=keys)


@dataclass
class Validation:
    """What :func:`validate` found."""

    file: str
    n_rows: int = 0
    n_valid: int = 0
    n_bad: int = 0
    n_duplicates: int = 0                              # rows whose content another row already has
    first_errors: list[DataError] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n_bad == 0 and not self.missing_columns and self.n_rows > 0


def needed_columns(columns: Columns, keys: set) -> list[str]:
    """The columns a file must have, given the keys it has (messages replace prompt/response)."""
    if columns.text is not None:
        need = [columns.text]
    elif columns.messages in keys and columns.prompt not in keys:
        need = [columns.messages]
    else:
        need = [columns.prompt, columns.response]
    return need + [c for c in (columns.label, columns.image) if c]


def validate(path: str | Path, *, columns: Columns = Columns(), batch_rows: int = BATCH_ROWS,
             keep: int = 20) -> Validation:
    """Stream a file once: rows, valid samples, bad rows (the first ``keep`` of them), duplicates."""
    import numpy as np

    res = Validation(file=str(path))
    digests: list = []   # 8 bytes of each valid sample's content hash (duplicates counted at the end)
    keys: set = set()
    for batch in iter_batches(path, columns=columns, batch_rows=batch_rows):
        res.n_rows += batch.n_rows
        res.n_bad += len(batch.errors)
        keys |= batch.keys
        room = keep - len(res.first_errors)
        if room > 0:
            res.first_errors += batch.errors[:room]
        digests.append(np.array([int(s.sample_id[:16], 16) for s in batch.samples], dtype=np.uint64))
        res.n_valid += len(batch.samples)
    if digests:
        allh = np.concatenate(digests)
        digests.clear()
        allh.sort()                      # in place: no second copy
        res.n_duplicates = int(np.count_nonzero(allh[1:] == allh[:-1]))
    if keys:   # (no row could be read as a record at all: its errors say why)
        res.missing_columns = [c for c in needed_columns(columns, keys) if c not in keys]
    return res


__all__ = ["BATCH_ROWS", "Batch", "raw_batches", "iter_batches", "Validation", "validate", "needed_columns"]
