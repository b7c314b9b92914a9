"""Configuration declared once.

Every configuration is a dataclass whose fields carry their help text and, where they have one,
their command-line spelling (:func:`opt`). The command line builds its options from those fields
(:func:`add_options`) and turns the parsed arguments back into the dataclass (:func:`from_args`); the
Dagster layer builds its ``Config`` / resource fields from the same specs (:func:`field_specs`).
So a default, a help text or a name lives in exactly one place.

Spelling rules for the command line: ``--name-with-dashes`` of the field unless ``flag`` says
otherwise;
``none_as`` is the command-line value that means ``None`` (``--r 0`` keeps every hidden dimension);
a ``negate`` flag stores False (``--plain`` turns the chat template off).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Iterable


def opt(default: Any = MISSING, help: str = "", *, flag: str | None = None,
        choices: Iterable[Any] | None = None, none_as: Any = MISSING, negate: bool = False, cli: bool = True,
        default_factory: Any = MISSING):
    """A dataclass field with its help text and command-line spelling in ``metadata``."""
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
            "none_as": none_as, "negate": negate, "cli": cli}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class FieldSpec:
    """One configuration field, as every front end needs it."""

    name: str
    type: Any            # the Python type, Optional unwrapped (see ``optional``)
    optional: bool       # None is a valid value
    default: Any
    help: str
    choices: tuple | None
    flag: str
    none_as: Any
    negate: bool
    cli: bool


def _unwrap(tp) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return tp, False


def field_specs(cls) -> list[FieldSpec]:
    """The documented fields of a configuration dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        tp, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING
                                                              else MISSING)
        out.append(FieldSpec(name=f.name, type=tp, optional=optional, default=default, help=meta["help"],
                             choices=meta["choices"], flag=meta["flag"] or "--" + f.name.replace("_", "-"),
                             none_as=meta["none_as"], negate=meta["negate"],
                             cli=meta["cli"]))
    return out


def add_options(parser, cls, *, include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                defaults: dict | None = None, flags: dict | None = None, dest_prefix: str = "") -> None:
    """Add one option per documented field of ``cls`` to ``parser`` (a parser or an argument group).
    ``defaults`` / ``flags`` override a field's default or spelling for this command only."""
    include = None if include is None else set(include)
    defaults, flags = defaults or {}, flags or {}
    for s in field_specs(cls):
        if not s.cli or s.name in exclude or (include is not None and s.name not in include):
            continue
        default = defaults.get(s.name, s.default)
        flag = flags.get(s.name, s.flag)
        dest = dest_prefix + s.name
        if s.type is bool:
            parser.add_argument(flag, dest=dest, action="store_const", const=not s.negate, default=default,
                                help=s.help)
            continue
        shown = s.none_as if (default is None and s.none_as is not MISSING) else default
        kind = s.type if s.type in (int, float, str) else str
        parser.add_argument(flag, dest=dest, type=kind, default=shown, choices=list(s.choices) if s.choices else None,
                            help=f"{s.help} (default: {shown})" if shown not in (None, MISSING, "") else s.help)


def from_args(cls, args, *, dest_prefix: str = "", **overrides):
    """The dataclass built from parsed arguments (fields without an option keep their default)."""
    values = {}
    for s in field_specs(cls):
        dest = dest_prefix + s.name
        if s.name in overrides:
            values[s.name] = overrides[s.name]
        elif s.cli and hasattr(args, dest):
            v = getattr(args, dest)
            if s.none_as is not MISSING and v == s.none_as:
                v = None
            values[s.name] = v
    values.update({k: v for k, v in overrides.items() if k not in values})
    return cls(**values)


__all__ = ["opt", "FieldSpec", "field_specs", "add_options", "from_args"]
