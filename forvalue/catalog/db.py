"""The DuckDB catalog: registered datasets and valuation sets, models, feature runs, scores, subsets.

The schema, views and queries live in ``sql/`` (``schema.sql``, ``views.sql``, ``queries.sql``) next
to the ``forvalue`` package; this module loads them, it holds no DDL. Queries take DuckDB named
parameters (``$name``); user values are always bound, never formatted into SQL.

Concurrency: DuckDB allows one writing process per file. Connections here are short-lived (open,
one transaction, close) and a connection that finds the file locked by another process waits and
retries until ``lock_timeout``. The Dagster layer additionally runs every writing asset in a pool of
limit 1, so writers queue rather than race. Readers connect read-only.

Atomicity: every write is one transaction (a failure rolls it back and leaves the previous rows);
exported files are written to a temporary name and renamed into place.

This module never imports Dagster.
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import functools
import hashlib
import json
import math
import os
import re
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._version import __version__
from ..data.samples import DataError, Sample
from ..errors import CatalogError, ConfigError  # noqa: F401  (CatalogError re-exported)
from ..io import atomic_write
from .attach import ATTACHMENTS

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"   # the project's sql/ in a source checkout
KIND_DATASET = "dataset"
KIND_VALUATION = "valuation_set"
KINDS = (KIND_DATASET, KIND_VALUATION)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PARAM_RE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_INITIALIZED: set[str] = set()  # catalog files this process has created or upgraded already
_ENSURED: set[tuple[str, str]] = set()  # (catalog file, sql file) whose schema block this process ran




def sql_dir() -> Path:
    """The folder of the .sql files: the package ``forvalue.sql`` (the repository's sql/, installed
    with the wheel or mapped by an editable install), else sql/ next to this source tree."""
    from importlib.resources import files

    candidates = []
    try:
        candidates.append(Path(str(files("forvalue.sql"))))
    except ModuleNotFoundError:
        pass
    candidates.append(SQL_DIR)
    for folder in candidates:
        if (folder / "schema.sql").is_file():
            return folder
    raise CatalogError(f"SQL files not found in {' or '.join(map(str, candidates))} "
                       "(expected schema.sql, views.sql, queries.sql)")


def load_queries(path: str | Path | None = None) -> dict[str, str]:
    """Named queries of ``queries.sql``: blocks that start with a ``-- name: <query>`` line."""
    text = Path(path or sql_dir() / "queries.sql").read_text()
    queries: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$", line)
        if m:
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = m.group(1), []
        elif name:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


QUERY_FILES = ("queries.sql", "finetune.sql")   # named queries; a block named ``schema`` is DDL run by init


@functools.lru_cache(maxsize=1)
def _sql_blocks() -> dict[str, dict[str, str]]:
    return {f: load_queries(sql_dir() / f) for f in QUERY_FILES}


def _queries() -> dict[str, str]:
    """Every named query of the catalog, from all query files (names are unique across them)."""
    out: dict[str, str] = {}
    for f, blocks in _sql_blocks().items():
        for name, sql in blocks.items():
            if name == "schema":
                continue
            if name in out:
                raise CatalogError(f"query {name!r} is defined twice ({f})")
            out[name] = sql
    return out


def schema_block(file: str) -> str:
    """The ``schema`` block (DDL, every statement idempotent) of a query file of sql/."""
    try:
        return _sql_blocks()[file]["schema"]
    except KeyError:
        raise CatalogError(f"no schema block in {sql_dir() / file}") from None


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CatalogError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def set_table(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return "datasets" if kind == KIND_DATASET else "valuation_sets"


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


# ----------------------------------------------------------------------------- content hashes
def content_hash(path: str | Path) -> str:
    """sha256 of a file's bytes; for a folder, of every file's relative path and bytes."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def file_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        return "hf"
    suffix = p.suffix.lower().lstrip(".")
    return {"ndjson": "jsonl", "json": "jsonl", "pq": "parquet"}.get(suffix, suffix)


# ----------------------------------------------------------------------------- JSON round trip
def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _finite_floats(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null (DuckDB's JSON type rejects them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_floats(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite_floats(value.tolist())
    return value


def to_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(_finite_floats(value), ensure_ascii=False, default=_jsonable, allow_nan=False)


def _unb64(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$b64"}:
        return base64.b64decode(value["$b64"])
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    if isinstance(value, dict):
        return {k: _unb64(v) for k, v in value.items()}
    return value


def from_json(text: str | None, *, binary: bool = False) -> Any:
    if text is None:
        return None
    value = json.loads(text)
    return _unb64(value) if binary else value


# ----------------------------------------------------------------------------- results
@dataclass
class Registration:
    kind: str
    name: str
    version: str
    n_rows: int
    n_samples: int
    n_duplicates: int
    n_skipped: int
    already_registered: bool
    preview: list = field(default_factory=list)      # the first samples (streamed registration)
    skipped: list = field(default_factory=list)      # the first rows skipped, as DataErrors (on_error="skip")


MEMORY_LIMIT = "1GB"


def _polars(con, sql: str, params):
    """A query's result as a polars DataFrame, through Arrow (no Python rows, no extra copy)."""
    import polars as pl

    return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())


class Catalog:
    """The DuckDB catalog file at ``path`` (created with its schema on first use)."""

    def __init__(self, path: str | Path, *, lock_timeout: float = 120.0, memory_limit: str | None = MEMORY_LIMIT):
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        # DuckDB's memory for the work of a connection (the staging table of a registration, sorts):
        # beyond it, DuckDB spills to <catalog>.tmp/, so a registration of any size runs in flat
        # memory. None: DuckDB's default (80% of RAM).
        self.memory_limit = memory_limit
        self._queries = _queries()

    # ------------------------------------------------------------------ connections
    def _open(self, read_only: bool):
        """A connection to the file (attached to this process's in-memory DuckDB, forvalue.catalog.attach),
        waiting up to ``lock_timeout`` while another process holds it."""
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                return ATTACHMENTS.open(self._key, read_only)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise CatalogError(
                        f"{self.path} is locked by another process for more than {self.lock_timeout:.0f} s: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @property
    def _key(self) -> str:
        return str(self.path.resolve())

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A short-lived connection; the catalog is created (schema + views) on first use."""
        if not self.path.exists() or (not read_only and self._key not in _INITIALIZED):
            self.init()
        con = self._open(read_only)
        try:
            if self.memory_limit and not read_only:
                self._set_memory_limit(con)
            yield con
        finally:
            ATTACHMENTS.close(self._key, con)

    def _set_memory_limit(self, con) -> None:
        import duckdb

        try:
            self.execute(con, "set_memory_limit", memory_limit=self.memory_limit)
        except duckdb.Error as e:
            raise ConfigError(f"catalog memory limit {self.memory_limit!r} (FORVALUE_DUCKDB_MEMORY) is not a memory "
                              f"size such as 1GB or 512MB: {e}") from None

    def init(self) -> None:
        """Create the tables and views from sql/schema.sql and sql/views.sql (idempotent). Parts of
        the product with tables of their own add them with :meth:`ensure` (fine-tuning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only=False)
        try:
            con.begin()
            try:
                con.execute((sql_dir() / "schema.sql").read_text())
                con.execute((sql_dir() / "views.sql").read_text())
                con.commit()
            except Exception:
                con.rollback()
                raise
        finally:
            ATTACHMENTS.close(self._key, con)
        _INITIALIZED.add(self._key)

    def ensure(self, file: str) -> None:
        """Create the tables and views of the ``schema`` block of sql/<file> (idempotent; once per
        process and catalog)."""
        key = (str(self.path.resolve()), file)
        if key in _ENSURED:
            return
        with self.transaction() as con:
            con.execute(schema_block(file))
        _ENSURED.add(key)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction: committed when the block ends, rolled back if it raises. Running out
        of the memory limit is a :class:`CatalogError` saying so (nothing is changed)."""
        import duckdb

        with self.connect() as con:
            con.begin()
            try:
                yield con
                con.commit()
            except duckdb.OutOfMemoryException as e:
                con.rollback()
                raise CatalogError(f"{self.path}: the write needed more than the catalog's memory limit "
                                   f"({self.memory_limit or 'DuckDB default'}; FORVALUE_DUCKDB_MEMORY), nothing was "
                                   f"changed: {str(e).splitlines()[0]}") from None
            except BaseException:
                con.rollback()
                raise

    # ------------------------------------------------------------------ query helpers
    def sql(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise CatalogError(f"no query named {name!r} in {sql_dir() / 'queries.sql'}") from None

    def _bind(self, sql: str, values: dict) -> dict:
        names = set(_PARAM_RE.findall(sql))
        missing = names - set(values)
        if missing:
            raise CatalogError(f"query needs parameters {sorted(missing)}")
        return {k: values[k] for k in names}

    def execute(self, con, name: str, /, **values):
        sql = self.sql(name)
        return con.execute(sql, self._bind(sql, values))

    def _insert_arrow(self, con, name: str, table_name: str, table, /, **values) -> None:
        import duckdb

        con.register(table_name, table)
        try:
            self.execute(con, name, **values)
        except BaseException:
            try:     # an aborted transaction refuses the unregister: the error that matters is the first
                con.unregister(table_name)
            except duckdb.Error:
                pass
            raise
        con.unregister(table_name)

    @staticmethod
    def _rows(cursor) -> list[dict]:
        cols = [d[0] for d in cursor.description]
        return [dict(zip(cols, r)) for r in cursor.fetchall()]

    def fetch(self, name: str, /, **values) -> list[dict]:
        """Rows of a named query, read-only."""
        with self.connect(read_only=True) as con:
            return self._rows(self.execute(con, name, **values))

    def fetch_one(self, name: str, /, **values) -> dict | None:
        rows = self.fetch(name, **values)
        return rows[0] if rows else None

    def query(self, sql: str, params: Sequence[Any] | dict | None = None) -> list[dict]:
        """An ad-hoc read-only query (for tests and notebooks); values go in ``params``."""
        with self.connect(read_only=True) as con:
            return self._rows(con.execute(sql, params or []))

    def frame(self, name: str, /, **values):
        """A named query of sql/queries.sql as a polars DataFrame (DuckDB hands the columns over as
        Arrow, no Python rows)."""
        with self.connect(read_only=True) as con:
            sql = self.sql(name)
            return _polars(con, sql, self._bind(sql, values))

    def _query(self, con, name: str, values: dict):
        """A named query on an open connection as a DuckDB relation (read by the caller, e.g. streamed
        with ``to_arrow_reader``)."""
        sql = self.sql(name)
        return con.sql(sql, params=self._bind(sql, values) or None)

    def query_frame(self, sql: str, params: Sequence[Any] | dict | None = None):
        """An ad-hoc read-only query as a polars DataFrame; values go in ``params``."""
        with self.connect(read_only=True) as con:
            return _polars(con, sql, params)

    def scores_frame(self, dataset_name: str, valuation_set: str, feature_config_id: str, model_id: str):
        """Stored scores as a polars DataFrame, best first."""
        return self.frame("get_scores", dataset_name=dataset_name, valuation_set=valuation_set,
                          feature_config_id=feature_config_id, model_id=model_id)

    def subset_frame(self, subset_id: str):
        """A curated subset's members (sample_id, rank, score, the sample's content) as a polars DataFrame."""
        return self.frame("subset_members_content", subset_id=subset_id)

    def count(self, table: str) -> int:
        with self.connect(read_only=True) as con:
            known = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                                "WHERE table_catalog = current_database()").fetchall()}
            if table not in known:
                raise CatalogError(f"no table or view named {table!r}")
            return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]

    # ------------------------------------------------------------------ registration
    def register_set(self, kind: str, name: str, version: str, source_path: str | Path, samples: Sequence[Sample],
                     *, n_skipped: int = 0, column_mapping: dict | None = None, fmt: str | None = None,
                     dagster_run_id: str | None = None) -> Registration:
        """Record a dataset or valuation set version and its samples, in one transaction."""
        set_table(kind)
        check_name(name)
        if not samples:
            raise CatalogError(f"{source_path}: no samples to register")
        unique: dict[str, Sample] = {}
        for s in samples:
            unique.setdefault(s.sample_id, s)
        already = self.current_set(kind, name, version=version) is not None
        rows = list(unique.values())
        table = samples_table(kind, name, version, rows)
        query = "upsert_dataset" if kind == KIND_DATASET else "upsert_valuation_set"
        with self.transaction() as con:
            self.execute(con, query, name=name, version=version, source_path=str(source_path),
                         format=fmt or file_format(source_path), n_rows=len(samples), n_samples=len(rows),
                         n_skipped=n_skipped, column_mapping=to_json(column_mapping), registered_at=utcnow(),
                         code_version=__version__, dagster_run_id=dagster_run_id)
            self.execute(con, "delete_set_samples", set_kind=kind, set_name=name, set_version=version)
            self._insert_arrow(con, "insert_samples", "new_samples", table)
        return Registration(kind=kind, name=name, version=version, n_rows=len(samples), n_samples=len(rows),
                            n_duplicates=len(samples) - len(rows), n_skipped=n_skipped, already_registered=already)

    def register_stream(self, kind: str, name: str, version: str, source_path: str | Path, batches, *,
                        on_error: str = "raise", column_mapping: dict | None = None, fmt: str | None = None,
                        dagster_run_id: str | None = None, keep: int = 20, before_commit=None) -> Registration:
        """Register a file batch by batch (``batches``: :class:`forvalue.data.stream.Batch` objects), in one
        transaction: the batches stream into a staging table (DuckDB spills it past its memory limit),
        each dropped from memory once read; DuckDB finds
        repeated ids and content. A bad row stops the registration (``on_error="raise"``) or is
        counted (``"skip"``); nothing is stored unless the whole file is. ``before_commit()`` runs last
        inside the transaction: raising there (the file changed meanwhile) stores nothing."""
        set_table(kind)
        check_name(name)
        already = self.current_set(kind, name, version=version) is not None
        st = _StagingStream(batches, kind, name, version, source_path, column_mapping, on_error, keep)
        with self.transaction() as con:
            con.execute("SET preserve_insertion_order = false")   # lets DuckDB spill the staging table
            self.execute(con, "create_staging_samples")
            self._insert_arrow(con, "insert_staging_samples", "new_samples", st.reader())
            if st.failed:
                raise st.failed[0]
            dup = self._rows(self.execute(con, "staging_duplicate_user_id"))
            if dup:
                d = dup[0]
                raise DataError(str(source_path), d["row_number"], (column_mapping or {}).get("id", "id"),
                                f"duplicate id {d['user_id']!r} (first at row {d['first_row']})")
            counts = self._rows(self.execute(con, "staging_counts"))[0]
            if not counts["n_samples"]:
                raise DataError(str(source_path), None, None, "no usable samples" +
                                (f" ({st.n_skipped} skipped)" if st.n_skipped else " (no rows: the file is empty)"))
            query = "upsert_dataset" if kind == KIND_DATASET else "upsert_valuation_set"
            self.execute(con, query, name=name, version=version, source_path=str(source_path),
                         format=fmt or file_format(source_path), n_rows=counts["n_rows"],
                         n_samples=counts["n_samples"], n_skipped=st.n_skipped, column_mapping=to_json(column_mapping),
                         registered_at=utcnow(), code_version=__version__, dagster_run_id=dagster_run_id)
            self.execute(con, "delete_set_samples", set_kind=kind, set_name=name, set_version=version)
            self.execute(con, "insert_samples_from_staging")
            self.execute(con, "drop_staging_samples")
            if before_commit is not None:
                before_commit()
        return Registration(kind=kind, name=name, version=version, n_rows=counts["n_rows"],
                            n_samples=counts["n_samples"], n_duplicates=counts["n_rows"] - counts["n_samples"],
                            n_skipped=st.n_skipped, already_registered=already, preview=st.preview, skipped=st.skipped)

    def current_set(self, kind: str, name: str, *, version: str | None = None) -> dict | None:
        """The current registration of a set (or a given version of it), or None."""
        if version is None:
            return self.fetch_one("current_dataset" if kind == KIND_DATASET else "current_valuation_set", name=name)
        set_table(kind)
        return self.fetch_one("dataset_version" if kind == KIND_DATASET else "valuation_set_version",
                              name=name, version=version)

    def require_set(self, kind: str, name: str) -> dict:
        info = self.current_set(kind, name)
        if info is None:
            what = "training dataset" if kind == KIND_DATASET else "valuation set"
            raise CatalogError(f"{what} {name!r} is not registered in {self.path}")
        return info

    def sample_rows(self, kind: str, name: str, version: str) -> list[dict]:
        return self.fetch("set_samples", set_kind=kind, set_name=name, set_version=version)

    def sample_ids(self, kind: str, name: str, version: str) -> list[str]:
        return [r["sample_id"] for r in self.sample_rows(kind, name, version)]

    def load_samples(self, kind: str, name: str, version: str | None = None, *,
                     sample_ids: Sequence[str] | None = None) -> list[Sample]:
        """The stored samples of a set version (default: current), in file order; only those in
        ``sample_ids`` when given."""
        info = self.require_set(kind, name) if version is None else self.current_set(kind, name, version=version)
        if info is None:
            raise CatalogError(f"{name!r} version {version} is not registered")
        if sample_ids is None:
            rows = self.sample_rows(kind, name, info["version"])
        else:
            rows = self.fetch("set_samples_by_ids", set_kind=kind, set_name=name, set_version=info["version"],
                              sample_ids=list(sample_ids))
        out = []
        for r in rows:
            out.append(Sample(
                sample_id=r["sample_id"], prompt=r["prompt"], response=r["response"],
                messages=from_json(r["messages"]), text=r["text"],
                images=from_json(r["images"], binary=True) or [], label=from_json(r["label"]),
                user_id=r["user_id"], record=from_json(r["record"], binary=True) or {},
                source=info["source_path"], row=r["row_number"],
            ))
        return out

    # ------------------------------------------------------------------ models and features
    def record_model(self, fingerprint, spec: str | None = None) -> str:
        fp = fingerprint.to_dict() if hasattr(fingerprint, "to_dict") else dict(fingerprint)
        with self.transaction() as con:
            self.execute(con, "upsert_model", model_id=fp["id"], name=fp["name"], weights_hash=fp["weights_hash"],
                         dtype=fp["dtype"], kind=fp.get("kind", "text"), spec=spec, first_seen=utcnow())
        return fp["id"]

    def model(self, model_id: str) -> dict | None:
        return self.fetch_one("get_model", model_id=model_id)

    def fingerprint(self, model_id: str):
        """The ModelFingerprint recorded for ``model_id``."""
        from ..models.loading import ModelFingerprint

        m = self.model(model_id)
        if m is None:
            raise CatalogError(f"model {model_id!r} is not recorded in {self.path}")
        return ModelFingerprint(name=m["name"], weights_hash=m["weights_hash"], dtype=m["dtype"], kind=m["kind"])

    def record_feature_run(self, *, kind: str, name: str, version: str, model_id: str, config, n_samples: int,
                           n_computed: int, n_reused: int, n_shards_written: int, store_folder: str | Path,
                           seconds: float | None = None, dagster_run_id: str | None = None) -> str:
        run_id = uuid.uuid4().hex
        with self.transaction() as con:
            self.execute(con, "insert_feature_run", feature_run_id=run_id, set_kind=kind, set_name=name,
                         set_version=version, model_id=model_id, feature_config_id=config.id,
                         feature_config=to_json(config.to_dict()), n_samples=n_samples, n_computed=n_computed,
                         n_reused=n_reused, n_shards_written=n_shards_written, store_folder=str(store_folder),
                         seconds=seconds, code_version=__version__, dagster_run_id=dagster_run_id,
                         created_at=utcnow())
        return run_id

    def latest_feature_run(self, kind: str, name: str, version: str, config_id: str) -> dict | None:
        return self.fetch_one("latest_feature_run", set_kind=kind, set_name=name, set_version=version,
                              feature_config_id=config_id)

    # ------------------------------------------------------------------ scores
    def replace_scores(self, *, dataset_name: str, dataset_version: str, valuation_set: str, valuation_version: str,
                       model_id: str, feature_config_id: str, sample_ids: Sequence[str], values: np.ndarray,
                       ranks: np.ndarray | None = None, method: str = "sparse",
                       normalized: np.ndarray | None = None, norms: np.ndarray | None = None,
                       train_feature_run_id: str | None = None, val_feature_run_id: str | None = None,
                       seconds: float | None = None, dagster_run_id: str | None = None,
                       valuation_holdout: float = 0.0, n_valuation: int | None = None) -> str:
        """Replace the scores of (dataset, valuation set, feature config, model) in one transaction.
        ``normalized`` (cosine with the mean valuation gradient) and ``norms`` (||G||) are kept next
        to the raw value so that SQL users can re-rank. ``valuation_holdout``: the percent of the
        valuation set held out for evaluation (forvalue.data.holdout), ``n_valuation`` the samples scored
        against."""
        import pyarrow as pa

        from ..valuation.scoring import rank as rank_of

        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(sample_ids):
            raise ValueError(f"{len(values)} scores for {len(sample_ids)} samples")
        if len(set(sample_ids)) != len(sample_ids):
            raise ValueError("duplicate sample ids in scores")
        if not np.all(np.isfinite(values)):
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(f"{bad} non-finite scores (NaN or inf); the stored scores are left as they were")
        ranks = rank_of(values) if ranks is None else np.asarray(ranks)
        score_run_id = uuid.uuid4().hex
        extra = {}
        for name, arr in (("normalized", normalized), ("norm", norms)):
            arr = np.full(len(values), np.nan) if arr is None else np.asarray(arr, dtype=np.float64)
            if len(arr) != len(values):
                raise ValueError(f"{len(arr)} {name} values for {len(values)} scores")
            extra[name] = pa.array(arr, pa.float64(), mask=~np.isfinite(arr))
        table = pa.table({
            "sample_id": pa.array(list(sample_ids), pa.string()),
            "score": pa.array(values, pa.float64()),
            "rank": pa.array(ranks.astype(np.int32), pa.int32()),
            **extra,
        })
        common = dict(dataset_name=dataset_name, dataset_version=dataset_version, valuation_set=valuation_set,
                      valuation_version=valuation_version, model_id=model_id, feature_config_id=feature_config_id,
                      score_run_id=score_run_id, code_version=__version__, dagster_run_id=dagster_run_id)
        with self.transaction() as con:
            self.execute(con, "delete_scores", **common)
            self._insert_arrow(con, "insert_scores", "new_scores", table, **common)
            self.execute(con, "insert_score_run", **common, train_feature_run_id=train_feature_run_id,
                         val_feature_run_id=val_feature_run_id, method=method, n_scores=len(values),
                         valuation_holdout=float(valuation_holdout or 0.0), n_valuation=n_valuation,
                         score_mean=float(values.mean()) if len(values) else None,
                         score_std=float(values.std()) if len(values) else None, seconds=seconds,
                         created_at=utcnow())
        return score_run_id

    def latest_score_run(self, dataset_name: str, valuation_set: str, feature_config_id: str) -> dict | None:
        return self.fetch_one("latest_score_run", dataset_name=dataset_name, valuation_set=valuation_set,
                              feature_config_id=feature_config_id)

    def scores(self, dataset_name: str, valuation_set: str, feature_config_id: str, model_id: str) -> list[dict]:
        """Stored scores, best first."""
        return self.fetch("get_scores", dataset_name=dataset_name, valuation_set=valuation_set,
                          feature_config_id=feature_config_id, model_id=model_id)

    def score_problems(self, *, dataset_name: str, dataset_version: str, valuation_set: str,
                       feature_config_id: str, model_id: str) -> dict:
        return self.fetch_one("score_problems", dataset_name=dataset_name, dataset_version=dataset_version,
                              valuation_set=valuation_set, feature_config_id=feature_config_id, model_id=model_id)

    # ------------------------------------------------------------------ subsets
    def record_subset(self, *, score_run: dict, mode: str, value: float, n_total: int,
                      members, jsonl_path: str | Path, parquet_path: str | Path,
                      subset_id: str | None = None, dagster_run_id: str | None = None,
                      strategy: str = "raw-mean", checks: dict | str | None = None,
                      dropped: list[dict] | None = None, near_cut=None) -> str:
        """Record a subset (and its members: sample_id, rank in the strategy's order, score and the
        value the strategy ranked by; an Arrow table or (sample_id, rank, score[, ranked_by]) tuples)
        in one transaction, with the consistency checks' summary (``checks``, or why none ran), every
        sample they dropped (``dropped``: rows of :meth:`forvalue.curation.consistency.Checked.records`)
        and the dropped samples nearest the cut (``near_cut``: as ``members``; table subset_near_cut)."""
        import pyarrow.compute as pc

        from ..curation.selection import SIZE_MODES

        if mode not in SIZE_MODES:
            raise ValueError(f"mode must be one of {SIZE_MODES}, not {mode!r}")
        table = members_table(members)
        if len(table) and pc.count_distinct(table.column("sample_id")).as_py() != len(table):
            raise ValueError("duplicate sample ids in the subset's members")
        subset_id = subset_id or uuid.uuid4().hex
        with self.transaction() as con:
            self.execute(con, "insert_subset", subset_id=subset_id, dataset_name=score_run["dataset_name"],
                         dataset_version=score_run["dataset_version"], valuation_set=score_run["valuation_set"],
                         valuation_version=score_run["valuation_version"], model_id=score_run["model_id"],
                         feature_config_id=score_run["feature_config_id"], score_run_id=score_run["score_run_id"],
                         mode=mode, value=float(value), strategy=strategy, n_total=n_total, n_selected=len(table),
                         jsonl_path=str(jsonl_path), parquet_path=str(parquet_path), code_version=__version__,
                         dagster_run_id=dagster_run_id, created_at=utcnow(),
                         checks=None if checks is None else json.dumps(checks))
            self._insert_arrow(con, "insert_subset_samples", "new_subset_samples", table, subset_id=subset_id)
            if near_cut is not None and len(near_cut):
                self._insert_arrow(con, "insert_subset_near_cut", "new_subset_near_cut", members_table(near_cut),
                                   subset_id=subset_id)
            if dropped:
                import pyarrow as pa

                self._insert_arrow(con, "insert_subset_checks", "new_subset_checks", pa.table({
                    "sample_id": pa.array([d["sample_id"] for d in dropped], pa.string()),
                    "check_name": pa.array([d["check"] for d in dropped], pa.string()),
                    "check_value": pa.array([d["value"] for d in dropped], pa.float64()),
                    "threshold": pa.array([d["threshold"] for d in dropped], pa.float64())}), subset_id=subset_id)
        return subset_id

    def subset_checks(self, subset_id: str) -> list[dict]:
        """The samples a subset's consistency checks dropped, least failing first."""
        return self.fetch("subset_checks", subset_id=subset_id)

    def latest_subset(self, dataset_name: str, valuation_set: str) -> dict | None:
        return self.fetch_one("latest_subset", dataset_name=dataset_name, valuation_set=valuation_set)

    def subset_lineage(self, subset_id: str) -> dict | None:
        return self.fetch_one("subset_lineage", subset_id=subset_id)


class _StagingStream:
    """A file's batches as one Arrow stream for the staging table, counting skipped rows and keeping
    the first samples and errors on the way. One stream, not one registered table per batch: DuckDB
    keeps every table registered inside an open transaction alive until it ends, which held the
    whole file in memory. An error raised while DuckDB reads the stream ends the stream and is kept
    in ``failed`` (DuckDB would replace it by its own), to be raised by the caller."""

    def __init__(self, batches, kind, name, version, source_path, column_mapping, on_error, keep):
        self.batches, self.kind, self.name, self.version = batches, kind, name, version
        self.source_path, self.column_mapping, self.on_error, self.keep = source_path, column_mapping, on_error, keep
        self.preview, self.skipped, self.failed, self.n_skipped = [], [], [], 0

    def reader(self):
        import pyarrow as pa

        schema = samples_table(self.kind, self.name, self.version, []).schema
        return pa.RecordBatchReader.from_batches(schema, self._arrow_batches())

    def _arrow_batches(self):
        from ..data.stream import needed_columns

        first = True
        try:
            for batch in self.batches:
                if first and batch.keys:
                    missing = [c for c in needed_columns(columns_of(self.column_mapping), batch.keys)
                               if c not in batch.keys]
                    if missing:
                        raise DataError(str(self.source_path), None, missing[0], "missing column")
                first = first and not batch.keys
                if batch.errors and self.on_error == "raise":
                    raise batch.errors[0]
                self.n_skipped += len(batch.errors)
                self.skipped += batch.errors[:max(0, self.keep - len(self.skipped))]
                self.preview += batch.samples[:max(0, 5 - len(self.preview))]
                if batch.samples:
                    yield from samples_table(self.kind, self.name, self.version, batch.samples).to_batches()
        except GeneratorExit:
            raise
        except BaseException as exc:
            self.failed.append(exc)


def samples_table(kind: str, name: str, version: str, rows: Sequence[Sample]):
    """The ``samples`` rows of a set version as an Arrow table."""
    import pyarrow as pa

    return pa.table({
        "set_kind": pa.array([kind] * len(rows), pa.string()),
        "set_name": pa.array([name] * len(rows), pa.string()),
        "set_version": pa.array([version] * len(rows), pa.string()),
        "sample_id": pa.array([s.sample_id for s in rows], pa.string()),
        "row_number": pa.array([s.row for s in rows], pa.int32()),
        "user_id": pa.array([s.user_id for s in rows], pa.string()),
        "kind": pa.array([s.kind for s in rows], pa.string()),
        "prompt": pa.array([s.prompt for s in rows], pa.string()),
        "response": pa.array([s.response for s in rows], pa.string()),
        "text": pa.array([s.text for s in rows], pa.string()),
        "messages": pa.array([to_json(s.messages) for s in rows], pa.string()),
        "images": pa.array([to_json(s.images) if s.images else None for s in rows], pa.string()),
        "label": pa.array([to_json(s.label) for s in rows], pa.string()),
        "record": pa.array([to_json(s.record) for s in rows], pa.string()),
    })


def columns_of(mapping: dict | None):
    """The :class:`forvalue.data.samples.Columns` of a registered set's ``column_mapping``."""
    from ..data.samples import Columns

    return Columns(**{k: v for k, v in (mapping or {}).items() if k in Columns.__dataclass_fields__})


# ----------------------------------------------------------------------------- subsets on disk
EXPORT_BATCH_ROWS = 8192


def members_table(members):
    """A subset's members as an Arrow table (sample_id string, rank int32, score float64, ranked_by
    float64: the value the strategy ranked by, null where not given or NaN), from an Arrow table or
    from (sample_id, rank, score[, ranked_by]) tuples."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(members, pa.Table):
        n = members.num_rows
        by = (members.column("ranked_by").cast(pa.float64()) if "ranked_by" in members.column_names
              else pa.nulls(n, pa.float64()))
        return pa.table({"sample_id": members.column("sample_id").cast(pa.string()),
                         "rank": members.column("rank").cast(pa.int32()),
                         "score": members.column("score").cast(pa.float64()),
                         "ranked_by": pc.if_else(pc.is_nan(by), None, by) if n else by})
    by = [None if len(m) < 4 or m[3] is None or m[3] != m[3] else float(m[3]) for m in members]
    return pa.table({"sample_id": pa.array([m[0] for m in members], pa.string()),
                     "rank": pa.array([int(m[1]) for m in members], pa.int32()),
                     "score": pa.array([float(m[2]) for m in members], pa.float64()),
                     "ranked_by": pa.array(by, pa.float64())})


def export_subset(catalog: "Catalog", kind: str, name: str, version: str, members, folder: str | Path, stem: str,
                  strategy: str | None = None) -> tuple[Path, Path]:
    """Write a subset of a registered set version as ``<stem>.jsonl`` (the original rows, in file
    order: a drop-in training file) and ``<stem>.parquet`` (sample_id, rank, score, [strategy,] row,
    the text fields and the raw row as JSON, in the subset's order). ``members``: an Arrow table
    (sample_id, rank, score) in the subset's order. Streamed: the samples come out of the catalog
    ``EXPORT_BATCH_ROWS`` at a time, whatever the set's size. Each file is written to a temporary
    name and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    members = members_table(members)
    kept = members.add_column(0, "position", pa.array(np.arange(members.num_rows), pa.int64()))
    where = {"set_kind": kind, "set_name": name, "set_version": version}
    schema = pa.schema([("sample_id", pa.string()), ("rank", pa.int32()), ("score", pa.float64())]
                       + ([("strategy", pa.string())] if strategy else [])
                       + [("row", pa.int32()), ("prompt", pa.string()), ("response", pa.string()),
                          ("text", pa.string()), ("messages", pa.string()), ("record", pa.string())])
    jsonl, parquet = folder / f"{stem}.jsonl", folder / f"{stem}.parquet"
    with catalog.connect(read_only=True) as con:
        if catalog.memory_limit:    # the join and sort below spill past it rather than grow
            catalog._set_memory_limit(con)
        con.register("kept_members", kept)
        missing = catalog._query(con, "kept_missing", where).fetchall()
        if missing:
            raise CatalogError(f"subset samples are not in the registered {name!r} version {version[:12]}, e.g. "
                               f"{missing[0][0]}")

        def write_parquet(tmp):
            with pq.ParquetWriter(tmp, schema) as writer:
                for batch in catalog._query(con, "kept_samples_ranked", where).to_arrow_reader(EXPORT_BATCH_ROWS):
                    cols = {c: batch.column(c) for c in batch.schema.names}
                    if strategy:
                        cols["strategy"] = pa.array([strategy] * batch.num_rows, pa.string())
                    writer.write_table(pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema))

        def write_jsonl(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                reader = catalog._query(con, "kept_records_in_file_order", where).to_arrow_reader(EXPORT_BATCH_ROWS)
                for batch in reader:
                    for text in batch.column("record").to_pylist():
                        f.write(json.dumps(from_json(text, binary=True), ensure_ascii=False, default=_jsonable) + "\n")

        atomic_write(jsonl, write_jsonl)
        atomic_write(parquet, write_parquet)
    return jsonl, parquet
