"""Ingestion entry points: raw landing files -> validated frames plus a quarantine, losing nothing.

Events live in `ingest_events`, the billing/CRM/privacy CSVs in `ingest_tables`; this module holds
the ingest config and is the one import the Dagster assets need.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config
from plg_pipeline.lib.ingest_events import (
    DayIngest,
    arrival_days,
    drop_seen,
    ingest_arrival_day,
    ingest_arrival_days,
)
from plg_pipeline.lib.ingest_tables import (
    TableIngest,
    ingest_accounts,
    ingest_billing,
    ingest_deletion_requests,
)


class IngestConfig(StrictModel):
    dedup_lookback_days: int = Field(7, ge=1)
    future_tolerance_hours: float = Field(24, ge=0)


def load_ingest_config(config_dir: Path | str | None = None) -> IngestConfig:
    return load_config(config_path("ingest.yaml", config_dir), IngestConfig)


__all__ = [
    "DayIngest",
    "IngestConfig",
    "TableIngest",
    "arrival_days",
    "drop_seen",
    "ingest_accounts",
    "ingest_arrival_day",
    "ingest_arrival_days",
    "ingest_billing",
    "ingest_deletion_requests",
    "load_ingest_config",
]
