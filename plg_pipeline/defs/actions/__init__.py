"""Actions: deliver eligible triggers to in-app, CRM and Slack, exactly once, via the outbox."""

import dagster as dg

from plg_pipeline.defs.actions.assets import action_deliveries
from plg_pipeline.defs.actions.jobs import action_job
from plg_pipeline.defs.actions.resources import destinations_from_env
from plg_pipeline.defs.actions.sensors import action_sensor

defs = dg.Definitions(
    assets=[action_deliveries],
    jobs=[action_job],
    sensors=[action_sensor],
    resources={"destinations": destinations_from_env()},
)
