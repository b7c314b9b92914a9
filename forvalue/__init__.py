"""ForValue: forward-only data valuation (For-Value, arXiv 2508.10180) for LLMs and VLMs.

The front door is :class:`Valuator` (featurize, score, select, explain); its configurations are
:class:`FeatureConfig` and :class:`ModelConfig`; every deliberate error is a :class:`ForValueError`.
The library never imports Dagster; heavy imports (torch, transformers) happen inside functions.
"""

from ._version import __version__
from .data.samples import Columns, Sample, load_samples
from .errors import ConfigError, DataError, ForValueError, ModelError
from .valuation.features import FeatureConfig, SparseFeatures
from .models.loading import ModelConfig
from .curation.selection import DEFAULT_STRATEGY, STRATEGIES, Ranking
from .store.feature_store import FeatureStore
from .valuator import Selection, Valuator

__all__ = ["Valuator", "Selection", "FeatureConfig", "ModelConfig", "Columns", "Sample", "load_samples",
           "FeatureStore", "SparseFeatures", "Ranking", "STRATEGIES", "DEFAULT_STRATEGY", "ForValueError",
           "ConfigError", "DataError", "ModelError", "__version__"]
