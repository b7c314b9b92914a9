"""Sensors and schedules of the ForValue platform (all running by default):

- ``incoming_files``: watches incoming/train/ and incoming/valuation/ and registers new or changed files;
- ``forvalue_automation``: evaluates the assets' automation conditions (features, scores and
  subsets follow their inputs);
- ``nightly_curation``: re-scores and re-curates every (dataset, valuation set) pair at 02:00 UTC.
"""

from .automation import automation_sensor
from .incoming import incoming_files
from .schedules import nightly_curation

ALL_SENSORS = [incoming_files, automation_sensor]
ALL_SCHEDULES = [nightly_curation]

__all__ = ["ALL_SCHEDULES", "ALL_SENSORS", "automation_sensor", "incoming_files", "nightly_curation"]
