"""Features: ``training_features`` / ``valuation_features`` (group features, pool ``model``): sparse
features as feature-store shards; only sample ids missing for this model and feature config are
computed. The one short catalog write of a feature run waits for the lock (forvalue/catalog/db.py).

The ``engine`` resource chooses where: in the run's process (``local``) or on a Ray Data actor pool
(``ray``) on the ``ray`` resource (dagster-ray: LocalRay, a cluster address or KubeRay), which then
connects; the metadata reports the workers, samples/s and retried tasks."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, CatalogError
from forvalue.data.samples import DataError
from dagster_ray import RayResource

from resources import DuckDBStoreResource, EngineResource, FeatureStoreResource, ModelResource

from ..common import (
    AUTOMATION,
    KIND_LABEL,
    MODEL_POOL,
    TRAINING_DATASET,
    VALUATION_SET,
    AssetDefaults,
    catalog_failure,
    data_failure,
)
from ..partitions import training_datasets, valuation_sets

# Every features asset: group features, pool model (one model in memory at a time), automated.
DEFAULTS = AssetDefaults(group="features", pool=MODEL_POOL, kinds=frozenset({"pytorch", "parquet"}),
                         automation_condition=AUTOMATION)


def _features(context: AssetExecutionContext, kind: str, model: ModelResource, feature_store: FeatureStoreResource,
              catalog: DuckDBStoreResource, engine: EngineResource, ray: RayResource) -> MaterializeResult:
    """The missing features of a set, computed and stored by :meth:`forvalue.Valuator.featurize` on the
    step's engine: here (the model loaded in this process) or on a Ray actor pool (the actors load it)."""
    from forvalue.valuator import Valuator

    t0 = time.perf_counter()
    name = context.partition_key
    cat = catalog.catalog()
    try:
        info = cat.require_set(kind, name)
        samples = cat.load_samples(kind, name, info["version"])
    except CatalogError as e:
        raise catalog_failure(e) from e
    cfg, store, on_ray = feature_store.config(), feature_store.store(), engine.engine == "ray"
    t_start = time.perf_counter()
    if on_ray:
        from resources.ray import connect

        connect(ray, context)
    lm = None if on_ray else model.load()
    start_s = time.perf_counter() - t_start
    valuator = Valuator(model.settings() if on_ray else lm, cfg, store, batch_size=model.batch_size,
                        engine=engine.config() if on_ray else None)
    t_ext = time.perf_counter()
    try:
        res = valuator.featurize(samples, shard_size=feature_store.shard_size, extra=_shard_extra(context, kind, info))
    except DataError as e:
        raise data_failure(e) from e
    extract_s = time.perf_counter() - t_ext
    fp = valuator.fingerprint
    common = _record_run(context, cat, kind, info, model, cfg, fp, len(samples), res, store.folder(fp, cfg), t0)
    where = f" on Ray ({res.stats.workers} workers)" if on_ray else ""
    context.log.info(f"{KIND_LABEL[kind]} {name}{where}: {res.computed} samples computed, {res.reused} reused")
    return MaterializeResult(metadata={
        **common,
        **(_ray_metadata(res, ray, start_s) if on_ray else {
            "feature_rows": MetadataValue.int(int(res.features.n_rows)),
            "seconds_model_load": MetadataValue.float(round(start_s, 3)),
            "seconds_extract": MetadataValue.float(round(extract_s, 3)),
            "engine": MetadataValue.text("local")}),
        "seconds": MetadataValue.float(round(time.perf_counter() - t0, 3)),
    })


def _ray_metadata(res, ray: RayResource, connect_s: float) -> dict:
    """What a Ray feature run reports: the cluster, the actor pool and how it went."""
    st = res.stats
    return {
        "feature_rows_written": MetadataValue.int(res.n_rows),
        "engine": MetadataValue.text("ray"),
        "ray_cluster": MetadataValue.text(ray.name),
        "workers": MetadataValue.int(st.workers),
        "worker_processes": MetadataValue.int(st.processes),
        "rows_per_s": MetadataValue.float(round(st.rows_per_s, 2)),
        "retried_tasks": MetadataValue.int(st.retried_tasks),
        "batches": MetadataValue.int(st.batches),
        "seconds_ray_connect": MetadataValue.float(round(connect_s, 3)),
        "seconds_extract": MetadataValue.float(round(st.seconds, 3)),
    }


def _shard_extra(context: AssetExecutionContext, kind: str, info: dict) -> dict:
    """What every shard of this run records besides the features (the run and the set version)."""
    return {"dagster_run_id": context.run_id, "source_set": f"{kind}/{context.partition_key}@{info['version'][:16]}"}


def _record_run(context: AssetExecutionContext, cat, kind: str, info: dict, model: ModelResource, cfg, fingerprint,
                n_samples: int, res, folder, t0: float) -> dict:
    """Record the model and the feature run in the catalog (either engine); the metadata both report."""
    model_id = cat.record_model(fingerprint, spec=model.model)
    run_id = cat.record_feature_run(kind=kind, name=context.partition_key, version=info["version"], model_id=model_id,
                                    config=cfg, n_samples=n_samples, n_computed=res.computed, n_reused=res.reused,
                                    n_shards_written=len(res.shards_written), store_folder=folder,
                                    seconds=time.perf_counter() - t0, dagster_run_id=context.run_id)
    return {
        "dagster/row_count": MetadataValue.int(n_samples),
        "computed": MetadataValue.int(res.computed),
        "reused": MetadataValue.int(res.reused),
        "shards_written": MetadataValue.int(len(res.shards_written)),
        "store_folder": MetadataValue.path(str(folder)),
        "model_fingerprint": MetadataValue.json(fingerprint.to_dict()),
        "model_id": MetadataValue.text(model_id),
        "feature_config": MetadataValue.json(cfg.to_dict()),
        "feature_config_id": MetadataValue.text(cfg.id),
        "dataset_version": MetadataValue.text(info["version"]),
        "feature_run_id": MetadataValue.text(run_id),
        "tables": MetadataValue.text("models, feature_runs"),
    }


@DEFAULTS.asset(
    partitions_def=training_datasets,
    deps=[TRAINING_DATASET],
    description="Sparse For-Value features (lm_head gradient rows on targets + top-k tokens, hidden side "
                "projected) of a training dataset, as feature-store shards keyed by model fingerprint and feature "
                "config. Only sample ids missing for this model and config are computed.",
)
def training_features(context: AssetExecutionContext, model: ModelResource, feature_store: FeatureStoreResource,
                      catalog: DuckDBStoreResource, engine: EngineResource, ray: RayResource) -> MaterializeResult:
    return _features(context, KIND_DATASET, model, feature_store, catalog, engine, ray)


@DEFAULTS.asset(
    partitions_def=valuation_sets,
    deps=[VALUATION_SET],
    description="Sparse For-Value features of a valuation set (same store and keys as training_features); "
                "only missing sample ids are computed.",
)
def valuation_features(context: AssetExecutionContext, model: ModelResource, feature_store: FeatureStoreResource,
                       catalog: DuckDBStoreResource, engine: EngineResource, ray: RayResource) -> MaterializeResult:
    return _features(context, KIND_VALUATION, model, feature_store, catalog, engine, ray)
