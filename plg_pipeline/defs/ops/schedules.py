"""The daily refresh: work that depends on the date, not on new files."""

import dagster as dg

from plg_pipeline.defs.ops.jobs import daily_refresh_job
from plg_pipeline.lib.slas import slas

daily_refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh_schedule",
    job=daily_refresh_job,
    cron_schedule=slas().cadence.daily_refresh_cron,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
