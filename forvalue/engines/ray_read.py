"""A data file read inside Ray: segments of the file become Ray Data read tasks, so the reading,
parsing and hashing of samples run on the workers, stream alongside the extraction, and the driver
never holds the file's samples.

- JSONL (one object per line): the driver cuts the file into segments of about ``segment_bytes`` at
  line ends, counting the lines before each (a byte scan, no parsing): every read task knows the row
  number of its first line, so a bad row is named by file and row as in :func:`forvalue.data.samples.load_samples`.
- Parquet: segments of whole row groups, their first rows from the file's metadata.
- CSV (a quoted field may hold a line end), a JSON array and Hugging Face folders: not cut; the
  driver streams them (:func:`forvalue.engines.ray_features.featurize_file`).

The cutting and the reading of a segment are the one reader's (:func:`forvalue.data.reader.segments`,
:func:`forvalue.data.reader.raw_batches`). Each read task turns its rows into samples
(:func:`forvalue.data.samples.to_batch`) and yields Arrow tables with a ``sample`` column (the pickled
sample) and an ``error`` column (a bad row's file, row, field and reason as JSON), which the feature
actors stop on or report as skipped.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from ..data import reader
from ..data.reader import Segment
from ..data.samples import Columns, DataError

SEGMENT_BYTES = 64 * 2**20
READ_BLOCK_BYTES = 4 * 2**20   # Ray Data gathers a read task's output into blocks up to 128 MB by default


def plan(path: str | Path, segment_bytes: int = SEGMENT_BYTES) -> tuple[str, list[Segment]] | None:
    """(format, segments) when ``path`` is cut into more than one segment; None when the driver
    should stream it (a small file, CSV, a JSON array, a Hugging Face folder)."""
    return reader.segments(path, segment_bytes)


def read_segment(file: str, seg: Segment, columns: Columns, batch_rows: int):
    """Arrow tables (:func:`sample_table`) of one segment, about ``batch_rows`` rows each, yielded as
    the segment is read (:func:`forvalue.data.reader.raw_batches`)."""
    from ..data.samples import to_batch

    try:
        for rows in reader.raw_batches(file, batch_rows=batch_rows, segment=seg):
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
    """A Ray Data datasource: one read task per segment (of a file of format ``fmt``, as :func:`plan`
    gave them). Blocks are capped at ``READ_BLOCK_BYTES`` in
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
            return [ReadTask(lambda seg=seg: read_segment(file, seg, columns, batch_rows),
                             BlockMetadata(num_rows=seg.rows, size_bytes=None, exec_stats=None, input_files=(file,)))
                    for seg in segments]

    return SampleFile()


__all__ = ["SEGMENT_BYTES", "Segment", "datasource", "plan", "read_segment", "sample_table"]
