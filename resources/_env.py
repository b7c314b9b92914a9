"""Environment variables with embedded defaults.

Read only when the Definitions are built (``forvalue_assets.definitions.build_definitions``, the
explicit configuration step) and, for the incoming-folder settings, when a sensor ticks; never at
import. ``env_var_or`` hands Dagster an ``EnvVar`` (resolved in the run's process, shown as an
environment variable in the UI) when the variable is set, else the default.
"""

from __future__ import annotations

import os

from dagster import EnvVar


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_var_or(name: str, default: str) -> str:
    """``EnvVar(name)`` when the variable is set and not empty, else ``default``."""
    return EnvVar(name) if os.environ.get(name, "").strip() else default


def env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value.lower() in ("none", "null"):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a whole number") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a number") from None


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean (use 1/0, true/false)")
