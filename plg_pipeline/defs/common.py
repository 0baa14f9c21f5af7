"""Small pieces every stage's wiring shares: owners, retry policy, input keys."""

from __future__ import annotations

import dagster as dg

from plg_pipeline.lib.pipeline_config import pipeline_config

RETRY = dg.RetryPolicy(
    max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Steps touch files, the DuckDB file and HTTP: transient faults get two more tries."""

WAREHOUSE_POOL = "warehouse"
"""Every step that writes the DuckDB file holds this pool (limit 1 in dagster.yaml)."""


def owners(stage: str) -> list[str]:
    """The owners pipeline.yaml gives `stage` (a field of StageOwners)."""
    return list(getattr(pipeline_config().owners, stage))


def marts(name: str) -> dg.AssetKey:
    return dg.AssetKey(["marts", name])


def lake_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", name])
