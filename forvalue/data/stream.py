"""Streamed samples: a data file as batches of samples, never the whole file as Python objects.

The rows come from the one reader, :func:`forvalue.data.reader.raw_batches` (the same rows, row
numbers and errors as :func:`forvalue.data.samples.load_samples`, which reads every batch). Each batch
turns into samples (:func:`forvalue.data.samples.to_batch`) and bad rows, and is then dropped, so
memory stays flat however long the file is. Validation (:func:`validate`), registration into the
catalog (:meth:`forvalue.catalog.db.Catalog.register_stream`), ``forvalue validate`` and the Ray
driver use this path.
"""

from __future__ import annotations

import hashlib
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
    n_repeated_ids: int = 0                            # valid rows whose id an earlier one has: the file is refused
    repeated_ids: list[DataError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n_bad == 0 and not self.missing_columns and self.n_rows > 0 and not self.n_repeated_ids

    def first_problem(self) -> DataError | None:
        """What ``forvalue score`` would stop at first: no rows, a missing column, else the first bad
        row or repeated id (in row order)."""
        if not self.n_rows:
            return DataError(self.file, None, None, "no rows: the file is empty (or holds only blank lines)")
        if self.missing_columns:
            return DataError(self.file, None, self.missing_columns[0], "missing column")
        found = self.first_errors + self.repeated_ids
        return min(found, key=lambda e: e.row or 0) if found else None


def _id_hash(uid: str) -> int:
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def validate(path: str | Path, *, columns: Columns = Columns(), batch_rows: int = BATCH_ROWS,
             keep: int = 20) -> Validation:
    """Stream a file once: rows, valid samples, bad rows (the first ``keep`` of them), duplicates and
    repeated ids (8 bytes a sample each, compared at the end; a second read names the first ``keep``)."""
    import numpy as np

    res = Validation(file=str(path))
    digests: list = []   # 8 bytes of each valid sample's content hash (duplicates counted at the end)
    ids: list = []       # (8-byte hash of each id, its row) of the valid samples that have an id
    keys: set = set()
    for batch in iter_batches(path, columns=columns, batch_rows=batch_rows):
        res.n_rows += batch.n_rows
        res.n_bad += len(batch.errors)
        keys |= batch.keys
        room = keep - len(res.first_errors)
        if room > 0:
            res.first_errors += batch.errors[:room]
        digests.append(np.array([int(s.sample_id[:16], 16) for s in batch.samples], dtype=np.uint64))
        named = [s for s in batch.samples if s.user_id is not None]
        ids.append((np.array([_id_hash(s.user_id) for s in named], dtype=np.uint64),
                    np.array([s.row for s in named], dtype=np.int64)))
        res.n_valid += len(batch.samples)
    if digests:
        allh = np.concatenate(digests)
        digests.clear()
        allh.sort()                      # in place: no second copy
        res.n_duplicates = int(np.count_nonzero(allh[1:] == allh[:-1]))
    if ids:
        rows, firsts = _repeats(np.concatenate([h for h, _ in ids]), np.concatenate([r for _, r in ids]))
        res.n_repeated_ids = len(rows)
        res.repeated_ids = _name_repeats(path, columns.id, rows[:keep], firsts[:keep], batch_rows)
    if keys:   # (no row could be read as a record at all: its errors say why)
        res.missing_columns = [c for c in needed_columns(columns, keys) if c not in keys]
    return res


def _repeats(hashes, rows):
    """(rows whose id hash an earlier row has, the first row with it), in row order."""
    import numpy as np

    order = np.lexsort((rows, hashes))
    h, r = hashes[order], rows[order]
    starts = np.ones(len(h), dtype=bool)
    starts[1:] = h[1:] != h[:-1]
    first = r[np.maximum.accumulate(np.where(starts, np.arange(len(h)), 0))]
    again = np.argsort(r[~starts], kind="stable")
    return r[~starts][again], first[~starts][again]


def _name_repeats(path, id_column: str, rows, firsts, batch_rows: int) -> list[DataError]:
    """The errors of the repeated ids at ``rows`` (a second read, for their values), as ``forvalue
    score`` words them."""
    if not len(rows):
        return []
    wanted = {int(r): int(f) for r, f in zip(rows, firsts)}
    values = {}
    for batch in raw_batches(path, batch_rows=batch_rows):
        for row, obj in batch:
            if row in wanted and isinstance(obj, dict):
                values[row] = obj.get(id_column)
    return [DataError(str(path), r, id_column, f"duplicate id {str(values.get(r))!r} (first at row {f})")
            for r, f in wanted.items()]


__all__ = ["BATCH_ROWS", "Batch", "iter_batches", "to_batch", "Validation", "validate", "needed_columns"]
