"""Helpers for tests that run the real dbt project on a hand-built DuckDB warehouse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import duckdb

# Source tables as the Polars assets publish them, reduced to the columns the dbt models read
# (plus the contract's key columns). Types follow ARCHITECTURE.md.
SOURCE_COLUMNS: dict[str, str] = {
    "events": (
        "event_id varchar, type varchar, event_name varchar, user_id varchar, "
        "anonymous_id varchar, account_id varchar, event_time timestamptz, event_date date, "
        "trigger_id varchar"
    ),
    "identity_map": "id varchar, id_type varchar, canonical_user_id varchar",
    "account_memberships": (
        "canonical_user_id varchar, account_id varchar, role varchar, valid_from timestamptz"
    ),
    "user_daily": "canonical_user_id varchar, account_id varchar, date date, events bigint",
    "account_daily": "account_id varchar, date date, active_users bigint, seats bigint, events bigint",
    "billing_events": (
        "event_id varchar, account_id varchar, occurred_at timestamptz, plan varchar, "
        "seats bigint, mrr double, status varchar, change varchar, overage_usd double"
    ),
    "accounts": (
        "account_id varchar, name varchar, segment varchar, industry varchar, "
        "created_at timestamptz"
    ),
    "pql_scores": (
        "account_id varchar, as_of_date date, score double, tier varchar, "
        "score_version varchar, explanation varchar"
    ),
    "tier_transitions": ("account_id varchar, as_of_date date, from_tier varchar, to_tier varchar"),
    "trigger_candidates": (
        "trigger_id varchar, account_id varchar, user_id varchar, trigger_type varchar, "
        "as_of_date date, route varchar, suppressed boolean, suppression_reason varchar, "
        "holdout boolean, program varchar, expansion_mrr_potential double"
    ),
    "action_deliveries": (
        "trigger_id varchar, destination varchar, status varchar, attempts bigint, "
        "delivered_at timestamptz"
    ),
}


def write_sources(warehouse: Path, rows: Mapping[str, Sequence[tuple]]) -> None:
    """Create every source table in schema marts (empty unless rows are given)."""
    with duckdb.connect(str(warehouse)) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("create schema if not exists marts")
        for table, columns in SOURCE_COLUMNS.items():
            con.execute(f"create or replace table marts.{table} ({columns})")
            table_rows = rows.get(table, [])
            if table_rows:
                marks = ", ".join("?" for _ in table_rows[0])
                con.executemany(f"insert into marts.{table} values ({marks})", table_rows)


def materialize_metrics(
    warehouse: Path, *, selection: Sequence[str] | None = None, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """Materialize the dbt assets (or `selection`, asset key strings) against `warehouse`.

    Needs the manifest: see dbt_manifest.
    """
    from plg_pipeline.defs import metrics
    from plg_pipeline.defs.resources import PipelineSettings

    return dg.materialize(
        [metrics.assets.metrics_dbt_models],
        resources={
            "dbt": metrics.defs.resources["dbt"],
            "settings": PipelineSettings(warehouse_path=str(warehouse)),
        },
        selection=selection,
        raise_on_error=raise_on_error,
    )


def query(warehouse: Path, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()
