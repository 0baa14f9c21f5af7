"""Operations: the pipeline runs by itself (sensors, automation, schedule) within its SLAs."""

import dagster as dg

from plg_pipeline.defs.ops.automation import downstream_automation_sensor
from plg_pipeline.defs.ops.jobs import daily_refresh_job, ingest_day_job
from plg_pipeline.defs.ops.schedules import daily_refresh_schedule
from plg_pipeline.defs.ops.sensors import raw_arrival_sensor

defs = dg.Definitions(
    jobs=[ingest_day_job, daily_refresh_job],
    sensors=[raw_arrival_sensor, downstream_automation_sensor],
    schedules=[daily_refresh_schedule],
)
