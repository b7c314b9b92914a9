"""Registration: ``training_dataset`` / ``valuation_set`` (group ingest, pool ``duckdb``) validate a
file and record it (a new content version) in DuckDB: ``datasets`` / ``valuation_sets`` and
``samples``."""

import time
from pathlib import Path

from dagster import AssetExecutionContext, Config, DataVersion, Failure, MaterializeResult, MetadataValue
from pydantic import Field

from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, CatalogError
from forvalue.data.samples import Columns, DataError
from resources import DuckDBStoreResource
from resources._fields import config_class, dataclass_fields
from sensors.links import in_folder, link_refusal
from sensors.settings import SOURCE_TAG, TRAIN_SUBDIR, VALUATION_SUBDIR, follow_links, incoming_root

from .. import metadata as md
from ..common import DUCKDB_POOL, KIND_LABEL, AssetDefaults, catalog_failure, data_failure
from ..partitions import training_datasets, valuation_sets
from ..settings import find_incoming_file, incoming_candidates

# Every ingest asset: group ingest, pool duckdb (it writes the catalog), kinds duckdb + json.
DEFAULTS = AssetDefaults(group="ingest", pool=DUCKDB_POOL, kinds=frozenset({"duckdb", "json"}))


class _Register(Config):
    path: str = Field(default="", description="file or HF folder to register; empty: find <partition>.* in the incoming folder")
    content_hash: str = Field(default="", description="sha256 the sensor saw: the file is hashed again when read, "
                                                     "and the run fails (nothing registered) when it differs")
    on_error: str = Field(default="raise", description="raise: a bad row fails the run (file, row, field named); skip: bad rows are skipped and counted")


RegisterConfig = config_class(
    "RegisterConfig", _Register,
    "How to read the file of a dataset or valuation set. The incoming-folder sensor fills ``path``; launched "
    "by hand, the newest incoming/<train|valuation>/<partition>.* is used. The column fields are "
    "forvalue.data.samples.Columns'.", dataclass_fields(Columns))


def _source_path(name: str, kind: str, config: RegisterConfig) -> Path:
    """The file to register: ``config.path``, else the newest incoming file named ``name``."""
    from forvalue.catalog.db import check_name

    try:
        check_name(name, f"{KIND_LABEL[kind]} name")
    except CatalogError as e:
        raise catalog_failure(e) from e
    subdir = TRAIN_SUBDIR if kind == KIND_DATASET else VALUATION_SUBDIR
    if config.path:
        path = Path(config.path)
    else:
        path = find_incoming_file(subdir, name)
        if path is None:
            refused = [f"{p}: {why}" for p, why in incoming_candidates(subdir, name) if why]
            raise Failure(description=(
                f"no file for {KIND_LABEL[kind]} {name!r}: expected {incoming_root() / subdir}/{name}.jsonl "
                f"(or .parquet, .csv), or set 'path' in the run config" +
                (f"; not read: {'; '.join(refused)}" if refused else "")))
    if not path.exists():
        raise Failure(description=f"{path}: file not found")
    if config.on_error not in ("raise", "skip"):
        raise Failure(description=f"on_error must be 'raise' or 'skip', not {config.on_error!r}")
    return path


def _check_links(context: AssetExecutionContext, path: Path, config: RegisterConfig) -> None:
    """Repeat the sensor's link checks (``sensors/links.py``) on the file this run reads, when it comes
    from the incoming folder: the run was requested by the sensor, the file was found there, or its
    path is in it. (A file named by hand outside the incoming folder is read as given: whoever can
    launch runs chooses it.)"""
    root = incoming_root()
    if not (context.has_tag(SOURCE_TAG) or not config.path or in_folder(path, root)):
        return
    try:
        why = link_refusal(path, root, follow_links())
    except OSError as e:
        raise Failure(description=f"{path}: cannot read the file ({e.strerror or e}); nothing registered",
                      metadata={"file": str(path)}) from None
    if why is not None:
        raise Failure(description=f"{path}: {why}; nothing registered", metadata={"file": str(path)})


def _expect_content(path: Path, version: str, config: RegisterConfig) -> None:
    """Fail when the content read is not the content hash the sensor saw (``config.content_hash``)."""
    if config.content_hash and config.content_hash != version:
        raise Failure(description=(
            f"{path}: its content ({version[:12]}) is not what the sensor saw ({config.content_hash[:12]}): the "
            f"file was changed or replaced after the tick; nothing registered (if it was changed on purpose, the "
            f"sensor's next tick registers the new content)"), metadata={"file": str(path)})


def _register(context: AssetExecutionContext, config: RegisterConfig, catalog: DuckDBStoreResource,
              kind: str) -> MaterializeResult:
    from dataclasses import fields

    from forvalue.catalog.db import content_hash, file_format
    from forvalue.data.stream import iter_batches

    t0 = time.perf_counter()
    name = context.partition_key
    path = _source_path(name, kind, config)
    columns = Columns(**{f.name: getattr(config, f.name) for f in fields(Columns)})
    _check_links(context, path, config)
    try:
        version = content_hash(path)
    except OSError as e:
        raise Failure(description=f"{path}: cannot read the file ({e.strerror or e}); fix or replace it and the "
                                  f"sensor registers it on its next tick", metadata={"file": str(path)}) from None
    _expect_content(path, version, config)

    def unchanged():   # raised inside the transaction: nothing is stored
        _check_links(context, path, config)
        if content_hash(path) != version:
            raise Failure(description=f"{path} changed while it was being read; nothing registered (the next "
                                      f"sensor tick registers the new content)", metadata={"file": str(path)})

    cat = catalog.catalog()
    try:   # streamed: batches of samples into a staging table, never the whole file in memory
        reg = cat.register_stream(kind, name, version, path, iter_batches(path, columns=columns),
                                  on_error=config.on_error,
                                  column_mapping={k: v for k, v in vars(columns).items() if v is not None},
                                  fmt=file_format(path), dagster_run_id=context.run_id, before_commit=unchanged)
    except DataError as e:
        raise data_failure(e) from e
    for skipped in reg.skipped:
        context.log.warning(f"{skipped} (skipped)")
    return MaterializeResult(
        data_version=DataVersion(version[:16]),
        metadata={
            "dagster/row_count": MetadataValue.int(reg.n_samples),
            "rows_read": MetadataValue.int(reg.n_rows),
            "duplicates": MetadataValue.int(reg.n_duplicates),
            "skipped_rows": MetadataValue.int(reg.n_skipped),
            "content_version": MetadataValue.text(version),
            "source": MetadataValue.path(str(path)),
            "already_registered": MetadataValue.bool(reg.already_registered),
            "tables": MetadataValue.text(f"{'datasets' if kind == KIND_DATASET else 'valuation_sets'}, samples"),
            "catalog": MetadataValue.path(str(cat.path)),
            "preview": md.md_preview(reg.preview),
            "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
        },
    )


@DEFAULTS.asset(
    partitions_def=training_datasets,
    description="A registered training dataset (one partition per name): the file is validated (errors name "
                "file, row and field) and its content version and samples are recorded in DuckDB tables "
                "`datasets` and `samples`.",
)
def training_dataset(context: AssetExecutionContext, config: RegisterConfig,
                     catalog: DuckDBStoreResource) -> MaterializeResult:
    return _register(context, config, catalog, KIND_DATASET)


@DEFAULTS.asset(
    partitions_def=valuation_sets,
    description="A registered valuation set (the examples that define 'valuable'; one partition per name), "
                "validated and recorded in DuckDB tables `valuation_sets` and `samples`.",
)
def valuation_set(context: AssetExecutionContext, config: RegisterConfig,
                  catalog: DuckDBStoreResource) -> MaterializeResult:
    return _register(context, config, catalog, KIND_VALUATION)
