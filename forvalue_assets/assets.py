"""The asset graph.

    training_dataset[t] ──> training_features[t] ──┐
                                                    ├──> forvalue_scores[t|v] ──> curated_subset[t|v]
    valuation_set[v]    ──> valuation_features[v] ─┘

- ``training_dataset`` / ``valuation_set`` (group ingest): validate a file and record it (a new
  content version) in DuckDB: ``datasets`` / ``valuation_sets`` and ``samples``.
- ``training_features`` / ``valuation_features`` (group features, pool ``model``): sparse features
  as Parquet shards; only sample ids missing for this model and feature config are computed.
- ``forvalue_scores`` (group valuation): the ``scores`` table for a (dataset, valuation set) pair,
  replaced in one transaction.
- ``curated_subset`` (group curation): top-k / top-p% / bottom-p% / drop-the-lowest-p% of the order
  of a selection strategy (default ``balanced``, see forvalue/selection.py), exported as JSONL and
  Parquet and recorded in ``subsets``.

Every asset that writes DuckDB runs in pool ``duckdb``; feature extraction runs in pool ``model``
(its one short catalog write waits for the lock; see forvalue/catalog.py). With the pools' limit
of 1 (dagster.yaml, ``concurrency: pools: default_limit: 1``) one feature job and one catalog
writer run at a time.
"""


import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

import numpy as np
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

import forvalue
from forvalue.catalog import KIND_DATASET, KIND_VALUATION, SUBSET_MODES, CatalogError
from forvalue.data import DataError
from forvalue.selection import STRATEGIES
from resources import DuckDBStoreResource, FeatureStoreResource, ModelResource
from resources._env import env_str

from . import metadata as md
from .partitions import dataset_pairs, split_pair, training_datasets, valuation_sets
from .settings import TRAIN_SUBDIR, VALUATION_SUBDIR, find_incoming_file, incoming_root

OWNERS = ["team:data-curation"]
CODE_VERSION = forvalue.__version__
DUCKDB_POOL = "duckdb"
MODEL_POOL = "model"

# Keep derived assets current: run when an upstream partition updates, never on missing or
# in-progress inputs, and never past a failed blocking check upstream.
AUTOMATION = AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()

KIND_LABEL = {KIND_DATASET: "training dataset", KIND_VALUATION: "valuation set"}


def data_failure(e: DataError) -> Failure:
    return Failure(description=str(e), metadata={
        "file": e.file, "row": MetadataValue.int(e.row) if e.row is not None else "-",
        "field": e.field or "-", "reason": e.reason})


def catalog_failure(e: Exception) -> Failure:
    return Failure(description=str(e))


# ----------------------------------------------------------------------------- registration
class RegisterConfig(Config):
    """How to read the file of a dataset or valuation set. The incoming-folder sensor fills
    ``path``; launched by hand, the newest incoming/<train|valuation>/<partition>.* is used."""

    path: str = Field(default="", description="file or HF folder to register; empty: find <partition>.* in the incoming folder")
    content_hash: str = Field(default="", description="sha256 the sensor saw (the file is hashed again when read)")
    on_error: str = Field(default="raise", description="raise: a bad row fails the run (file, row, field named); skip: bad rows are skipped and counted")
    prompt: str = "prompt"
    response: str = "response"
    messages: str = "messages"
    text: Optional[str] = Field(default=None, description="column of plain-text samples (then prompt/response are not used)")
    id: str = "id"
    label: Optional[str] = None
    image: Optional[str] = None


def _register(context: AssetExecutionContext, config: RegisterConfig, catalog: DuckDBStoreResource,
              kind: str) -> MaterializeResult:
    from forvalue.catalog import check_name, content_hash, file_format
    from forvalue.data import Columns, load_samples

    t0 = time.perf_counter()
    name = context.partition_key
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
            raise Failure(description=(
                f"no file for {KIND_LABEL[kind]} {name!r}: expected {incoming_root() / subdir}/{name}.jsonl "
                f"(or .parquet, .csv), or set 'path' in the run config"))
    if not path.exists():
        raise Failure(description=f"{path}: file not found")
    if config.on_error not in ("raise", "skip"):
        raise Failure(description=f"on_error must be 'raise' or 'skip', not {config.on_error!r}")
    columns = Columns(prompt=config.prompt, response=config.response, messages=config.messages, text=config.text,
                      id=config.id, label=config.label, image=config.image)
    version = content_hash(path)
    if config.content_hash and config.content_hash != version:
        context.log.warning(f"{path} changed since the sensor saw it; registering its current content {version[:12]}")
    try:
        loaded = load_samples(path, columns=columns, on_error=config.on_error)
    except DataError as e:
        raise data_failure(e) from e
    if content_hash(path) != version:
        raise Failure(description=f"{path} changed while it was being read; the next sensor tick registers the new content")
    for skipped in loaded.skipped[:20]:
        context.log.warning(f"{path}: row {skipped.row}, field {skipped.field!r}: {skipped.reason} (skipped)")
    cat = catalog.catalog()
    reg = cat.register_set(kind, name, version, path, loaded.samples, n_skipped=len(loaded.skipped),
                           column_mapping={k: v for k, v in vars(columns).items() if v is not None},
                           fmt=file_format(path), dagster_run_id=context.run_id)
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
            "preview": md.md_preview(loaded.samples[:5]),
            "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
        },
    )


@asset(
    partitions_def=training_datasets,
    group_name="ingest",
    kinds={"duckdb", "json"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
    code_version=CODE_VERSION,
    description="A registered training dataset (one partition per name): the file is validated (errors name "
                "file, row and field) and its content version and samples are recorded in DuckDB tables "
                "`datasets` and `samples`.",
)
def training_dataset(context: AssetExecutionContext, config: RegisterConfig,
                     catalog: DuckDBStoreResource) -> MaterializeResult:
    return _register(context, config, catalog, KIND_DATASET)


@asset(
    partitions_def=valuation_sets,
    group_name="ingest",
    kinds={"duckdb", "json"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
    code_version=CODE_VERSION,
    description="A registered valuation set (the examples that define 'valuable'; one partition per name), "
                "validated and recorded in DuckDB tables `valuation_sets` and `samples`.",
)
def valuation_set(context: AssetExecutionContext, config: RegisterConfig,
                  catalog: DuckDBStoreResource) -> MaterializeResult:
    return _register(context, config, catalog, KIND_VALUATION)


# ----------------------------------------------------------------------------- features
def _features(context: AssetExecutionContext, kind: str, model: ModelResource, feature_store: FeatureStoreResource,
              catalog: DuckDBStoreResource) -> MaterializeResult:
    t0 = time.perf_counter()
    name = context.partition_key
    cat = catalog.catalog()
    try:
        info = cat.require_set(kind, name)
        samples = cat.load_samples(kind, name, info["version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    cfg = feature_store.config()
    store = feature_store.store()
    t_load = time.perf_counter()
    lm = model.load()
    load_s = time.perf_counter() - t_load
    t_ext = time.perf_counter()
    try:
        res = store.ensure(lm, samples, cfg, batch_size=model.batch_size, shard_size=feature_store.shard_size,
                           extra={"dagster_run_id": context.run_id, "source_set": f"{kind}/{name}@{info['version'][:16]}"})
    except DataError as e:
        raise data_failure(e) from e
    extract_s = time.perf_counter() - t_ext
    model_id = cat.record_model(lm.fingerprint, spec=model.model)
    folder = store.folder(lm.fingerprint, cfg)
    run_id = cat.record_feature_run(kind=kind, name=name, version=info["version"], model_id=model_id, config=cfg,
                                    n_samples=len(samples), n_computed=res.computed, n_reused=res.reused,
                                    n_shards_written=len(res.shards_written), store_folder=folder,
                                    seconds=time.perf_counter() - t0, dagster_run_id=context.run_id)
    context.log.info(f"{KIND_LABEL[kind]} {name}: {res.computed} samples computed, {res.reused} reused")
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(samples)),
        "computed": MetadataValue.int(res.computed),
        "reused": MetadataValue.int(res.reused),
        "feature_rows": MetadataValue.int(int(res.features.n_rows)),
        "shards_written": MetadataValue.int(len(res.shards_written)),
        "store_folder": MetadataValue.path(str(folder)),
        "model_fingerprint": MetadataValue.json(lm.fingerprint.to_dict()),
        "model_id": MetadataValue.text(model_id),
        "feature_config": MetadataValue.json(cfg.to_dict()),
        "feature_config_id": MetadataValue.text(cfg.id),
        "dataset_version": MetadataValue.text(info["version"]),
        "feature_run_id": MetadataValue.text(run_id),
        "tables": MetadataValue.text("models, feature_runs"),
        "seconds_model_load": MetadataValue.float(round(load_s, 3)),
        "seconds_extract": MetadataValue.float(round(extract_s, 3)),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


@asset(
    partitions_def=training_datasets,
    deps=[training_dataset],
    group_name="features",
    kinds={"pytorch", "parquet"},
    owners=OWNERS,
    pool=MODEL_POOL,
    code_version=CODE_VERSION,
    automation_condition=AUTOMATION,
    description="Sparse For-Value features (lm_head gradient rows on targets + top-k tokens, hidden side "
                "projected) of a training dataset, as Parquet shards keyed by model fingerprint and feature "
                "config. Only sample ids missing for this model and config are computed.",
)
def training_features(context: AssetExecutionContext, model: ModelResource, feature_store: FeatureStoreResource,
                      catalog: DuckDBStoreResource) -> MaterializeResult:
    return _features(context, KIND_DATASET, model, feature_store, catalog)


@asset(
    partitions_def=valuation_sets,
    deps=[valuation_set],
    group_name="features",
    kinds={"pytorch", "parquet"},
    owners=OWNERS,
    pool=MODEL_POOL,
    code_version=CODE_VERSION,
    automation_condition=AUTOMATION,
    description="Sparse For-Value features of a valuation set (same store and keys as training_features); "
                "only missing sample ids are computed.",
)
def valuation_features(context: AssetExecutionContext, model: ModelResource, feature_store: FeatureStoreResource,
                       catalog: DuckDBStoreResource) -> MaterializeResult:
    return _features(context, KIND_VALUATION, model, feature_store, catalog)


# ----------------------------------------------------------------------------- scores
def scoring_inputs(cat, feature_store: FeatureStoreResource, dataset: str, valuation: str) -> dict:
    """What a (dataset, valuation set) score is computed from: current versions, the feature runs
    that produced their features, and the model those runs used."""
    cfg = feature_store.config()
    tinfo = cat.require_set(KIND_DATASET, dataset)
    vinfo = cat.require_set(KIND_VALUATION, valuation)
    tfr = cat.latest_feature_run(KIND_DATASET, dataset, tinfo["version"], cfg.id)
    vfr = cat.latest_feature_run(KIND_VALUATION, valuation, vinfo["version"], cfg.id)
    for fr, kind, nm, asset_name in ((tfr, KIND_DATASET, dataset, "training_features"),
                                     (vfr, KIND_VALUATION, valuation, "valuation_features")):
        if fr is None:
            raise Failure(description=(
                f"no features for {KIND_LABEL[kind]} {nm!r} (its current version) with feature config {cfg.id}: "
                f"materialize {asset_name}[{nm}] first"))
    if tfr["model_id"] != vfr["model_id"]:
        raise Failure(description=(
            f"features of training dataset {dataset!r} come from model {tfr['model_id']} but those of valuation set "
            f"{valuation!r} from {vfr['model_id']}: re-materialize the older features with the current model"))
    return {"config": cfg, "train": tinfo, "val": vinfo, "train_run": tfr, "val_run": vfr,
            "fingerprint": cat.fingerprint(tfr["model_id"]), "model_id": tfr["model_id"]}


@asset(
    partitions_def=dataset_pairs,
    # Each feature asset maps to one dimension of the pair (inferred: a MultiToSingleDimensionPartitionMapping).
    deps=[training_features, valuation_features],
    group_name="valuation",
    kinds={"duckdb", "numpy"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
    code_version=CODE_VERSION,
    automation_condition=AUTOMATION,
    description="For-Value scores of every training sample against a valuation set (mean inner product of "
                "lm_head-gradient-like features; higher = more valuable), from stored features only (no model "
                "load). DuckDB table `scores`, keyed by training dataset x valuation set x feature config "
                "(x model), replaced in one transaction; history in `score_runs`.",
)
def forvalue_scores(context: AssetExecutionContext, catalog: DuckDBStoreResource,
                    feature_store: FeatureStoreResource) -> MaterializeResult:
    from forvalue.scoring import rank
    from forvalue.scoring import set_values

    t0 = time.perf_counter()
    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    try:
        inp = scoring_inputs(cat, feature_store, dataset, valuation)
        train_ids = cat.sample_ids(KIND_DATASET, dataset, inp["train"]["version"])
        val_ids = cat.sample_ids(KIND_VALUATION, valuation, inp["val"]["version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    store = feature_store.store()
    t_load = time.perf_counter()
    try:
        tf = store.load(inp["fingerprint"], inp["config"], train_ids)
        vf = store.load(inp["fingerprint"], inp["config"], val_ids)
    except KeyError as e:
        raise Failure(description=f"features missing from {store.root}: {e}; re-materialize the features") from e
    load_s = time.perf_counter() - t_load
    t_score = time.perf_counter()
    values, normalized, norms = set_values(tf, vf)
    score_s = time.perf_counter() - t_score
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise Failure(description=f"{bad} of {len(values)} scores are NaN or inf; the stored scores were left unchanged")
    ranks = rank(values)
    score_run_id = cat.replace_scores(
        dataset_name=dataset, dataset_version=inp["train"]["version"], valuation_set=valuation,
        valuation_version=inp["val"]["version"], model_id=inp["model_id"], feature_config_id=inp["config"].id,
        sample_ids=train_ids, values=values, ranks=ranks, method="sparse", normalized=normalized, norms=norms,
        train_feature_run_id=inp["train_run"]["feature_run_id"], val_feature_run_id=inp["val_run"]["feature_run_id"],
        seconds=time.perf_counter() - t0, dagster_run_id=context.run_id)
    order = np.argsort(ranks)
    shown = list(order[:5]) + list(order[-5:])
    by_id = {s.sample_id: s for s in cat.load_samples(KIND_DATASET, dataset, inp["train"]["version"],
                                                          sample_ids=[train_ids[i] for i in shown])}
    ranked = [(int(ranks[i]), float(values[i]), by_id[train_ids[i]]) for i in order if train_ids[i] in by_id]
    png = md.histogram_png(values, title=f"{dataset} vs {valuation}")
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(values)),
        "dagster/table_name": MetadataValue.text("scores"),
        "table": MetadataValue.text("scores (history: score_runs; latest per dataset: latest_scores view)"),
        "score_run_id": MetadataValue.text(score_run_id),
        "valuation_samples": MetadataValue.int(len(val_ids)),
        "score_mean": MetadataValue.float(float(values.mean())),
        "score_std": MetadataValue.float(float(values.std())),
        "score_min": MetadataValue.float(float(values.min())),
        "score_max": MetadataValue.float(float(values.max())),
        "histogram": md.md_image(png, "score histogram"),
        "top_and_bottom": md.md_top_bottom(ranked),
        "model_fingerprint": MetadataValue.json(inp["fingerprint"].to_dict()),
        "feature_config_id": MetadataValue.text(inp["config"].id),
        "dataset_version": MetadataValue.text(inp["train"]["version"]),
        "valuation_version": MetadataValue.text(inp["val"]["version"]),
        "seconds_load_features": MetadataValue.float(round(load_s, 3)),
        "seconds_score": MetadataValue.float(round(score_s, 3)),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


# ----------------------------------------------------------------------------- curation
class SubsetConfig(Config):
    """Which samples to keep. Defaults come from FORVALUE_SUBSET_MODE / FORVALUE_SUBSET_VALUE /
    FORVALUE_SUBSET_STRATEGY (automation and the nightly schedule use them); a launched run may
    override them."""

    mode: str = Field(default=env_str("FORVALUE_SUBSET_MODE", "drop_lowest_p"),
                      description="top_k (the k best), top_p (the best p%), bottom_p (the worst p%, to inspect) or "
                                  "drop_lowest_p (everything but the worst p%)")
    value: float = Field(default=float(env_str("FORVALUE_SUBSET_VALUE", "10")),
                         description="k for top_k; a percentage 0-100 otherwise")
    strategy: str = Field(default=env_str("FORVALUE_SUBSET_STRATEGY", "balanced"),
                          description="how samples are ordered: balanced (default: cosine round-robin over the "
                                      "valuation set, clean and covering), round-robin, max-cosine, cosine-mean or "
                                      "raw-mean (the raw score)")


def subset_ranking(cat, feature_store: FeatureStoreResource, run: dict, rows: list[dict], strategy: str,
                   limit: int | None = None):
    """The order of a score run's training samples (``rows``: its stored scores) by ``strategy``:
    from the stored values for raw-mean / cosine-mean, from the stored features otherwise."""
    from forvalue.selection import check_strategy, rank_features, rank_values

    try:
        check_strategy(strategy)
    except ValueError as e:
        raise Failure(description=str(e)) from e
    ids = [r["sample_id"] for r in rows]
    values = np.array([r["score"] for r in rows], dtype=np.float64)
    if strategy in ("raw-mean", "cosine-mean"):
        normalized = [r.get("normalized") for r in rows]
        if strategy == "cosine-mean" and any(v is None for v in normalized):
            raise Failure(description="these scores were stored without normalized values: re-materialize "
                                      "forvalue_scores")
        norms = [r.get("norm") for r in rows]
        return rank_values(values, None if None in normalized else np.array(normalized, dtype=np.float64),
                           None if None in norms else np.array(norms, dtype=np.float64), strategy)
    store = feature_store.store()
    fp = cat.fingerprint(run["model_id"])
    val_ids = cat.sample_ids(KIND_VALUATION, run["valuation_set"], run["valuation_version"])
    try:
        tf = store.load(fp, feature_store.config(), ids)
        vf = store.load(fp, feature_store.config(), val_ids)
    except KeyError as e:
        raise Failure(description=f"features missing from {store.root}: {e}; re-materialize the features") from e
    return rank_features(tf, vf, strategy, limit=limit)


def _fmt_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@asset(
    partitions_def=dataset_pairs,
    deps=[forvalue_scores],
    group_name="curation",
    kinds={"duckdb", "parquet", "json"},
    owners=OWNERS,
    pool=DUCKDB_POOL,
    code_version=CODE_VERSION,
    automation_condition=AUTOMATION,
    description="A curated subset of a training dataset by For-Value against a valuation set: top-k, top-p%, "
                "bottom-p% or 'drop the lowest p%' (config) of the order of a selection strategy (config; "
                "default balanced: cosine round-robin over the valuation set, computed from stored features). "
                "Exported as JSONL (the original rows, in file order: a drop-in training file) and Parquet "
                "(in the strategy's order, with scores), and recorded in DuckDB `subsets` / `subset_samples`; "
                "lineage in the `subset_lineage` view.",
)
def curated_subset(context: AssetExecutionContext, config: SubsetConfig, catalog: DuckDBStoreResource,
                   feature_store: FeatureStoreResource) -> MaterializeResult:
    from forvalue.catalog import export_subset
    from forvalue.selection import needed_prefix

    t0 = time.perf_counter()
    dataset, valuation = split_pair(context.partition_key)
    if config.mode not in SUBSET_MODES:
        raise Failure(description=f"mode must be one of {', '.join(SUBSET_MODES)}, not {config.mode!r}")
    cat = catalog.catalog()
    cfg = feature_store.config()
    try:
        tinfo = cat.require_set(KIND_DATASET, dataset)
        run = cat.latest_score_run(dataset, valuation, cfg.id)
        if run is None:
            raise Failure(description=f"no scores for {dataset} x {valuation} with feature config {cfg.id}: "
                                      f"materialize forvalue_scores first")
        if run["dataset_version"] != tinfo["version"]:
            raise Failure(description=f"the scores of {dataset} are for version {run['dataset_version'][:12]}, the "
                                      f"current version is {tinfo['version'][:12]}: re-materialize forvalue_scores")
        rows = cat.scores(dataset, valuation, cfg.id, run["model_id"])
        samples = cat.load_samples(KIND_DATASET, dataset, tinfo["version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    ids = [r["sample_id"] for r in rows]
    values = np.array([r["score"] for r in rows], dtype=np.float64)
    try:
        ranking = subset_ranking(cat, feature_store, run, rows, config.strategy,
                                 limit=needed_prefix(len(ids), config.mode, config.value))
        idx = ranking.indices(config.mode, config.value)
    except ValueError as e:
        raise Failure(description=f"subset config: {e}") from e
    ranks = ranking.rank
    members = [(ids[i], int(ranks[i]), float(values[i])) for i in idx]
    subset_id = uuid.uuid4().hex
    folder = catalog.subset_folder(dataset, valuation)
    stem = f"{config.mode}-{_fmt_value(config.value)}-{config.strategy}-{subset_id[:12]}"
    jsonl, parquet = export_subset(samples, members, folder, stem, strategy=config.strategy)
    kept = {m[0] for m in members}
    cut = None   # a cut-off on the score axis exists only when the strategy sorts by the score
    if config.strategy == "raw-mean" and members:
        cut = min(m[2] for m in members) if config.mode != "bottom_p" else max(m[2] for m in members)
    png = md.histogram_png(values, title=f"{dataset} vs {valuation}: {config.mode} {_fmt_value(config.value)} "
                                         f"({config.strategy})", cut=cut)
    png_path = folder / f"{stem}.png"
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    tmp.write_bytes(png)
    tmp.replace(png_path)
    sid = cat.record_subset(score_run=run, mode=config.mode, value=config.value, n_total=len(ids), members=members,
                            jsonl_path=jsonl.resolve(), parquet_path=parquet.resolve(), subset_id=subset_id,
                            dagster_run_id=context.run_id, strategy=config.strategy)
    # Stable names for consumers: current.jsonl / current.parquet (copied, then renamed into place).
    for src, dst in ((jsonl, folder / "current.jsonl"), (parquet, folder / "current.parquet")):
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    by_id = {s.sample_id: s for s in samples}
    ranked_kept = [(m[1], m[2], by_id[m[0]]) for m in members]
    if config.mode == "bottom_p":
        ranked_kept = ranked_kept[::-1]
    return MaterializeResult(metadata={
        "dagster/row_count": MetadataValue.int(len(members)),
        "dagster/table_name": MetadataValue.text("subsets"),
        "subset_id": MetadataValue.text(sid),
        "mode": MetadataValue.text(config.mode),
        "value": MetadataValue.float(float(config.value)),
        "strategy": MetadataValue.text(config.strategy),
        "strategy_description": MetadataValue.text(STRATEGIES.get(config.strategy, "")),
        "n_total": MetadataValue.int(len(ids)),
        "n_dropped": MetadataValue.int(len(ids) - len(kept)),
        "jsonl": MetadataValue.path(str(jsonl.resolve())),
        "parquet": MetadataValue.path(str(parquet.resolve())),
        "histogram": md.md_image(png, "scores with the subset cut-off"),
        "histogram_png": MetadataValue.path(str(png_path.resolve())),
        "top_and_bottom_kept": md.md_top_bottom(ranked_kept),
        "score_run_id": MetadataValue.text(run["score_run_id"]),
        "model_id": MetadataValue.text(run["model_id"]),
        "tables": MetadataValue.text("subsets, subset_samples (lineage: subset_lineage view)"),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


ALL_ASSETS = [training_dataset, valuation_set, training_features, valuation_features, forvalue_scores, curated_subset]
