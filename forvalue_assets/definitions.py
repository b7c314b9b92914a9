"""The ForValue code location: the domains merged into one Definitions.

    ingest      training_dataset, valuation_set; jobs register_training_dataset, register_valuation_set
    features    training_features, valuation_features; their coverage checks
    curation    forvalue_scores, curated_subset; their checks; job curation
    finetuning  finetune_run, eval_run, finetune_comparison; jobs finetune_and_eval, compare_subsets

plus the sensors and the schedule (``sensors/``'s factories, given the jobs and partitions they
target) and the resources (``resources/``).

Nothing here runs at import. ``build_definitions()`` is the one configuration step: it builds the
resources from environment variables over embedded defaults (docs/platform.md, "Configuration")
and the sensors with FORVALUE_SENSOR_INTERVAL. Tools load ``code_location`` (``dg dev``, ``dg check
defs``, ``dagster dev``, workspace.yaml), which calls it when the location loads; ``defs`` is the
same Definitions, built on first access (``from forvalue_assets.definitions import defs``).
"""

from __future__ import annotations

from typing import Mapping

import dagster as dg
from dagster import Definitions, ScheduleDefinition, SensorDefinition

from resources import (
    CurationResource,
    DuckDBStoreResource,
    EngineResource,
    FeatureStoreResource,
    FinetuneResource,
    ModelResource,
    ray_resource_from_env,
)
from resources.mlflow import MLflowResource
from sensors import CurationPairs, IncomingTarget, automation_sensor_def, incoming_sensor, nightly_curation_schedule
from sensors.settings import DEFAULT_SENSOR_INTERVAL, sensor_interval

from . import curation, features, finetuning, ingest
from .common import TRAINING_DATASET, TRAINING_FEATURES, VALUATION_FEATURES, VALUATION_SET
from .partitions import pair_key, training_datasets, valuation_sets

DOMAINS = (ingest, features, curation, finetuning)


def domain_definitions(domain) -> Definitions:
    """One domain's assets, checks and jobs (no resources: the root supplies them)."""
    return Definitions(assets=domain.ASSETS, asset_checks=domain.CHECKS, jobs=domain.JOBS)


def default_resources() -> dict:
    """Every resource from the environment (``from_env``) over its embedded defaults."""
    return {
        "model": ModelResource.from_env(),
        "catalog": DuckDBStoreResource.from_env(),
        "feature_store": FeatureStoreResource.from_env(),
        "curation": CurationResource.from_env(),
        "finetune": FinetuneResource.from_env(),
        "mlflow": MLflowResource.from_env(),
        "engine": EngineResource.from_env(),
        "ray": ray_resource_from_env(),   # dagster-ray; connects only when engine is ray
    }


def platform_sensors(interval: int = DEFAULT_SENSOR_INTERVAL) -> list[SensorDefinition]:
    """``incoming_files`` (files run the ingest registration jobs) and ``forvalue_automation``,
    ticking every ``interval`` seconds."""
    training = IncomingTarget(ingest.register_training_job, training_datasets, TRAINING_DATASET.to_user_string())
    valuation = IncomingTarget(ingest.register_valuation_job, valuation_sets, VALUATION_SET.to_user_string())
    return [incoming_sensor(training, valuation, interval), automation_sensor_def(interval)]


def platform_schedules() -> list[ScheduleDefinition]:
    """``nightly_curation``: the ``curation`` job for every pair whose features exist."""
    pairs = CurationPairs(training_datasets, valuation_sets, TRAINING_FEATURES, VALUATION_FEATURES, pair_key)
    return [nightly_curation_schedule(curation.curation_job, pairs)]


def build_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """The platform's Definitions; ``resources`` replaces the environment-built ones (tests)."""
    platform = Definitions(sensors=platform_sensors(sensor_interval()), schedules=platform_schedules(),
                           resources={**default_resources(), **(resources or {})})
    return Definitions.merge(*(domain_definitions(d) for d in DOMAINS), platform)


@dg.definitions
def code_location() -> Definitions:
    """What ``dg dev`` / ``dg check defs`` / workspace.yaml load: ``build_definitions()`` at load time."""
    return build_definitions()


def __getattr__(name: str):
    # ``defs``: the code location's Definitions, built from the environment on first access (not at
    # import) and then kept.
    if name == "defs":
        globals()["defs"] = built = build_definitions()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
