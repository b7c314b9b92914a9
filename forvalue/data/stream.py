"""Streamed samples: a data file as batches of samples, never the whole file as Python objects.

The rows come from the one reader, :func:`forvalue.data.reader.raw_batches` (the same rows, row
numbers and errors as :func:`forvalue.data.samples.load_samples`, which reads every batch). Each batch
turns into samples (:func:`forvalue.data.samples.to_batch`) and bad rows, and is then dropped, so
memory stays flat however long the file is. Validation (:func:`validate`), registration into the
catalog (:meth:`forvalue.catalog.db.Catalog.register_stream`), ``forvalue validate`` and the Ray
driver use this path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .reader import BATCH_ROWS, raw_batches
from .samples import Batch, Columns, DataError, needed_columns, to_batch


def iter_batches(path: str | Path, *, columns: Columns = Columns(), batch_rows: int = BATCH_ROWS,
                 split: str | None = None) -> Iterator[Batch]:
    """Batches of samples and bad rows of a data file (see the module docstring)."""
    file = str(path)
    for rows in raw_batches(path, batch_rows=batch_rows, split=split):
        yield to_batch(file, rows, columns)


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


__all__ = ["BATCH_ROWS", "Batch", "iter_batches", "to_batch", "Validation", "validate", "needed_columns"]
