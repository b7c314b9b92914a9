"""The Definitions of the ForValue code location (workspace.yaml loads this module).

Resources are built from environment variables over embedded defaults (see docs/platform.md):
FORVALUE_MODEL, FORVALUE_DEVICE, FORVALUE_DTYPE, FORVALUE_BATCH_SIZE (model); FORVALUE_DB,
FORVALUE_SUBSETS (DuckDB catalog, subset exports); FORVALUE_FEATURES and the feature config
(FORVALUE_POSITIONS, FORVALUE_TOPK, FORVALUE_RANK, FORVALUE_SEED) for the feature store.
"""

from __future__ import annotations

from typing import Mapping

from dagster import Definitions

from resources import DuckDBStoreResource, FeatureStoreResource, ModelResource
from resources.mlflow import MLflowResource
from sensors import ALL_SCHEDULES, ALL_SENSORS

from .assets import ALL_ASSETS
from .checks import ALL_CHECKS
from .finetune_assets import FINETUNE_ASSETS, FINETUNE_JOBS
from .jobs import ALL_JOBS


def default_resources() -> dict:
    return {
        "model": ModelResource.from_env(),
        "catalog": DuckDBStoreResource.from_env(),
        "feature_store": FeatureStoreResource.from_env(),
        "mlflow": MLflowResource.from_env(),
    }


def build_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """The platform's Definitions; ``resources`` replaces the environment-built ones (tests)."""
    return Definitions(
        assets=ALL_ASSETS + FINETUNE_ASSETS,
        asset_checks=ALL_CHECKS,
        jobs=ALL_JOBS + FINETUNE_JOBS,
        sensors=ALL_SENSORS,
        schedules=ALL_SCHEDULES,
        resources={**default_resources(), **(resources or {})},
    )


defs = build_definitions()
