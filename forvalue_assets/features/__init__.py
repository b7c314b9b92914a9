"""Domain ``features``: sparse For-Value features of training datasets and valuation sets (pool
``model``, automated) and their coverage checks. The registration jobs of domain ``ingest``
include them; there is no job of its own."""

from .assets import DEFAULTS, training_features, valuation_features
from .checks import training_features_cover_samples, valuation_features_cover_samples

ASSETS = [training_features, valuation_features]
CHECKS = [training_features_cover_samples, valuation_features_cover_samples]
JOBS: list = []

__all__ = ["ASSETS", "CHECKS", "DEFAULTS", "JOBS", "training_features", "training_features_cover_samples",
           "valuation_features", "valuation_features_cover_samples"]
