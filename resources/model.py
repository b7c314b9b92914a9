"""ModelResource: the model that computes For-Value features (fields: forvalue.models.loading.ModelConfig)."""

from __future__ import annotations

import threading

from dagster import ConfigurableResource

from ._env import read_env
from ._fields import config_class, dataclass_fields

_CACHE: dict[tuple, object] = {}
_LOCK = threading.Lock()
MODEL_ENV = {"model": "FORVALUE_MODEL", "device": "FORVALUE_DEVICE", "dtype": "FORVALUE_DTYPE",
             "batch_size": "FORVALUE_BATCH_SIZE", "trust_remote_code": "FORVALUE_TRUST_REMOTE_CODE"}


class _Model(ConfigurableResource):
    @classmethod
    def from_env(cls):
        return read_env(cls, MODEL_ENV)

    def settings(self):
        """The library's ``ModelConfig`` of these fields."""
        from forvalue.models.loading import ModelConfig

        return ModelConfig(**{name: getattr(self, name) for name in MODEL_ENV})

    def load(self):
        """The ``forvalue.models.loading.LoadedModel``, loaded once per process (torch and transformers are
        imported here, not at import)."""
        cfg = self.settings()
        key = (cfg.model, cfg.device, cfg.dtype, cfg.trust_remote_code)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = cfg.load()
            return _CACHE[key]


def _model_fields():
    from forvalue.models.loading import ModelConfig

    return dataclass_fields(ModelConfig, env=MODEL_ENV)


ModelResource = config_class(
    "ModelResource", _Model,
    "A model spec for ``forvalue.models.loading.load_model`` (fields: forvalue.models.loading.ModelConfig); loaded once per "
    "process, on first use.", _model_fields())
