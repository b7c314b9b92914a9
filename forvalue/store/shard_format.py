"""The files of one feature-store shard, in the two stored formats.

- Version 1 (full rows, float32): Parquet. ``shard-<id>.parquet``: sample_id, token_id, vector;
  ``shard-<id>.samples.parquet``: sample_id, n_positions, n_rows, norm, emb (and loss, see below).
- Version 2 (bounded rows, float16 when configured): Arrow IPC files, uncompressed, read by memory
  mapping, so re-scoring a large store runs at memory speed (decoding float16 Parquet ran at about
  35 MB/s here, the memory-mapped Arrow file at copy speed). ``shard-<id>.rows.arrow``: sample (the
  sample's index in the shard), token_id, vector; ``shard-<id>.samples.arrow``: sample_id,
  n_positions, n_rows, norm, emb, and ``loss`` (the mean NLL per scored position from the
  extraction pass; absent in shards written before it was kept), ``loss_first`` (the same over the
  first 48 response tokens), ``loss_alone`` (s(A) over those tokens, when the extraction
  computed the grounding check), ``loss_answer`` (the loss of the response's last computed
  result) and ``arith_errors`` (the arithmetic statements of the response that do not hold, read
  from its text; absent in shards written before the arithmetic check); the consistency checks
  read these, forvalue/curation/consistency.py.

Both carry the shard's metadata (model fingerprint, feature config, code version) in their schema.
Reading checks a file's bytes against the manifest's size and sha256 before it parses them
(:mod:`forvalue.store.checksums`: hashed once per state of the file, not on every read).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from ..valuation.features import PER_SAMPLE_LOSSES, SparseFeatures
from ..io import atomic_write
from .checksums import ChecksumMismatch, check


LOSS_COLUMNS = ("loss", "loss_first", "loss_alone", "loss_answer", "arith_errors")   # the stored names of PER_SAMPLE_LOSSES


def _samples_table(feats: SparseFeatures, schema_meta: dict):
    import pyarrow as pa

    d = feats.emb.shape[1]
    columns = {
        "sample_id": pa.array(feats.sample_ids, pa.string()),
        "n_positions": pa.array(feats.n_positions.astype(np.int32)),
        "n_rows": pa.array(np.bincount(feats.row_sample, minlength=len(feats)).astype(np.int32)),
        "norm": pa.array(feats.sample_norms(), pa.float64()),
        "emb": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(feats.emb).reshape(-1)), d),
    }
    for name, values in zip(LOSS_COLUMNS, (getattr(feats, a) for a in PER_SAMPLE_LOSSES)):
        if values is not None:
            columns[name] = pa.array(np.asarray(values, dtype=np.float64), pa.float64())
    return pa.table(columns).replace_schema_metadata(schema_meta)


def write_files(folder: Path, shard_id: str, feats: SparseFeatures, schema_meta: dict, *, arrow: bool) -> dict:
    """Write the shard's two data files (each atomically); returns {"rows": path, "samples": path}."""
    import pyarrow as pa

    r = feats.vectors.shape[1]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(feats.vectors).reshape(-1)), r)
    per_sample = _samples_table(feats, schema_meta)
    if arrow:
        import pyarrow.ipc as ipc

        rows = pa.table({"sample": pa.array(feats.row_sample.astype(np.int32)),
                         "token_id": pa.array(feats.token_ids.astype(np.int32)),
                         "vector": vectors}).replace_schema_metadata(schema_meta)
        files = {"rows": folder / f"shard-{shard_id}.rows.arrow", "samples": folder / f"shard-{shard_id}.samples.arrow"}

        def write(table):
            def go(tmp):
                with pa.OSFile(tmp, "wb") as sink, ipc.new_file(sink, table.schema) as w:
                    w.write_table(table)
            return go
    else:
        import pyarrow.parquet as pq

        rows = pa.table({"sample_id": pa.array([feats.sample_ids[i] for i in feats.row_sample], pa.string()),
                         "token_id": pa.array(feats.token_ids.astype(np.int32)),
                         "vector": vectors}).replace_schema_metadata(schema_meta)
        files = {"rows": folder / f"shard-{shard_id}.parquet", "samples": folder / f"shard-{shard_id}.samples.parquet"}

        def write(table):
            return lambda tmp: pq.write_table(table, tmp)
    for key, table in (("rows", rows), ("samples", per_sample)):
        atomic_write(files[key], write(table))
    return files


def _read(path: Path, columns=None, want: dict | None = None, mode: str = "stamp"):
    """A data file's table, from bytes checked against ``want`` (the manifest's size and sha256;
    forvalue/store/checksums.py) before they are parsed. Arrow: memory-mapped, so unread columns cost
    nothing; Parquet: read whole, then only ``columns`` when given, those present."""
    import pyarrow as pa

    with open(path, "rb") as fh:   # the state checked is the state of the file read (fstat of this handle)
        st = os.fstat(fh.fileno())
        if path.suffix != ".arrow":
            data = fh.read()
        else:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if st.st_size else b""
    check(path, st, data, want, mode)   # the bytes parsed below are the bytes checked
    buf = pa.py_buffer(data)
    if path.suffix == ".arrow":
        import pyarrow.ipc as ipc

        return ipc.open_file(buf).read_all()
    import pyarrow.parquet as pq

    if columns is not None:
        present = set(pq.read_schema(pa.BufferReader(buf)).names)
        columns = [c for c in columns if c in present]
    return pq.read_table(pa.BufferReader(buf), columns=columns)


def check_readable(path: Path) -> None:
    """Raise when a data file's footer / schema cannot be read."""
    if path.suffix == ".arrow":
        import pyarrow as pa
        import pyarrow.ipc as ipc

        ipc.open_file(pa.memory_map(str(path), "r")).schema
    else:
        import pyarrow.parquet as pq

        pq.read_metadata(path)


def _array(column):
    """One Arrow array of a column (no copy for a single chunk)."""
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)


def _primitive(arr) -> np.ndarray:
    """The values of a primitive Arrow array without nulls, as a numpy view of its buffer.
    (``to_numpy`` imports pandas on first use: half a second for each process that scores.)"""
    import pyarrow as pa

    types = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float16(): np.float16, pa.float32(): np.float32,
             pa.float64(): np.float64}
    dtype = types.get(arr.type)
    if dtype is None or arr.null_count:
        return arr.to_numpy(zero_copy_only=False)
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=arr.offset + len(arr))[arr.offset:]


def _np(column) -> np.ndarray:
    return _primitive(_array(column))


def _flat(column, width: int) -> np.ndarray:
    arr = _array(column)
    values = _primitive(arr.values)
    return values[arr.offset * width:(arr.offset + len(arr)) * width].reshape(-1, width)


def read_files(folder: Path, files: dict, checksums: dict | None = None, mode: str = "stamp") -> SparseFeatures:
    """The features of one shard (Arrow files memory-mapped: no copy of the vectors); each file is
    checked against ``checksums`` (the manifest's) first: :class:`ChecksumMismatch` when it differs."""
    sums = checksums or {}
    rows = _read(folder / files["rows"], want=sums.get("rows"), mode=mode)
    per = _read(folder / files["samples"], want=sums.get("samples"), mode=mode)
    ids = per.column("sample_id").to_pylist()
    if "sample" in rows.column_names:
        row_sample = _np(rows.column("sample")).astype(np.int64)
    else:
        index = {s: i for i, s in enumerate(ids)}
        row_sample = np.array([index[s] for s in rows.column("sample_id").to_pylist()], dtype=np.int64)
    return SparseFeatures(
        sample_ids=ids, row_sample=row_sample,
        token_ids=_np(rows.column("token_id")).astype(np.int64),
        vectors=_flat(rows.column("vector"), rows.schema.field("vector").type.list_size),
        emb=_flat(per.column("emb"), per.schema.field("emb").type.list_size),
        n_positions=_np(per.column("n_positions")).astype(np.int64),
        # ||G|| per sample; shards written before it was stored get it from their rows
        norms=_np(per.column("norm")) if "norm" in per.column_names else None,
        # the per-sample losses (s(A|Q), over the first tokens, alone); shards written before have none
        **{a: _np(per.column(c)) if c in per.column_names else None for a, c in zip(PER_SAMPLE_LOSSES, LOSS_COLUMNS)},
    )


def read_sample_values(folder: Path, files: dict, fields, checksums: dict | None = None,
                       mode: str = "stamp") -> tuple[list[str], dict]:
    """(sample ids, {field: values or None}) of per-sample ``fields`` (names of PER_SAMPLE_LOSSES)
    from one shard's samples file only (checked against ``checksums`` first, as :func:`read_files`)."""
    columns = dict(zip(PER_SAMPLE_LOSSES, LOSS_COLUMNS))
    per = _read(folder / files["samples"], ["sample_id"] + [columns[f] for f in fields],
                want=(checksums or {}).get("samples"), mode=mode)
    return per.column("sample_id").to_pylist(), {
        f: _np(per.column(columns[f])).astype(np.float64) if columns[f] in per.column_names else None for f in fields}


__all__ = ["write_files", "read_files", "read_sample_values", "check_readable", "ChecksumMismatch"]
