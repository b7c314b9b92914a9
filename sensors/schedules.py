"""Nightly curation: re-score and re-curate every (training dataset, valuation set) pair whose
features exist. Scoring reads stored features only, so this is cheap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)


@dataclass(frozen=True)
class CurationPairs:
    """The pairs the schedule curates: every name of ``datasets`` with every name of ``valuation_sets``
    whose feature assets (``training_features``, ``valuation_features``) are materialized, as the
    partition key ``pair_key(dataset, valuation set)``."""
    datasets: DynamicPartitionsDefinition
    valuation_sets: DynamicPartitionsDefinition
    training_features: AssetKey
    valuation_features: AssetKey
    pair_key: Callable[[str, str], Any]

    def requests(self, instance, tag: str) -> list[RunRequest]:
        """One run request per pair with features, keyed ``<tag>/<pair key>``."""
        have_t = instance.get_materialized_partitions(self.training_features)
        have_v = instance.get_materialized_partitions(self.valuation_features)
        requests = []
        for t in sorted(instance.get_dynamic_partitions(self.datasets.name)):
            for v in sorted(instance.get_dynamic_partitions(self.valuation_sets.name)):
                if t in have_t and v in have_v:
                    key = self.pair_key(t, v)
                    requests.append(RunRequest(run_key=f"{tag}/{key}", partition_key=key,
                                               tags={"forvalue/trigger": "nightly_curation"}))
        return requests


def nightly_curation_schedule(job: Any, pairs: CurationPairs) -> ScheduleDefinition:
    """The ``nightly_curation`` schedule: at 02:00 UTC a run of ``job`` (a JobDefinition, or what
    define_asset_job returns) for every pair of ``pairs`` with features."""

    @schedule(
        name="nightly_curation",
        cron_schedule="0 2 * * *",
        execution_timezone="UTC",
        job=job,
        default_status=DefaultScheduleStatus.RUNNING,
        description="02:00 UTC: re-score every (training dataset, valuation set) pair from stored features and "
                    "refresh its curated subset.",
    )
    def nightly_curation(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        requests = pairs.requests(context.instance, f"nightly-{tick:%Y-%m-%d}" if tick else "nightly")
        if not requests:
            return SkipReason("no (training dataset, valuation set) pair with features yet")
        return requests

    return nightly_curation
