"""Every error ForValue raises on purpose, in one place.

All derive from :class:`ForValueError`: the command line prints such an error as one line and exits
with its ``exit_code`` (2: the input, a model, an option or a stored artefact cannot be used). Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class ForValueError(Exception):
    """A request that cannot be carried out, with a message that says why."""

    exit_code = 2


class ConfigError(ForValueError, ValueError):
    """An option or configuration value that is out of range or unknown."""


class DataError(ForValueError, ValueError):
    """Bad input: names the file, the row and the field."""

    def __init__(self, file: str, row: int | None, field: str | None, reason: str):
        self.file, self.row, self.field, self.reason = str(file), row, field, reason
        where = self.file
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {reason}")


class ModelError(ForValueError, ValueError):
    """A model spec that cannot be loaded."""


class FinetuneError(ForValueError, ValueError):
    """A fine-tune or eval request that cannot run (bad config, missing adapter, ...)."""


class TrackingError(ForValueError, ValueError):
    """MLflow tracking that cannot work as configured."""


class StoreError(ForValueError, RuntimeError):
    """Stored features that cannot be used as they are (a damaged shard moved aside, a lock not
    obtained in time); the message says what was done and how to recover."""


class DamagedShardWarning(RuntimeWarning):
    """A damaged feature-store shard was moved aside (its samples are computed again). The command line
    reports it through the store's ``damaged`` list instead (one line per shard)."""


class CatalogError(ForValueError, RuntimeError):
    """A catalog operation that cannot proceed (missing registration, locked file, bad name)."""


__all__ = ["ForValueError", "ConfigError", "DataError", "ModelError", "FinetuneError", "TrackingError",
           "StoreError", "CatalogError"]
