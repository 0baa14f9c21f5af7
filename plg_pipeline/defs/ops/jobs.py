"""Jobs the operations layer launches: one arrival day's ingestion, and the daily refresh."""

import dagster as dg

from plg_pipeline.defs.common import lake_key, marts
from plg_pipeline.defs.partitions import arrival_days

ARRIVAL_DAY_ASSETS = dg.AssetSelection.assets(
    lake_key("events_validated"),
    lake_key("event_quarantine"),
    lake_key("ingest_stats"),
    marts("events"),
)
"""The assets partitioned by arrival day: what a new or rewritten raw folder invalidates."""

CURATED_EVENTS = marts("events")

SERIAL_TAG = "plg/serial"
"""Runs tagged plg/serial=ingest are queued one at a time (tag_concurrency_limits in the
instance config): a day is deduplicated against the days before it, so they land in order."""

ingest_day_job = dg.define_asset_job(
    "ingest_day_job",
    selection=ARRIVAL_DAY_ASSETS,
    partitions_def=arrival_days,
    # two steps in sequence: a process per step would only add start-up time to the latency
    executor_def=dg.in_process_executor,
    run_tags={SERIAL_TAG: "ingest"},
    description="Ingest one arrival day or a range (launched by raw_arrival_sensor).",
)

daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.all()
    - ARRIVAL_DAY_ASSETS
    - dg.AssetSelection.assets(marts("action_deliveries")),
    description=(
        "Every unpartitioned asset: rolling windows, stalled-PQL checks, retention, backtests "
        "and billing/CRM move with the clock even when no events arrive."
    ),
)
