"""Domain ``curation``: For-Value scores of a (training dataset, valuation set) pair, the curated
subset, their checks and the ``curation`` job (automation and the nightly schedule keep them
current)."""

from .assets import DEFAULTS, SubsetConfig, curated_subset, forvalue_scores
from .checks import scores_are_finite, scores_one_row_per_sample, subset_size_matches_config
from .jobs import curation_job

ASSETS = [forvalue_scores, curated_subset]
CHECKS = [scores_one_row_per_sample, scores_are_finite, subset_size_matches_config]
JOBS = [curation_job]

__all__ = ["ASSETS", "CHECKS", "DEFAULTS", "JOBS", "SubsetConfig", "curated_subset", "curation_job", "forvalue_scores",
           "scores_are_finite", "scores_one_row_per_sample", "subset_size_matches_config"]
