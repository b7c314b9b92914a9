"""Where registration and evaluation find incoming files, read from the environment when they are
used (a registration or evaluation run), never at import. The incoming folder, its train/ and
valuation/ layout and link following are the sensors' settings (``sensors/settings.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from sensors.settings import INCOMING_SUFFIXES, follow_links, incoming_root

EVAL_SUBDIR = "eval"          # <incoming>/eval/<valuation set>.*: held-out evaluation data for that valuation set
REGISTER_SUFFIXES = INCOMING_SUFFIXES + (".csv",)


def find_incoming_file(subdir: str, name: str, root: Path | None = None) -> Path | None:
    """The newest incoming file or HF folder named ``name`` in ``<root>/<subdir>``."""
    folder = (root or incoming_root()) / subdir
    if not folder.is_dir():
        return None
    inside = (root or incoming_root()).resolve()
    found = [p for p in folder.iterdir()
             if ((p.is_file() and p.stem == name and p.suffix.lower() in REGISTER_SUFFIXES)
                 or (p.is_dir() and p.name == name))
             and (follow_links() or not p.is_symlink() or p.resolve().is_relative_to(inside))]
    if not found:
        return None
    return max(found, key=lambda p: os.stat(p).st_mtime_ns)
