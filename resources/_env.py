"""Environment variables with embedded defaults.

:func:`read_env` is the one reader of a resource's variables (each resource names its variables once,
next to its fields). Read only when the Definitions are built (``forvalue_assets.definitions.build_definitions``, the
explicit configuration step) and, for the incoming-folder settings, when a sensor ticks; never at
import. ``env_var_or`` hands Dagster an ``EnvVar`` (resolved in the run's process, shown as an
environment variable in the UI) when the variable is set, else the default.
"""

from __future__ import annotations

import os
import typing

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


def _readers():
    return {bool: env_bool, int: env_int, float: env_float, str: env_str}


def read_env(cls, env: dict[str, str], *, run_time: typing.Iterable[str] = (), none_as: dict | None = None,
             **fixed):
    """``cls(...)`` (a Dagster Config or ConfigurableResource) with each field named in ``env`` read
    from its variable, parsed by the field's type (whole number, number, boolean, text) and defaulting
    to the field's declared default; the one reader behind every resource's ``from_env``. Fields in
    ``run_time`` become an ``EnvVar`` when their variable is set (resolved in the run's process);
    ``none_as`` maps a field to the value that means None (``FORVALUE_MAX_ROWS=0``: no cap);
    ``fixed`` sets fields whatever the environment says. A value that does not parse stops with the
    variable's name."""
    values = {}
    none_as = none_as or {}
    for name, var in env.items():
        if name in fixed:
            continue
        field = cls.model_fields[name]
        if name in run_time:
            values[name] = env_var_or(var, field.default)
            continue
        tp = field.annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        reader = _readers()[args[0] if args else tp]
        value = reader(var, field.default) if os.environ.get(var, "").strip() else field.default
        values[name] = None if name in none_as and value == none_as[name] else value
    return cls(**values, **fixed)
