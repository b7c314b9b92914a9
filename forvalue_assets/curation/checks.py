"""Score and subset checks, partitioned by (dataset, valuation set) pair and blocking (see
common.py): a failure stops downstream assets in the same run, and the automation condition of
downstream assets waits for them. They read the catalog read-only."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from forvalue.catalog.db import KIND_DATASET, CatalogError
from resources import DuckDBStoreResource, FeatureStoreResource

from ..common import check_failure
from ..partitions import dataset_pairs, split_pair
from .assets import curated_subset, forvalue_scores


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
        return check_failure(str(e))
    if err:
        return check_failure(err)
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
        return check_failure(str(e))
    if err:
        return check_failure(err)
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

    from forvalue.curation.selection import subset_count

    dataset, valuation = split_pair(context.partition_key)
    cat = catalog.catalog()
    sub = cat.latest_subset(dataset, valuation)
    if sub is None:
        return check_failure(f"no subset recorded for {dataset} x {valuation}")
    expected = subset_count(sub["n_total"], sub["mode"], sub["value"])
    members = cat.fetch_one("subset_sample_count", subset_id=sub["subset_id"])["n"]
    try:
        with open(sub["jsonl_path"], "rb") as f:
            jsonl_rows = sum(1 for line in f if line.strip())
        parquet_rows = pq.read_metadata(sub["parquet_path"]).num_rows
    except OSError as e:
        return check_failure(f"exported file unreadable: {e}")
    sizes = {"expected": expected, "recorded": sub["n_selected"], "subset_samples": members,
             "jsonl_rows": jsonl_rows, "parquet_rows": parquet_rows}
    ok = len(set(sizes.values())) == 1
    return AssetCheckResult(
        passed=ok, severity=AssetCheckSeverity.ERROR,
        description=f"{sub['mode']} {sub['value']:g} of {sub['n_total']}: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
        metadata={**{k: MetadataValue.int(int(v)) for k, v in sizes.items()},
                  "mode": MetadataValue.text(sub["mode"]), "value": MetadataValue.float(float(sub["value"]))},
    )
