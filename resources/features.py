"""FeatureStoreResource: the Parquet feature store and the feature config that keys it."""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource
from pydantic import Field

from ._env import env_bool, env_int, env_str


class FeatureStoreResource(ConfigurableResource):
    """Wraps ``forvalue.store.FeatureStore``; features are keyed by model fingerprint + this config."""

    root: str = Field(default=".forvalue/features", description="feature shard folder. Env: FORVALUE_FEATURES")
    positions: str = Field(default="response", description="scored positions: response (SFT loss tokens) or all. Env: FORVALUE_POSITIONS")
    k: int = Field(default=8, description="top-k predicted tokens per position. Env: FORVALUE_TOPK")
    r: Optional[int] = Field(default=64, description="projection width of the hidden side (None keeps d). Env: FORVALUE_RANK")
    seed: int = Field(default=0, description="projection seed. Env: FORVALUE_SEED")
    chat_template: bool = Field(default=True, description="render prompts with the tokenizer's chat template. Env: FORVALUE_CHAT_TEMPLATE")
    max_length: Optional[int] = Field(default=None, description="token limit per sample (None: the model context). Env: FORVALUE_MAX_LENGTH")
    shard_size: int = Field(default=512, description="samples per Parquet shard")

    @classmethod
    def from_env(cls) -> "FeatureStoreResource":
        return cls(root=env_str("FORVALUE_FEATURES", ".forvalue/features"),
                   positions=env_str("FORVALUE_POSITIONS", "response"), k=env_int("FORVALUE_TOPK", 8),
                   r=env_int("FORVALUE_RANK", 64), seed=env_int("FORVALUE_SEED", 0),
                   chat_template=env_bool("FORVALUE_CHAT_TEMPLATE", True),
                   max_length=env_int("FORVALUE_MAX_LENGTH", None))

    def config(self):
        from forvalue.features import FeatureConfig

        return FeatureConfig(positions=self.positions, k=self.k, r=self.r, seed=self.seed,
                             chat_template=self.chat_template, max_length=self.max_length)

    def store(self):
        from forvalue.store import FeatureStore

        return FeatureStore(self.root)
