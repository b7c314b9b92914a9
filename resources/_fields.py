"""Dagster config fields built from the library's configuration dataclasses.

Each library config (``forvalue.valuation.features.FeatureConfig``, ``forvalue.models.loading.ModelConfig``,
``forvalue.data.samples.Columns``, ``forvalue.training.finetune.TrainConfig``, ``forvalue.training.evaluate.EvalConfig``)
declares its fields once, with their defaults and help text (``forvalue.config.opt``). The resources
and run configs of the platform take those fields from there: :func:`config_class` makes a Dagster
``Config`` / ``ConfigurableResource`` class whose fields are the dataclass's (same names, types,
defaults, descriptions), plus the platform's own.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from pydantic import Field, create_model


def dataclass_fields(cls, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                     env: dict[str, str] | None = None, empty: str | None = None) -> dict[str, tuple[Any, Any]]:
    """pydantic field definitions ``name -> (type, Field(default, description))`` of the documented
    fields of a config dataclass; ``env`` appends "Env: VAR" to a field's description. With ``empty``
    every field is optional, empty by default, and its description ends with what empty means."""
    from forvalue.config import field_specs

    include = None if include is None else list(include)
    env = env or {}
    specs = {s.name: s for s in field_specs(cls)}
    names = include if include is not None else [n for n in specs if n not in set(exclude)]
    out = {}
    for name in names:
        s = specs[name]
        tp = Optional[s.type] if s.optional or empty is not None else s.type
        desc = s.help + (f". Env: {env[name]}" if name in env else "") + (f"; empty: {empty}" if empty else "")
        default = None if empty is not None else list(s.default) if isinstance(s.default, tuple) else s.default
        out[name] = (tp, Field(default=default, description=desc))
    return out


def config_class(name: str, base, doc: str, *sources: dict[str, tuple[Any, Any]], **extra) -> type:
    """A subclass of ``base`` (a Dagster Config or ConfigurableResource) whose fields are the
    dataclass fields in ``sources`` (see :func:`dataclass_fields`) and ``extra`` (name=(type, Field))."""
    fields: dict[str, tuple[Any, Any]] = {}
    for src in sources:
        fields.update(src)
    fields.update(extra)
    cls = create_model(name, __base__=base, __doc__=doc, **fields)
    cls.__module__ = base.__module__
    return cls


__all__ = ["dataclass_fields", "config_class"]
