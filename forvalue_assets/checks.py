"""Compatibility names: the asset checks now live in their domains (``features``, ``curation``)."""

from .curation import scores_are_finite, scores_one_row_per_sample, subset_size_matches_config
from .features import training_features_cover_samples, valuation_features_cover_samples

ALL_CHECKS = [training_features_cover_samples, valuation_features_cover_samples, scores_one_row_per_sample,
              scores_are_finite, subset_size_matches_config]

__all__ = ["ALL_CHECKS", "scores_are_finite", "scores_one_row_per_sample", "subset_size_matches_config",
           "training_features_cover_samples", "valuation_features_cover_samples"]
