"""The curation job: scores + subset (+ their checks) for one (dataset, valuation set) pair."""

from dagster import AssetSelection, define_asset_job

from ..common import CURATED_SUBSET, FORVALUE_SCORES
from ..partitions import dataset_pairs

curation_job = define_asset_job(
    "curation",
    selection=AssetSelection.assets(FORVALUE_SCORES, CURATED_SUBSET),
    partitions_def=dataset_pairs,
    description="Score a training dataset against a valuation set (from stored features) and curate a subset.",
)
