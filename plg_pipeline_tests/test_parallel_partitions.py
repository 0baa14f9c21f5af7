"""Arrival days materialized at the same time from separate OS processes share one warehouse
file: none may fail on the DuckDB lock, and the outcome must equal running them one by one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from plg_pipeline_tests.e2e_fixtures import (
    World,
    dagster_home,
    failures,
    make_world,
    read_warehouse,
    run_env,
)

pytestmark = pytest.mark.slow

INGEST = ("lake/events_validated", "lake/event_quarantine", "lake/ingest_stats", "marts/events")
LAKE_TABLES = ("events_validated", "event_quarantine", "ingest_stats", "events")
CLI = (
    str(Path(sys.executable).parent / "dagster"),
    "asset",
    "materialize",
    "-m",
    "plg_pipeline.definitions",
)


@pytest.fixture(scope="session")
def world(tmp_path_factory, dbt_manifest) -> World:
    return make_world(tmp_path_factory.mktemp("parallel"), accounts=25, days=12)


def concurrent_days(world: World) -> list[str]:
    """Three consecutive arrival days, the later ones holding retries of the earlier ones."""
    return [d.isoformat() for d in world.days[2:5]]


def materialize_in_process(world: World, day: str) -> None:
    from plg_pipeline.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey.from_user_string(k) for k in INGEST]
    with run_env(world), dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=keys, partition_key=day, raise_on_error=False
        )
    assert result.success, failures(result)


def lake_frames(world: World, days: list[str]) -> dict[str, pl.DataFrame]:
    frames = {}
    for table in LAKE_TABLES:
        for day in days:
            path = world.lake / table / f"dt={day}.parquet"
            frames[f"{table}/{day}"] = pl.read_parquet(path)
    return frames


def sorted_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_concurrent_processes_equal_a_sequential_run(world, tmp_path):
    days = concurrent_days(world)
    home = dagster_home(tmp_path / "dagster_home")
    # an existing home, as on any machine that ran Dagster once: four processes creating the
    # SQLite schema of a brand-new home at the same instant race in alembic
    with dg.DagsterInstance.from_config(str(home)):
        pass
    parallel = world.with_warehouse(tmp_path / "parallel" / "warehouse.duckdb")
    env = {**os.environ, **parallel.env(), "DAGSTER_HOME": str(home)}
    for name in ("PLG_LAKE_DIR", "PLG_CONFIG_DIR"):
        env.pop(name, None)
    procs = [
        subprocess.Popen(
            [*CLI, "--select", ",".join(INGEST), "--partition", day],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for day in days
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for day, proc, out in zip(days, procs, outputs, strict=True):
        assert proc.returncode == 0, f"{day}:\n{out[-3000:]}"

    sequential = world.with_warehouse(tmp_path / "sequential" / "warehouse.duckdb")
    for day in days:
        materialize_in_process(sequential, day)

    got, want = lake_frames(parallel, days), lake_frames(sequential, days)
    for key in want:
        assert sorted_frame(got[key]).equals(sorted_frame(want[key])), key
    got_events = read_warehouse(parallel.warehouse)["events"]
    want_events = read_warehouse(sequential.warehouse)["events"]
    assert want_events.height > 0
    assert sorted(got_events["arrival_date"].unique().cast(pl.String).to_list()) == days
    assert sorted_frame(got_events).equals(sorted_frame(want_events))


def test_one_partition_twice_gives_identical_lake_files_and_rows(world, tmp_path):
    day = world.days[3].isoformat()
    target = world.with_warehouse(tmp_path / "wh" / "warehouse.duckdb")
    materialize_in_process(target, day)
    files = {t: (target.lake / t / f"dt={day}.parquet") for t in LAKE_TABLES}
    first = {t: (p.read_bytes(), pl.read_parquet(p)) for t, p in files.items()}
    rows = read_warehouse(target.warehouse)["events"]
    materialize_in_process(target, day)
    for table, path in files.items():
        assert pl.read_parquet(path).equals(first[table][1]), table
        assert path.read_bytes() == first[table][0], table
    again = read_warehouse(target.warehouse)["events"]
    assert rows.height > 0
    assert sorted_frame(again).equals(sorted_frame(rows))


def test_partitions_run_out_of_order_equal_partitions_run_in_order(world, tmp_path):
    """The outcome the concurrent runs may produce at worst: a later day published first."""
    days = concurrent_days(world)
    forward = world.with_warehouse(tmp_path / "forward" / "warehouse.duckdb")
    backward = world.with_warehouse(tmp_path / "backward" / "warehouse.duckdb")
    for day in days:
        materialize_in_process(forward, day)
    for day in reversed(days):
        materialize_in_process(backward, day)
    want = read_warehouse(forward.warehouse)["events"]
    got = read_warehouse(backward.warehouse)["events"]
    validated = pl.read_parquet(forward.lake / "events_validated" / "*.parquet")
    assert validated.height > want.height, "no cross-day retry among these days: nothing tested"
    assert got["event_id"].is_unique().all()
    assert sorted_frame(got).equals(sorted_frame(want))
    for day in days:
        path = f"events/dt={day}.parquet"
        assert sorted_frame(pl.read_parquet(backward.lake / path)).equals(
            sorted_frame(pl.read_parquet(forward.lake / path))
        ), day
