"""Registration jobs: register a file, then compute its missing features (and run their checks)."""

from dagster import AssetSelection, define_asset_job

from ..common import TRAINING_DATASET, TRAINING_FEATURES, VALUATION_FEATURES, VALUATION_SET
from ..partitions import training_datasets, valuation_sets

register_training_job = define_asset_job(
    "register_training_dataset",
    selection=AssetSelection.assets(TRAINING_DATASET, TRAINING_FEATURES),
    partitions_def=training_datasets,
    description="Validate and register a training dataset file, then compute its missing features.",
)

register_valuation_job = define_asset_job(
    "register_valuation_set",
    selection=AssetSelection.assets(VALUATION_SET, VALUATION_FEATURES),
    partitions_def=valuation_sets,
    description="Validate and register a valuation set file, then compute its missing features.",
)
