import dagster as dg

from plg_pipeline.defs.common import marts

action_job = dg.define_asset_job(
    "action_job",
    selection=[marts("action_deliveries")],
    description="Deliver pending actions; config dry_run / retry_dead_letters on marts/action_deliveries.",
)
