"""The one partitioning every per-day asset shares: the UTC day a raw file arrived."""

import dagster as dg

from plg_pipeline.lib.pipeline_config import pipeline_config

arrival_days = dg.DailyPartitionsDefinition(
    start_date=pipeline_config().partitions_start.isoformat(), end_offset=1
)
