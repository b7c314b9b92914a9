"""Compatibility names: the platform's assets now live in their domains (``ingest``,
``features``, ``curation``); ``forvalue_assets.definitions`` merges the domains. New code imports
from the domain packages."""

from .curation import SubsetConfig, curated_subset, forvalue_scores
from .features import training_features, valuation_features
from .ingest import RegisterConfig, training_dataset, valuation_set

ALL_ASSETS = [training_dataset, valuation_set, training_features, valuation_features, forvalue_scores, curated_subset]

__all__ = ["ALL_ASSETS", "RegisterConfig", "SubsetConfig", "curated_subset", "forvalue_scores", "training_dataset",
           "training_features", "valuation_features", "valuation_set"]
