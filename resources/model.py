"""ModelResource: the model that computes For-Value features."""

from __future__ import annotations

import threading

from dagster import ConfigurableResource
from pydantic import Field

from ._env import env_int, env_str

_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()


class ModelResource(ConfigurableResource):
    """A model spec for ``forvalue.models.load_model``; loaded once per process, on first use."""

    model: str = Field(default="default", description="'default' (SmolLM2-135M-Instruct), a model folder, a .gguf file or a Hugging Face id. Env: FORVALUE_MODEL")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, mps. Env: FORVALUE_DEVICE")
    dtype: str = Field(default="auto", description="auto, float32, bfloat16, float16. Env: FORVALUE_DTYPE")
    batch_size: int = Field(default=8, description="samples per forward pass. Env: FORVALUE_BATCH_SIZE")

    @classmethod
    def from_env(cls) -> "ModelResource":
        return cls(model=env_str("FORVALUE_MODEL", "default"), device=env_str("FORVALUE_DEVICE", "auto"),
                   dtype=env_str("FORVALUE_DTYPE", "auto"), batch_size=env_int("FORVALUE_BATCH_SIZE", 8))

    def load(self):
        """The ``forvalue.models.LoadedModel`` (imports torch and transformers here, not at import)."""
        from forvalue.models import load_model

        key = (self.model, self.device, self.dtype)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = load_model(self.model, device=self.device, dtype=self.dtype)
            return _CACHE[key]
