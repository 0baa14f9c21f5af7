"""Declarative automation: everything after ingestion follows a new arrival day by itself."""

import dagster as dg

from plg_pipeline.defs.common import marts, owners
from plg_pipeline.defs.ops.freshness import sla_freshness
from plg_pipeline.defs.ops.jobs import ARRIVAL_DAY_ASSETS
from plg_pipeline.lib.slas import slas

AFTER_ARRIVAL = dg.AutomationCondition.eager().replace(
    "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(ARRIVAL_DAY_ASSETS)
)
"""`eager()`, except that missing arrival-day partitions do not hold it back.

Plain `eager()` waits while *any* upstream partition is missing, and most daily partitions
(days before the first raw folder, days without a folder) always are; a missing unpartitioned
input still blocks.
"""

downstream_automation_sensor = dg.AutomationConditionSensorDefinition(
    "downstream_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,  # Dagster's default sensor starts STOPPED
    minimum_interval_seconds=slas().cadence.automation_sensor_seconds,
    description="Requests the downstream assets whose automation condition is true.",
)


def stage_out(stage: str, name: str, description: str) -> dg.AssetOut:
    """A `marts/<name>` output that follows new arrival days, owned and SLA'd by its stage."""
    return dg.AssetOut(
        key=marts(name),
        description=description,
        owners=owners(stage),
        automation_condition=AFTER_ARRIVAL,
        freshness_policy=sla_freshness(stage),
    )
