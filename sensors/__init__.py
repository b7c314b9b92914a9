"""Sensors and schedules of the ForValue platform (all running by default), built by factories
that take what they target (``forvalue_assets/definitions.py`` passes the jobs and partitions):

- ``incoming_sensor(training, valuation, interval)``: the ``incoming_files`` sensor, which watches
  incoming/train/ and incoming/valuation/ and registers new or changed files;
- ``automation_sensor_def(interval)``: the ``forvalue_automation`` sensor, which evaluates the
  assets' automation conditions (features, scores and subsets follow their inputs);
- ``nightly_curation_schedule(job, pairs)``: the ``nightly_curation`` schedule, which re-scores and
  re-curates every (dataset, valuation set) pair at 02:00 UTC.

``settings`` holds what only the sensors decide (the incoming folder and its layout, demo seeding,
settle time, link following, the tick interval). This package never imports ``forvalue_assets``.
"""

from .automation import automation_sensor_def
from .incoming import IncomingTarget, incoming_sensor
from .schedules import CurationPairs, nightly_curation_schedule

__all__ = ["CurationPairs", "IncomingTarget", "automation_sensor_def", "incoming_sensor", "nightly_curation_schedule"]
