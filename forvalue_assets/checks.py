"""Asset checks. All are partitioned like their asset and blocking: a failure (severity ERROR)
stops downstream assets in the same run, and the automation condition of downstream assets waits
for them (AutomationCondition.all_deps_blocking_checks_passed). They read the catalog read-only."""


import warnings

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from forvalue.catalog import KIND_DATASET, KIND_VALUATION, CatalogError, expected_subset_size
from resources import DuckDBStoreResource, FeatureStoreResource

from .assets import KIND_LABEL, curated_subset, forvalue_scores, training_features, valuation_features
from .partitions import dataset_pairs, split_pair, training_datasets, valuation_sets

# Partitioned asset checks are a preview feature in Dagster 1.13; they are what makes a check's
# result belong to one dataset (partition) rather than to the whole asset, so we use them and
# silence only that one notice.
warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec")


def _fail(description: str, **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=description,
                            metadata=metadata)


def _features_cover(context, kind: str, catalog: DuckDBStoreResource,
                    feature_store: FeatureStoreResource) -> AssetCheckResult:
    name = context.partition_key
    cat = catalog.catalog()
    cfg = feature_store.config()
    try:
        info = cat.require_set(kind, name)
    except CatalogError as e:
        return _fail(str(e))
    run = cat.latest_feature_run(kind, name, info["version"], cfg.id)
    if run is None:
        return _fail(f"no feature run for {KIND_LABEL[kind]} {name!r} version {info['version'][:12]} "
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


def _score_state(context, catalog: DuckDBStoreResource, feature_store: FeatureStoreResource):
    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    cfg = feature_store.config()
    info = cat.require_set(KIND_DATASET, dataset)
    run = cat.latest_score_run(dataset, valuation, cfg.id)
    if run is None:
        return None, f"no scores for {dataset} x {valuation} with feature config {cfg.id}"
    problems = cat.score_problems(dataset_name=dataset, dataset_version=info["version"], valuation_set=valuation,
                                  feature_config_id=cfg.id, model_id=run["model_id"])
    return problems, None


@asset_check(asset=forvalue_scores, partitions_def=dataset_pairs, blocking=True,
             description="Exactly one score row per training sample of the current dataset version "
                         "(none missing, none extra, none from an older version).")
def scores_one_row_per_sample(context: AssetCheckExecutionContext, catalog: DuckDBStoreResource,
                              feature_store: FeatureStoreResource) -> AssetCheckResult:
    try:
        p, err = _score_state(context, catalog, feature_store)
    except CatalogError as e:
        return _fail(str(e))
    if err:
        return _fail(err)
    ok = p["n_missing"] == 0 and p["n_extra"] == 0 and p["n_stale"] == 0 and p["n_scores"] == p["n_samples"]
    return AssetCheckResult(
        passed=ok, severity=AssetCheckSeverity.ERROR,
        description=(f"{p['n_scores']} scores for {p['n_samples']} samples" +
                     ("" if ok else f": {p['n_missing']} missing, {p['n_extra']} extra, {p['n_stale']} stale")),
        metadata={k: MetadataValue.int(int(v)) for k, v in p.items()},
    )


@asset_check(asset=forvalue_scores, partitions_def=dataset_pairs, blocking=True,
             description="No stored score is NaN or infinite.")
def scores_are_finite(context: AssetCheckExecutionContext, catalog: DuckDBStoreResource,
                      feature_store: FeatureStoreResource) -> AssetCheckResult:
    try:
        p, err = _score_state(context, catalog, feature_store)
    except CatalogError as e:
        return _fail(str(e))
    if err:
        return _fail(err)
    bad = int(p["n_non_finite"])
    return AssetCheckResult(passed=bad == 0, severity=AssetCheckSeverity.ERROR,
                            description=f"{bad} of {p['n_scores']} scores are NaN or inf",
                            metadata={"non_finite": MetadataValue.int(bad), "scores": MetadataValue.int(int(p["n_scores"]))})


@asset_check(asset=curated_subset, partitions_def=dataset_pairs, blocking=True,
             description="The latest subset has the size its config implies (top_k: min(k, n); top_p / bottom_p: "
                         "round(n p / 100); drop_lowest_p: n - round(n p / 100)), in DuckDB and in both exported files.")
def subset_size_matches_config(context: AssetCheckExecutionContext, catalog: DuckDBStoreResource,
                               feature_store: FeatureStoreResource) -> AssetCheckResult:
    import pyarrow.parquet as pq

    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    sub = cat.latest_subset(dataset, valuation)
    if sub is None:
        return _fail(f"no subset recorded for {dataset} x {valuation}")
    expected = expected_subset_size(sub["mode"], sub["value"], sub["n_total"])
    members = cat.fetch_one("subset_sample_count", subset_id=sub["subset_id"])["n"]
    try:
        with open(sub["jsonl_path"], "rb") as f:
            jsonl_rows = sum(1 for line in f if line.strip())
        parquet_rows = pq.read_metadata(sub["parquet_path"]).num_rows
    except OSError as e:
        return _fail(f"exported file unreadable: {e}")
    sizes = {"expected": expected, "recorded": sub["n_selected"], "subset_samples": members,
             "jsonl_rows": jsonl_rows, "parquet_rows": parquet_rows}
    ok = len(set(sizes.values())) == 1
    return AssetCheckResult(
        passed=ok, severity=AssetCheckSeverity.ERROR,
        description=f"{sub['mode']} {sub['value']:g} of {sub['n_total']}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
        metadata={**{k: MetadataValue.int(int(v)) for k, v in sizes.items()},
                  "mode": MetadataValue.text(sub["mode"]), "value": MetadataValue.float(float(sub["value"]))},
    )


ALL_CHECKS = [training_features_cover_samples, valuation_features_cover_samples, scores_one_row_per_sample,
              scores_are_finite, subset_size_matches_config]
