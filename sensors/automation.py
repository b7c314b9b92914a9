"""The sensor that evaluates automation conditions (eager features, scores and subsets)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from forvalue_assets.settings import sensor_interval

automation_sensor = AutomationConditionSensorDefinition(
    "forvalue_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval(),
    description="Keeps features, scores and curated subsets current: materializes a partition when its "
                "inputs update (AutomationCondition.eager, after blocking checks upstream pass).",
)
