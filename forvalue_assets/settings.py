"""Where registration and evaluation find incoming files, read from the environment when they are
used (a registration or evaluation run), never at import. The incoming folder, its train/ and
valuation/ layout and link following are the sensors' settings (``sensors/settings.py``); the link
rules that decide which incoming files may be read are ``sensors/links.py``."""

from __future__ import annotations

import os
from pathlib import Path

from sensors.links import link_refusal
from sensors.settings import INCOMING_SUFFIXES, follow_links, incoming_root

EVAL_SUBDIR = "eval"          # <incoming>/eval/<valuation set>.*: held-out evaluation data for that valuation set
REGISTER_SUFFIXES = INCOMING_SUFFIXES + (".csv",)


def incoming_candidates(subdir: str, name: str, root: Path | None = None) -> list[tuple[Path, str | None]]:
    """The incoming files and HF folders named ``name`` in ``<root>/<subdir>``, each with why it may not
    be read under the link rules (``sensors/links.py``: a link leading outside the incoming folder, the
    sub-folder itself included, or several hard links), or None when it may."""
    root = root or incoming_root()
    folder = root / subdir
    if not folder.is_dir():
        return []
    follow = follow_links()
    out = []
    for p in folder.iterdir():
        if not ((p.is_file() and p.stem == name and p.suffix.lower() in REGISTER_SUFFIXES)
                or (p.is_dir() and p.name == name)):
            continue
        try:
            out.append((p, link_refusal(p, root, follow)))
        except FileNotFoundError:   # removed meanwhile
            continue
        except OSError as e:
            out.append((p, f"unreadable: {e.strerror or e}"))
    return out


def find_incoming_file(subdir: str, name: str, root: Path | None = None) -> Path | None:
    """The newest incoming file or HF folder named ``name`` in ``<root>/<subdir>`` that the link rules
    let be read (one reached through a link leading outside the incoming folder, or with several hard
    links, is passed over unless FORVALUE_INCOMING_FOLLOW_LINKS=1)."""
    found = [p for p, why in incoming_candidates(subdir, name, root) if why is None]
    if not found:
        return None
    return max(found, key=lambda p: os.stat(p).st_mtime_ns)
