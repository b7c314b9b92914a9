"""FeatureStoreResource: the Parquet feature store and the feature config that keys it."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ._env import env_bool, env_float, env_int, env_str
from ._fields import config_class, dataclass_fields

# the feature config's fields (forvalue.valuation.features.FeatureConfig) and the variable that sets each
FEATURE_ENV = {"positions": "FORVALUE_POSITIONS", "k": "FORVALUE_TOPK", "r": "FORVALUE_RANK",
               "seed": "FORVALUE_SEED", "chat_template": "FORVALUE_CHAT_TEMPLATE", "max_length": "FORVALUE_MAX_LENGTH",
               "store_dtype": "FORVALUE_STORE_DTYPE", "energy": "FORVALUE_ENERGY", "max_rows": "FORVALUE_MAX_ROWS",
               "checks": "FORVALUE_CHECKS"}


def _DEFAULT():
    from forvalue.valuation.features import FeatureConfig

    return FeatureConfig()


class _FeatureStore(ConfigurableResource):
    root: str = Field(default=".forvalue/features", description="feature shard folder. Env: FORVALUE_FEATURES")
    shard_size: int = Field(default=512, description="samples per shard")

    @classmethod
    def from_env(cls):
        default = _DEFAULT()
        return cls(root=env_str("FORVALUE_FEATURES", ".forvalue/features"),
                   positions=env_str("FORVALUE_POSITIONS", "response"), k=env_int("FORVALUE_TOPK", 8),
                   r=env_int("FORVALUE_RANK", default.r), seed=env_int("FORVALUE_SEED", 0),
                   chat_template=env_bool("FORVALUE_CHAT_TEMPLATE", True),
                   max_length=env_int("FORVALUE_MAX_LENGTH", None),
                   store_dtype=env_str("FORVALUE_STORE_DTYPE", default.store_dtype),
                   energy=env_float("FORVALUE_ENERGY", default.energy),
                   max_rows=env_int("FORVALUE_MAX_ROWS", default.max_rows) or None,
                   checks=env_bool("FORVALUE_CHECKS", default.checks))

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
