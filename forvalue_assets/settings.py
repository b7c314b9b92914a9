"""Platform settings read from the environment when they are used (a sensor tick, a registration
run, ``build_definitions``), never at import: the folders the sensor and registration share, and
the sensors' tick interval."""

from __future__ import annotations

import os
from pathlib import Path

from resources._env import env_bool, env_int, env_str

TRAIN_SUBDIR = "train"
VALUATION_SUBDIR = "valuation"
EVAL_SUBDIR = "eval"          # <incoming>/eval/<valuation set>.*: held-out evaluation data for that valuation set
# Formats the incoming-folder sensor picks up (registration itself also reads CSV and HF folders).
INCOMING_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".pq")
REGISTER_SUFFIXES = INCOMING_SUFFIXES + (".csv",)
DEFAULT_SENSOR_INTERVAL = 15


def incoming_root() -> Path:
    """Where data teams drop files: <root>/train/<name>.jsonl|.parquet, <root>/valuation/<name>.*, and
    <root>/eval/<valuation set>.* (evaluation data no selection sees; read when a fine-tune is evaluated)."""
    return Path(env_str("FORVALUE_INCOMING", "incoming"))


def seed_demo() -> bool:
    """Copy the bundled demo data into a new incoming folder on the sensor's first tick."""
    return env_bool("FORVALUE_DEMO", True)


def follow_links() -> bool:
    """Register files reached through links that leave the incoming folder (off: anyone who can
    write to incoming/ could otherwise make the platform read any file the server can read)."""
    return env_bool("FORVALUE_INCOMING_FOLLOW_LINKS", False)


def settle_seconds() -> int:
    """A file modified less than this many seconds ago is left for the next tick (still being written)."""
    return env_int("FORVALUE_SETTLE_SECONDS", 2) or 0


def sensor_interval() -> int:
    """Seconds between sensor ticks (FORVALUE_SENSOR_INTERVAL)."""
    return env_int("FORVALUE_SENSOR_INTERVAL", DEFAULT_SENSOR_INTERVAL) or DEFAULT_SENSOR_INTERVAL


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
