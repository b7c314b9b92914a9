"""FeatureStoreResource: the Parquet feature store and the feature config that keys it."""

from __future__ import annotations

from dataclasses import MISSING

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env
from ._fields import config_class, dataclass_fields

# the feature config's fields (forvalue.valuation.features.FeatureConfig) and the variable that sets each
FEATURE_ENV = {"positions": "FORVALUE_POSITIONS", "k": "FORVALUE_TOPK", "r": "FORVALUE_RANK",
               "seed": "FORVALUE_SEED", "chat_template": "FORVALUE_CHAT_TEMPLATE", "max_length": "FORVALUE_MAX_LENGTH",
               "store_dtype": "FORVALUE_STORE_DTYPE", "energy": "FORVALUE_ENERGY", "max_rows": "FORVALUE_MAX_ROWS",
               "checks": "FORVALUE_CHECKS"}


class _FeatureStore(ConfigurableResource):
    root: str = Field(default=".forvalue/features", description="feature shard folder. Env: FORVALUE_FEATURES")
    shard_size: int = Field(default=512, description="samples per shard")

    @classmethod
    def from_env(cls):
        """The store folder and the feature config from the environment (FORVALUE_RANK=0 and
        FORVALUE_MAX_ROWS=0 mean None, as ``--r 0`` / ``--max-rows 0`` on the command line)."""
        from forvalue.config import field_specs
        from forvalue.valuation.features import FeatureConfig

        none_as = {s.name: s.none_as for s in field_specs(FeatureConfig) if s.name in FEATURE_ENV and s.none_as != MISSING}
        return read_env(cls, {"root": "FORVALUE_FEATURES", **FEATURE_ENV}, none_as=none_as)

    def config(self):
        """The library's ``FeatureConfig`` of these fields."""
        from forvalue.valuation.features import FeatureConfig

        return FeatureConfig(**{name: getattr(self, name) for name in FEATURE_ENV})

    def store(self):
        from forvalue.store.feature_store import FeatureStore

        return FeatureStore(self.root)


def _feature_fields():
    from forvalue.valuation.features import FeatureConfig

    return dataclass_fields(FeatureConfig, env=FEATURE_ENV)


FeatureStoreResource = config_class(
    "FeatureStoreResource", _FeatureStore,
    "Wraps ``forvalue.store.feature_store.FeatureStore``; features are keyed by model fingerprint + the feature config, "
    "whose fields are forvalue.valuation.features.FeatureConfig's.", _feature_fields())
