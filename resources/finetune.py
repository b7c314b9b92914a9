"""FinetuneResource: defaults of the fine-tune assets that a run's config may override."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from ._env import read_env


class FinetuneResource(ConfigurableResource):
    """Fine-tuning defaults (the run config's ``steps``, when left empty, comes from here)."""

    steps: int = Field(default=30, ge=1, description="optimizer steps of finetune_run and finetune_comparison. "
                                               "Env: FORVALUE_FT_STEPS")

    @classmethod
    def from_env(cls) -> "FinetuneResource":
        return read_env(cls, {"steps": "FORVALUE_FT_STEPS"})
