"""Dagster ConfigurableResources for the ForValue platform.

- ``ModelResource``: which model computes features (``default``, a folder, a .gguf file or a hub id);
- ``DuckDBStoreResource``: the DuckDB catalog (``forvalue.catalog.db.Catalog``) and the subset exports;
- ``FeatureStoreResource``: the Parquet feature store (``forvalue.store.feature_store.FeatureStore``) and the
  feature config that keys it;
- ``CurationResource``: the default subset (mode, value, strategy) of ``curated_subset``;
- ``FinetuneResource``: fine-tuning defaults (steps); ``MLflowResource`` (``resources/mlflow.py``):
  where fine-tune and eval runs are tracked;
- ``EngineResource``: where features are computed (local or ray); the ``ray`` resource is a dagster-ray
  ``RayResource`` (``resources/ray.py``: LocalRay, a cluster address, or KubeRay in production).

Each has ``from_env()``: environment variables over the embedded defaults (see docs/platform.md),
called by ``forvalue_assets.definitions.build_definitions``; nothing reads the environment at
import. These modules import neither torch nor transformers at import time.
"""

from .curation import CurationResource
from .features import FeatureStoreResource
from .finetune import FinetuneResource
from .model import ModelResource
from .ray import EngineResource, ray_resource_from_env
from .store import DuckDBStoreResource

__all__ = ["CurationResource", "DuckDBStoreResource", "EngineResource", "FeatureStoreResource", "FinetuneResource",
           "ModelResource", "ray_resource_from_env"]
