"""The sensor that evaluates automation conditions (eager features, scores and subsets)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from .settings import DEFAULT_SENSOR_INTERVAL


def automation_sensor_def(interval: int = DEFAULT_SENSOR_INTERVAL) -> AutomationConditionSensorDefinition:
    """The ``forvalue_automation`` sensor, evaluated every ``interval`` seconds (``build_definitions``
    passes FORVALUE_SENSOR_INTERVAL)."""
    return AutomationConditionSensorDefinition(
        "forvalue_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval,
        description="Keeps features, scores and curated subsets current: materializes a partition when its "
                    "inputs update (AutomationCondition.eager, after blocking checks upstream pass).",
    )
