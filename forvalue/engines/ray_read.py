"""A data file read inside Ray: segments of the file become Ray Data read tasks, so the reading,
parsing and hashing of samples run on the workers, stream alongside the extraction, and the driver
never holds the file's samples.

- JSONL (one object per line): the driver cuts the file into segments of about ``segment_bytes`` at
  line ends, counting the lines before each (a byte scan, no parsing): every read task knows the row
  number of its first line, so a bad row is named by file and row as in :func:`forvalue.data.samples.load_samples`.
- Parquet: segments of whole row groups, their first rows from the file's metadata.
- CSV (a quoted field may hold a line end), a JSON array and Hugging Face folders: not cut; the
  driver streams them (:func:`forvalue.engines.ray_features.featurize_file`).

Each read task turns its rows into samples (:func:`forvalue.data.stream.to_batch`) and yields Arrow
tables with a ``sample`` column (the pickled sample) and an ``error`` column (a bad row's file, row,
field and reason as JSON), which the feature actors stop on or report as skipped.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

from ..data.samples import Columns, DataError, detect_format

SEGMENT_BYTES = 64 * 2**20
READ_BLOCK_BYTES = 4 * 2**20   # Ray Data gathers a read task's output into blocks up to 128 MB by default
_SCAN = 16 * 2**20


@dataclass(frozen=True)
class Segment:
    start: int          # JSONL: first byte; Parquet: first row (0-based)
    stop: int           # JSONL: end byte; Parquet: end row
    first_row: int      # row number of the segment's first row, less one
    rows: int           # rows (JSONL: lines) in the segment


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


def plan(path: str | Path, segment_bytes: int = SEGMENT_BYTES) -> tuple[str, list[Segment]] | None:
    """(format, segments) when ``path`` is cut into more than one segment; None when the driver
    should stream it (a small file, CSV, a JSON array, a Hugging Face folder)."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), None, None, "file not found")
    fmt = detect_format(p)
    if fmt == "jsonl":
        with open(p, "rb") as fh:
            if p.suffix.lower() == ".json" and fh.read(64).lstrip()[:1] == b"[":
                return None
        segments = jsonl_segments(p, segment_bytes)
    elif fmt == "parquet":
        segments = parquet_segments(p, segment_bytes)
    else:
        return None
    return (fmt, segments) if len(segments) > 1 else None


def _jsonl_rows(file: str, seg: Segment, batch_rows: int):
    """Batches of (row number, dict or error) of a JSONL segment, parsed as they are read."""
    from ..data.stream import json_line

    with open(file, "rb") as fh:
        fh.seek(seg.start)
        left, row, out, first = seg.stop - seg.start, seg.first_row, [], seg.start == 0
        while left > 0:
            raw = fh.readline(left)
            if not raw:
                break
            left -= len(raw)
            row += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                out.append((row, DataError(file, row, None, f"not valid UTF-8 (byte {raw[e.start]:#04x})")))
                continue
            if first:
                line, first = line.lstrip("\ufeff"), False     # a UTF-8 byte order mark
            obj = json_line(file, row, line.rstrip("\n"))
            if obj is not None:
                out.append((row, obj))
            if len(out) >= batch_rows:
                yield out
                out = []
    if out:
        yield out


def _parquet_rows(file: str, seg: Segment, batch_rows: int):
    import polars as pl

    for a in range(seg.start, seg.stop, batch_rows):
        df = pl.scan_parquet(file).slice(a, min(batch_rows, seg.stop - a)).collect()
        yield [(a + i + 1, r) for i, r in enumerate(df.to_dicts())]


def read_segment(file: str, fmt: str, seg: Segment, columns: Columns, batch_rows: int):
    """Arrow tables (:func:`sample_table`) of one segment, about ``batch_rows`` rows each, yielded as
    the segment is read."""
    from ..data.stream import to_batch

    reader = _jsonl_rows if fmt == "jsonl" else _parquet_rows
    try:
        for rows in reader(file, seg, batch_rows):
            batch = to_batch(file, rows, columns)
            if batch.samples or batch.errors:
                yield sample_table(batch.samples, batch.errors)
    except DataError as e:   # the segment unreadable from here on: one error row
        yield sample_table([], [e])


def sample_table(samples, errors=()):
    """The Arrow table the feature actors take: ``sample`` (pickled) and, for each bad row, an empty
    sample with its ``error`` (file, row, field, reason as JSON)."""
    import pyarrow as pa

    cells = [pickle.dumps(s) for s in samples] + [b""] * len(errors)
    errs = [""] * len(samples) + [json.dumps([e.file, e.row, e.field, e.reason]) for e in errors]
    return pa.table({"sample": pa.array(cells, pa.binary()), "error": pa.array(errs, pa.string())})


def datasource(path: str | Path, fmt: str, segments: list[Segment], columns: Columns, batch_rows: int):
    """A Ray Data datasource: one read task per segment. Blocks are capped at ``READ_BLOCK_BYTES`` in
    this process's Ray Data context, so that batches leave a segment while it is read (with the
    default cap a 64 MB segment reached the actors only once read whole)."""
    from ray.data import DataContext, Datasource, ReadTask
    from ray.data.block import BlockMetadata

    ctx = DataContext.get_current()
    ctx.target_max_block_size = min(ctx.target_max_block_size or READ_BLOCK_BYTES, READ_BLOCK_BYTES)

    file = str(Path(path).resolve())   # the workers' current folder is not the driver's

    class SampleFile(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            return [ReadTask(lambda seg=seg: read_segment(file, fmt, seg, columns, batch_rows),
                             BlockMetadata(num_rows=seg.rows, size_bytes=None, exec_stats=None, input_files=(file,)))
                    for seg in segments]

    return SampleFile()


__all__ = ["SEGMENT_BYTES", "Segment", "datasource", "plan", "read_segment", "sample_table"]
