"""The ``forvalue`` command.

One module per command (``score``, ``curate``, ``select``, ``explain``, ``validate``, ``features``,
``store``, ``demo``, ``finetune``, ``evaluate`` for ``eval``, ``bench``, ``report``), each with
``register(subparsers, parents)``; the options several commands
share, built from the configuration dataclasses, are in ``options``; running and exit codes in
``runner``. Imports go one way: this package imports the command modules, they import ``options``,
``output`` and ``runner``, and those import only the library.
"""

from __future__ import annotations

import argparse
import sys

from . import bench, curate, demo, evaluate, explain, features, finetune, report, score, select, store, validate
from .options import common_parent
from .output import write_table  # noqa: F401  (part of the API: tables as the commands write them)
from .runner import run_command

COMMANDS = (score, curate, select, explain, validate, features, store, demo, finetune, evaluate, bench, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forvalue", description="Forward-only data valuation (For-Value) for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = [common_parent()]
    for command in COMMANDS:
        command.register(sub, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


__all__ = ["build_parser", "main", "run_command", "write_table"]
