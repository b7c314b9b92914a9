"""Sensors and schedules of the ForValue platform (all running by default):

- ``incoming_files``: watches incoming/train/ and incoming/valuation/ and registers new or changed files;
- ``forvalue_automation``: evaluates the assets' automation conditions (features, scores and
  subsets follow their inputs);
- ``nightly_curation``: re-scores and re-curates every (dataset, valuation set) pair at 02:00 UTC.

``build_sensors(interval)`` makes both sensors with a tick interval (``build_definitions`` reads
FORVALUE_SENSOR_INTERVAL); ``incoming_files`` / ``automation_sensor`` are the same with the default
interval, for tests and direct use.
"""

from .automation import automation_sensor, automation_sensor_def
from .incoming import incoming_files, incoming_sensor
from .schedules import nightly_curation

ALL_SENSORS = [incoming_files, automation_sensor]
ALL_SCHEDULES = [nightly_curation]


def build_sensors(interval: int) -> list:
    return [incoming_sensor(interval), automation_sensor_def(interval)]


__all__ = ["ALL_SCHEDULES", "ALL_SENSORS", "automation_sensor", "automation_sensor_def", "build_sensors",
           "incoming_files", "incoming_sensor", "nightly_curation"]
