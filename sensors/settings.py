"""The sensors' settings, read from the environment when they are used (a sensor tick,
``build_definitions``), never at import: the incoming folder and its layout, demo seeding, the
settle time, link following, and the tick interval.

The incoming folder is the contract between the incoming-folder sensor and registration: the
Dagster layer (``forvalue_assets``) reads its layout from here, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

from resources._env import env_bool, env_int, env_str

TRAIN_SUBDIR = "train"
VALUATION_SUBDIR = "valuation"
# Formats the incoming-folder sensor picks up (registration itself also reads CSV and HF folders).
INCOMING_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".pq")
DEFAULT_SENSOR_INTERVAL = 15
# Run tags of the registration runs the sensor requests: the file it saw and that file's content hash
# (the hash is also the run config's ``content_hash``; the run compares it with what it reads).
SOURCE_TAG = "forvalue/source"
CONTENT_HASH_TAG = "forvalue/content_hash"


def incoming_root() -> Path:
    """Where data teams drop files: <root>/train/<name>.jsonl|.parquet, <root>/valuation/<name>.*, and
    <root>/eval/<valuation set>.* (evaluation data no selection sees; read when a fine-tune is evaluated)."""
    return Path(env_str("FORVALUE_INCOMING", "incoming"))


def seed_demo() -> bool:
    """Copy the bundled demo data into a new incoming folder on the sensor's first tick."""
    return env_bool("FORVALUE_DEMO", True)


def follow_links() -> bool:
    """Read files reached through links that leave the incoming folder (a link to a file, or a watched
    sub-folder that is a link) and files with several hard links (off: anyone who can write to
    incoming/ could otherwise make the platform read any file the server can read; sensors/links.py)."""
    return env_bool("FORVALUE_INCOMING_FOLLOW_LINKS", False)


def settle_seconds() -> int:
    """A file modified less than this many seconds ago is left for the next tick (still being written)."""
    return env_int("FORVALUE_SETTLE_SECONDS", 2) or 0


def sensor_interval() -> int:
    """Seconds between sensor ticks (FORVALUE_SENSOR_INTERVAL)."""
    return env_int("FORVALUE_SENSOR_INTERVAL", DEFAULT_SENSOR_INTERVAL) or DEFAULT_SENSOR_INTERVAL
