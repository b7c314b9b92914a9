"""The one reader of data files: JSONL, CSV, Parquet and Hugging Face ``save_to_disk`` folders as
batches of raw rows, ``(row number, dict or the error for that row)``, never the whole file at once.

Every caller reads through here: :func:`forvalue.data.samples.load_samples` (all batches),
:func:`forvalue.data.stream.iter_batches` (validation, catalog registration, the Ray driver), Ray read
tasks (one :class:`Segment` each) and scores tables.

- JSON lines: read line by line; the row number is the line number (blank lines count, yield
  nothing). A ``.json`` file holding one JSON array is one document: read whole, rows 1, 2, ...
- CSV: Python's csv module, streamed; the row number is the record's (the header is row 0; blank
  lines are no records; a quoted field may span lines). Text that is not UTF-8 stops the read,
  naming the line.
- Parquet: polars lazy scans collected in batches; row numbers from 1.
- Hugging Face folders: their Arrow stream files, record batch by record batch.

A row that cannot be read (invalid JSON, too many CSV values) is an error row; a file that cannot be
read at all raises :class:`forvalue.errors.DataError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DataError

SUPPORTED = "JSONL (.jsonl/.json), Parquet (.parquet), CSV (.csv) or a Hugging Face save_to_disk folder"
BATCH_ROWS = 20_000
_BOM = b"\xef\xbb\xbf"
_SCAN = 16 * 2**20

Row = tuple[int, dict | DataError]


@dataclass(frozen=True)
class Segment:
    """A part of a file one reader takes on its own (a Ray read task)."""

    start: int          # JSONL: first byte; Parquet: first row (0-based)
    stop: int           # JSONL: end byte; Parquet: end row
    first_row: int      # row number of the segment's first row, less one
    rows: int           # rows (JSONL: lines) in the segment


def detect_format(path: Path) -> str:
    """``jsonl``, ``csv``, ``parquet`` or ``hf`` (a save_to_disk folder), by suffix; else a DataError."""
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise DataError(str(path), None, None,
                        f"a folder that is not a Hugging Face save_to_disk dataset; use {SUPPORTED}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise DataError(str(path), None, None, f"unknown format {suffix!r}; use {SUPPORTED}")


def _json_array(path: Path) -> bool:
    """A ``.json`` file that holds one JSON array (not JSON lines)."""
    if path.suffix.lower() != ".json":
        return False
    with open(path, "rb") as fh:
        head = fh.read(64)
    return head[len(_BOM):].lstrip()[:1] == b"[" if head.startswith(_BOM) else head.lstrip()[:1] == b"["


# ----------------------------------------------------------------------------- JSON
def _json_line(file: str, row: int, raw: bytes) -> dict | DataError | None:
    """One line of a JSONL file: its object, the error for that row, or None for a blank line."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return DataError(file, row, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return DataError(file, row, None, f"invalid JSON: {e.msg} at column {e.colno}")
    return obj if isinstance(obj, dict) else DataError(file, row, None,
                                                       f"expected a JSON object, got {type(obj).__name__}")


def _spread_document(path: Path, start: int, row: int) -> DataError | None:
    """The error for a JSON document spread over several lines (a pretty-printed object or array)
    starting at byte ``start``, the file's first line with content, when it is one; else None."""
    with open(path, "rb") as fh:
        fh.seek(start)
        head = fh.read(_SCAN)
    text = head[len(_BOM):].decode("utf-8", "replace") if head.startswith(_BOM) else head.decode("utf-8", "replace")
    at = len(text) - len(text.lstrip())
    try:
        (value, end), complete = json.JSONDecoder().raw_decode(text, at), True
    except json.JSONDecodeError:   # (cut by the read: a first line of a lone bracket still says enough)
        cut = len(head) == _SCAN and text[at:].split("\n", 1)[0].strip() in ("{", "[")
        value, end, complete = ({} if text[at] == "{" else []) if cut else None, len(text), False
    if not isinstance(value, (dict, list)) or "\n" not in text[at:end]:
        return None
    kind, hint = ("object", "") if isinstance(value, dict) else ("array", " (a .json file may hold one array)")
    where = f"rows {row} to {row + text.count(chr(10), at, end)}" if complete else f"from row {row}"
    return DataError(str(path), row, None, f"a JSON {kind} spread over several lines ({where}): JSONL needs one "
                                           f"object per line{hint}")


def _jsonl_rows(path: Path, batch_rows: int, seg: Segment | None = None) -> Iterator[list[Row]]:
    """Batches of a JSONL file (or of one segment of it), parsed line by line as they are read. A
    file whose first line with content starts a document spread over lines stops with one error."""
    file = str(path)
    with open(path, "rb") as fh:
        start, stop = (seg.start, seg.stop) if seg else (0, None)
        fh.seek(start)
        pos, row, out, first = start, seg.first_row if seg else 0, [], start == 0
        for raw in fh:
            pos, row = pos + len(raw), row + 1
            if row == 1 and raw.startswith(_BOM):   # spreadsheet exports often start with a byte order mark
                raw = raw[len(_BOM):]
            obj = _json_line(file, row, raw)
            if first and obj is not None:
                first = False
                spread = _spread_document(path, pos - len(raw), row) \
                    if isinstance(obj, DataError) and obj.reason.startswith("invalid JSON") else None
                if spread is not None:
                    raise spread
            if obj is not None:
                out.append((row, obj))
                if len(out) >= batch_rows:
                    yield out
                    out = []
            if stop is not None and pos >= stop:
                break
    if out:
        yield out


def _json_document(path: Path) -> list[Row]:
    """The rows of a ``.json`` file holding one JSON array."""
    file = str(path)
    raw = path.read_bytes()
    raw = raw[len(_BOM):] if raw.startswith(_BOM) else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(file, line, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(file, e.lineno, None, f"invalid JSON: {e.msg}") from None
    return [(i, obj if isinstance(obj, dict) else DataError(file, i, None, "not a JSON object"))
            for i, obj in enumerate(items, 1)]


def _json_metadata(path: Path):
    """A JSON metadata file of a dataset folder, or a DataError naming it."""
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found (the folder is not a complete save_to_disk dataset)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(path), getattr(e, "lineno", None), None, f"not valid JSON: {e}") from None


# ----------------------------------------------------------------------------- CSV
def _utf8_error(path: Path) -> DataError:
    """Where a CSV file stops being UTF-8: the line (as its row) and the offset after any byte order mark."""
    with open(path, "rb") as fh:
        offset, line = 0, 0
        for raw in fh:
            line += 1
            if line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(str(path), line, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset "
                                                        f"{offset + e.start})")
            offset += len(raw)
    return DataError(str(path), None, None, "not valid UTF-8")


def _csv_records(path: Path):
    """(header, iterator of (record, line it started on) or the csv.Error for it) of a CSV file."""
    import csv

    file = str(path)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))   # a long text is one field, not an error
    fh = open(path, encoding="utf-8-sig", newline="")
    reader = csv.reader(fh, strict=True)

    def records():
        with fh:
            while True:
                line = reader.line_num
                try:
                    yield next(reader), line
                except StopIteration:
                    return
                except csv.Error as e:
                    yield e, line
                except UnicodeDecodeError:
                    raise _utf8_error(path) from None

    it = records()
    try:
        for header, _ in it:
            if isinstance(header, csv.Error):
                raise DataError(file, None, None, f"the header line is not valid CSV: {header}")
            if header:                                  # blank lines before the header are skipped
                return header, it
    except BaseException:
        it.close()
        raise
    return [], it


def _csv_rows(path: Path, batch_rows: int) -> Iterator[list[Row]]:
    """Batches of a CSV file. An empty value is None; a missing one (a short row) too."""
    file = str(path)
    header, records = _csv_records(path)
    n, row, out = len(header), 0, []
    for values, line in records:
        if isinstance(values, list) and not values:    # a blank line is no record
            continue
        row += 1
        if not isinstance(values, list):
            end = "EOF" in str(values) or "end of data" in str(values)
            reason = f"a quoted field opened on line {line + 1} is never closed" if end else f"not valid CSV ({values})"
            out.append((row, DataError(file, row, None, reason)))
        elif len(values) > n:
            out.append((row, DataError(file, row, None, f"{len(values)} values for {n} columns")))
        else:
            obj = dict(zip(header, values))
            out.append((row, {k: obj.get(k) or None for k in header}))
        if len(out) >= batch_rows:
            yield out
            out = []
    if out:
        yield out


# ----------------------------------------------------------------------------- Parquet, Hugging Face folders
def _parquet(path: Path):
    """A polars lazy scan of a Parquet file, and the errors polars raises for a damaged one."""
    import polars as pl

    return pl.scan_parquet(path), (pl.exceptions.PolarsError, pl.exceptions.PanicException)


def _parquet_rows(path: Path, batch_rows: int, seg: Segment | None = None) -> Iterator[list[Row]]:
    (lf, errors), row = _parquet(path), seg.start if seg else 0
    if seg:
        lf = lf.slice(seg.start, seg.stop - seg.start)
    try:
        for df in lf.collect_batches(chunk_size=batch_rows):
            rows = df.to_dicts()
            yield [(row + i, obj) for i, obj in enumerate(rows, 1)]
            row += len(rows)
    except errors as e:
        raise DataError(str(path), None, None, f"unreadable Parquet file: {e}") from None


def _hf_data_files(path: Path, split: str | None = None) -> list[Path]:
    """The Arrow files of a save_to_disk folder (a DatasetDict folder: its ``split``, else train)."""
    folder = path
    if (path / "dataset_dict.json").exists():
        splits = _json_metadata(path / "dataset_dict.json").get("splits", [])
        chosen = split or "train"
        if chosen not in splits:
            raise DataError(str(path), None, None, f"no {chosen!r} split (the dataset has {splits or 'no splits'}); "
                                                   f"a DatasetDict folder is read through its train split")
        folder = path / chosen
    state = _json_metadata(folder / "state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not all(isinstance(e, dict) and "filename" in e for e in files):
        raise DataError(str(folder / "state.json"), None, "_data_files", "missing or not a list of data files")
    if not files:
        raise DataError(str(folder), None, None, "no data files listed in state.json")
    return [folder / e["filename"] for e in files]


def _arrow_batches(f: Path):
    """Record batches of one Arrow stream file."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(f)) as source:
            yield from pa.ipc.open_stream(source)
    except Exception as e:   # pyarrow raises several kinds for a damaged file
        raise DataError(str(f), None, None, f"unreadable Arrow file: {e}") from None


def _arrow_schema(f: Path) -> list[str]:
    """The column names of one Arrow stream file."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(f)) as source:
            return pa.ipc.open_stream(source).schema.names
    except Exception as e:   # pyarrow raises several kinds for a damaged file
        raise DataError(str(f), None, None, f"unreadable Arrow file: {e}") from None


def _hf_rows(path: Path, batch_rows: int, split: str | None) -> Iterator[list[Row]]:
    row = 0
    for f in _hf_data_files(path, split):
        for rb in _arrow_batches(f):
            for i in range(0, rb.num_rows, batch_rows):
                chunk = rb.slice(i, batch_rows).to_pylist()
                yield [(row + j, obj) for j, obj in enumerate(chunk, 1)]
                row += len(chunk)


# ----------------------------------------------------------------------------- the reader
def _existing(path: str | Path) -> tuple[Path, str]:
    """The path and its format; a DataError when it is missing or neither a folder nor a regular file
    (a FIFO, a device or a socket would block or never end)."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), None, None, "file not found")
    if not p.is_dir() and not p.is_file():
        raise DataError(str(p), None, None, "not a regular file (a pipe, device or socket); give a data file")
    return p, detect_format(p)


def raw_batches(path: str | Path, *, batch_rows: int = BATCH_ROWS, split: str | None = None,
                segment: Segment | None = None) -> Iterator[list[Row]]:
    """Batches of (row number, dict or the error for that row) of a data file, or of one
    :class:`Segment` of it (from :func:`segments`)."""
    p, fmt = _existing(path)
    try:
        if fmt == "jsonl":
            if segment is None and _json_array(p):
                yield _json_document(p)           # one document: read whole
            else:
                yield from _jsonl_rows(p, batch_rows, segment)
        elif fmt == "csv":
            yield from _csv_rows(p, batch_rows)
        elif fmt == "parquet":
            yield from _parquet_rows(p, batch_rows, segment)
        else:
            yield from _hf_rows(p, batch_rows, split)
    except OSError as e:
        raise DataError(str(p), None, None, f"cannot read: {e.strerror or e}") from None


def read_header(path: str | Path, *, split: str | None = None) -> list[str] | None:
    """The column names of a CSV, Parquet or Hugging Face file (None for JSON)."""
    p, fmt = _existing(path)
    try:
        if fmt == "csv":
            header, records = _csv_records(p)
            records.close()
            return header
        if fmt == "parquet":
            lf, errors = _parquet(p)
            try:
                return lf.collect_schema().names()
            except errors as e:
                raise DataError(str(p), None, None, f"unreadable Parquet file: {e}") from None
        if fmt == "hf":
            return _arrow_schema(_hf_data_files(p, split)[0])
    except OSError as e:
        raise DataError(str(p), None, None, f"cannot read: {e.strerror or e}") from None
    return None


def read_records(path: str | Path, *, split: str | None = None) -> tuple[list[str] | None, list[Row]]:
    """Every row of a file at once: (header or None, [(row number, dict or the error for that row)])."""
    header = read_header(path, split=split)
    return header, [r for rows in raw_batches(path, split=split) for r in rows]


# ----------------------------------------------------------------------------- segments
def _line_end(fh, pos: int, size: int) -> int:
    """The position just after the first line end at or after ``pos`` (or the file's end)."""
    fh.seek(pos)
    while pos < size:
        chunk = fh.read(1 << 16)
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(chunk)
    return size


def _count_lines(fh, start: int, stop: int) -> int:
    fh.seek(start)
    n, left, last = 0, stop - start, b""
    while left > 0:
        chunk = fh.read(min(_SCAN, left))
        if not chunk:
            break
        n += chunk.count(b"\n")
        left -= len(chunk)
        last = chunk
    return n + (1 if last and not last.endswith(b"\n") else 0)


def jsonl_segments(path: Path, segment_bytes: int) -> list[Segment]:
    """A JSONL file cut at line ends into parts of about ``segment_bytes``, with the lines before each."""
    size = path.stat().st_size
    out, pos, rows = [], 0, 0
    with open(path, "rb") as fh:
        while pos < size:
            stop = _line_end(fh, min(size, pos + segment_bytes), size) if pos + segment_bytes < size else size
            n = _count_lines(fh, pos, stop)
            out.append(Segment(pos, stop, rows, n))
            pos, rows = stop, rows + n
    return out


def parquet_segments(path: Path, segment_bytes: int) -> list[Segment]:
    """A Parquet file cut into whole row groups of about ``segment_bytes`` (from its metadata)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:   # pyarrow raises several kinds for a damaged file
        raise DataError(str(path), None, None, f"unreadable Parquet file: {e}") from None
    out, start, size, row = [], 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        row += rg.num_rows
        size += rg.total_byte_size
        if size >= segment_bytes or g == meta.num_row_groups - 1:
            out.append(Segment(start, row, start, row - start))
            start, size = row, 0
    return out


def segments(path: str | Path, segment_bytes: int) -> tuple[str, list[Segment]] | None:
    """(format, segments) when ``path`` is cut into more than one segment; None when it is read as a
    whole (a small file, CSV, a JSON array, a Hugging Face folder)."""
    p, fmt = _existing(path)
    if fmt == "jsonl" and not _json_array(p):
        cut = jsonl_segments(p, segment_bytes)
    elif fmt == "parquet":
        cut = parquet_segments(p, segment_bytes)
    else:
        return None
    return (fmt, cut) if len(cut) > 1 else None


def finite_number(file: str, row: int, name: str, value, required: bool = False) -> float | None:
    """A field of a scores file as a finite float (None when absent and not ``required``); else a
    DataError naming the file, row and field."""
    if value is None or value == "":
        if required:
            raise DataError(file, row, name, "missing value (expected the output of `forvalue score`, `curate` or "
                                             "`select`)")
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise DataError(file, row, name, f"not a number: {value!r}") from None
    if not math.isfinite(out):
        raise DataError(file, row, name, f"not finite: {out}")
    return out


def read_output_table(path, numbers: dict[str, bool], expected: str) -> tuple[list[dict], dict]:
    """(rows, metadata) of a table the commands wrote (scores, kept or dropped rows; Parquet, JSONL or
    CSV, only Parquet carries the ``forvalue`` metadata). Every row needs a sample_id (``expected``
    names the commands that write the table); the ``numbers`` columns (name -> required) become finite
    floats or None. Bad rows stop with file, row and field."""
    file = str(path)
    rows = []
    for row, obj in (r for batch in raw_batches(path) for r in batch):
        if isinstance(obj, DataError):
            raise obj
        sid = obj.get("sample_id")
        if not isinstance(sid, str) or not sid:
            raise DataError(file, row, "sample_id", f"missing value (expected the output of {expected})")
        for name, required in numbers.items():
            obj[name] = finite_number(file, row, name, obj.get(name), required)
        rows.append(obj)
    meta = {}
    if Path(path).suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        raw = (pq.read_schema(path).metadata or {}).get(b"forvalue")
        meta = json.loads(raw) if raw else {}
    return rows, meta


__all__ = ["SUPPORTED", "BATCH_ROWS", "Row", "Segment", "detect_format", "raw_batches", "read_header",
           "read_records", "segments", "finite_number", "read_output_table"]
