"""Incremental runs give what a full rebuild gives: a new arrival day is merged, not recomputed."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from plg_pipeline.lib import lake, warehouse
from plg_pipeline_tests.e2e_fixtures import failures, make_world, materialize

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dbt_manifest")]

TABLES = {  # lake table -> key columns for an order-free comparison
    "identity_map": ["id"],
    "account_memberships": ["canonical_user_id", "account_id"],
    "sessions": ["session_id"],
    "user_daily": ["canonical_user_id", "account_id", "date"],
    "account_daily": ["account_id", "date"],
    "pql_scores": ["account_id", "as_of_date"],
    "trigger_candidates": ["trigger_id"],
}


def _mode(result) -> str:
    [mat] = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key.to_user_string() == "marts/account_daily"
    ]
    return mat.materialization.metadata["mode"].value


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same world built twice: day by day (first 16 days, then the rest) and all at once."""
    base = tmp_path_factory.mktemp("incremental")
    world = make_world(base, accounts=30, days=24, seed=5)
    stepwise = world.with_warehouse(base / "stepwise" / "warehouse.duckdb")
    whole = world.with_warehouse(base / "whole" / "warehouse.duckdb")
    first = materialize(stepwise, end=world.days[15])
    # a billing row that comes with the later days but takes effect before the dates they touch
    with (world.raw / "billing" / "subscription_events.csv").open("a") as fh:
        fh.write(f"sub_late_1,{_an_account(stepwise)},{world.days[2]}T12:00:00Z,business,25,500.0,"
                 "active,upgrade,0.0\n")  # fmt: skip
    second = materialize(stepwise)
    full = materialize(whole)
    for result in (first, second, full):
        assert result.success, failures(result)
    return stepwise, whole, second, full


def _an_account(world) -> str:
    """An account the first run has account_daily rows for from the world's third day."""
    rows = lake.scan_dates(world.lake, "account_daily", world.days[2], world.days[2]).collect()
    return rows["account_id"].min()


def test_second_run_merges_new_days_incrementally(runs):
    stepwise, _, second, _ = runs
    mode = _mode(second)
    assert mode.startswith("incremental:"), mode
    # the late billing row re-priced the stored rows from its date, without a rebuild
    assert f"billing changed from {stepwise.days[2]}" in mode, mode
    # and the rows written again start there: the note says how far back the update went
    assert f"date(s) rebuilt from {stepwise.days[2]}" in mode, mode


def test_checks_measure_the_dates_an_incremental_run_rebuilt(runs):
    """The data-quality checks of an incremental run read the new events' dates, not all history;
    a full build reads every event."""
    stepwise, _, second, full = runs
    events = lake.scan_partitions(stepwise.lake, "events", schema={})
    activity = events.filter(pl.col("type").is_in(["track", "page", "screen"]))
    for result, everything in ((second, False), (full, True)):
        checks = [
            c
            for c in result.get_asset_check_evaluations()
            if c.asset_key.to_user_string() == "marts/account_daily" and c.passed
        ]
        assert len(checks) == 3, failures(result)
        for check in checks:
            scope, rows = check.metadata["scope"].value, check.metadata["rows"].value
            # the duplicates check counts every event, the others activity events
            expected = events if "duplicate" in check.check_name else activity
            if everything:
                assert scope == "all events"
            else:
                since = date.fromisoformat(scope.removeprefix("events dated ").split()[0])
                assert stepwise.days[0] < since <= stepwise.days[16]
                expected = expected.filter(pl.col("event_date") >= since)
            want = expected.select(pl.len()).collect().item()
            assert rows == want > 0, (check.check_name, scope)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_incremental_tables_equal_a_full_rebuild(runs, table):
    stepwise, whole, _, _ = runs
    a, b = (_lake_table(settings, table) for settings in (stepwise, whole))
    assert a.height == b.height > 0
    _assert_same(a, b, TABLES[table])
    # the warehouse copy: only the rebuilt dates of the date-partitioned tables were replaced
    with warehouse.connect(stepwise.warehouse, read_only=True) as con:
        published = warehouse.read_table(con, table)
    _assert_same(published.cast(a.schema), a, TABLES[table])  # DuckDB names UTC Etc/UTC


def _lake_table(settings, table: str) -> pl.DataFrame:
    if lake.schema_path(settings.lake, table).exists():  # one file per date
        return lake.scan_dates(settings.lake, table).collect()
    return pl.read_parquet(lake.table_path(settings.lake, table))


def _assert_same(a: pl.DataFrame, b: pl.DataFrame, keys: list[str]) -> None:
    a, b = a.select(sorted(a.columns)), b.select(sorted(b.columns))
    assert_frame_equal(a.sort(keys), b.sort(keys), check_exact=True)
