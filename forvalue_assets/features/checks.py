"""Feature checks, partitioned like their asset and blocking (see common.py): every sample of the
current version of a dataset or valuation set has stored features. They read the catalog
read-only."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from forvalue.catalog.db import KIND_DATASET, KIND_VALUATION, CatalogError
from resources import DuckDBStoreResource, FeatureStoreResource

from ..common import KIND_LABEL, check_failure
from ..partitions import training_datasets, valuation_sets
from .assets import training_features, valuation_features


def _features_cover(context, kind: str, catalog: DuckDBStoreResource,
                    feature_store: FeatureStoreResource) -> AssetCheckResult:
    name = context.partition_key
    cat = catalog.catalog()
    cfg = feature_store.config()
    try:
        info = cat.require_set(kind, name)
    except CatalogError as e:
        return check_failure(str(e))
    run = cat.latest_feature_run(kind, name, info["version"], cfg.id)
    if run is None:
        return check_failure(f"no feature run for {KIND_LABEL[kind]} {name!r} version {info['version'][:12]} "
                             f"and feature config {cfg.id}")
    fp = cat.fingerprint(run["model_id"])
    ids = set(cat.sample_ids(kind, name, info["version"]))
    have = feature_store.store().existing_ids(fp, cfg)
    missing = sorted(ids - have)
    return AssetCheckResult(
        passed=not missing,
        severity=AssetCheckSeverity.ERROR,
        description=(f"every one of the {len(ids)} samples has stored features" if not missing else
                     f"{len(missing)} of {len(ids)} samples have no stored features"),
        metadata={"samples": MetadataValue.int(len(ids)), "missing": MetadataValue.int(len(missing)),
                  "missing_examples": MetadataValue.text(", ".join(m[:12] for m in missing[:5]) or "-"),
                  "model_id": MetadataValue.text(run["model_id"]),
                  "feature_config_id": MetadataValue.text(cfg.id)},
    )


@asset_check(asset=training_features, partitions_def=training_datasets, blocking=True,
             description="Every sample of the current dataset version has features in the store "
                         "(for the model of its latest feature run and the configured feature config).")
def training_features_cover_samples(context: AssetCheckExecutionContext, catalog: DuckDBStoreResource,
                                    feature_store: FeatureStoreResource) -> AssetCheckResult:
    return _features_cover(context, KIND_DATASET, catalog, feature_store)


@asset_check(asset=valuation_features, partitions_def=valuation_sets, blocking=True,
             description="Every sample of the current valuation set version has features in the store.")
def valuation_features_cover_samples(context: AssetCheckExecutionContext, catalog: DuckDBStoreResource,
                                     feature_store: FeatureStoreResource) -> AssetCheckResult:
    return _features_cover(context, KIND_VALUATION, catalog, feature_store)
