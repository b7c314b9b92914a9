"""Jobs: registration (+ features) per name, curation (scores + subset) per pair.
Each job includes the asset checks of its assets."""

from dagster import AssetSelection, define_asset_job

from .assets import curated_subset, forvalue_scores, training_dataset, training_features, valuation_features, valuation_set
from .partitions import dataset_pairs, training_datasets, valuation_sets

register_training_job = define_asset_job(
    "register_training_dataset",
    selection=AssetSelection.assets(training_dataset, training_features),
    partitions_def=training_datasets,
    description="Validate and register a training dataset file, then compute its missing features.",
)

register_valuation_job = define_asset_job(
    "register_valuation_set",
    selection=AssetSelection.assets(valuation_set, valuation_features),
    partitions_def=valuation_sets,
    description="Validate and register a valuation set file, then compute its missing features.",
)

curation_job = define_asset_job(
    "curation",
    selection=AssetSelection.assets(forvalue_scores, curated_subset),
    partitions_def=dataset_pairs,
    description="Score a training dataset against a valuation set (from stored features) and curate a subset.",
)

ALL_JOBS = [register_training_job, register_valuation_job, curation_job]
