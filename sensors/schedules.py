"""Nightly curation: re-score and re-curate every (training dataset, valuation set) pair whose
features exist. Scoring reads stored features only, so this is cheap."""

from __future__ import annotations

from dagster import AssetKey, DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from forvalue_assets.curation.jobs import curation_job
from forvalue_assets.partitions import pair_key, training_datasets, valuation_sets


def curation_requests(instance, tag: str) -> list[RunRequest]:
    have_t = instance.get_materialized_partitions(AssetKey("training_features"))
    have_v = instance.get_materialized_partitions(AssetKey("valuation_features"))
    requests = []
    for t in sorted(instance.get_dynamic_partitions(training_datasets.name)):
        for v in sorted(instance.get_dynamic_partitions(valuation_sets.name)):
            if t in have_t and v in have_v:
                key = pair_key(t, v)
                requests.append(RunRequest(run_key=f"{tag}/{key}", partition_key=key,
                                           tags={"forvalue/trigger": "nightly_curation"}))
    return requests


@schedule(
    name="nightly_curation",
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=curation_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="02:00 UTC: re-score every (training dataset, valuation set) pair from stored features and "
                "refresh its curated subset.",
)
def nightly_curation(context: ScheduleEvaluationContext):
    tick = context.scheduled_execution_time
    requests = curation_requests(context.instance, f"nightly-{tick:%Y-%m-%d}" if tick else "nightly")
    if not requests:
        return SkipReason("no (training dataset, valuation set) pair with features yet")
    return requests
