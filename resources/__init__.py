"""Dagster ConfigurableResources for the ForValue platform.

- ``ModelResource``: which model computes features (``default``, a folder, a .gguf file or a hub id);
- ``DuckDBStoreResource``: the DuckDB catalog (``forvalue.catalog.Catalog``) and the subset exports;
- ``FeatureStoreResource``: the Parquet feature store (``forvalue.store.FeatureStore``) and the
  feature config that keys it.

Each has ``from_env()``: environment variables over the embedded defaults (see docs/platform.md).
An MLflow resource for fine-tuning runs will sit next to these (``resources/mlflow.py``).
These modules import neither torch nor transformers at import time.
"""

from .features import FeatureStoreResource
from .model import ModelResource
from .store import DuckDBStoreResource

__all__ = ["DuckDBStoreResource", "FeatureStoreResource", "ModelResource"]
