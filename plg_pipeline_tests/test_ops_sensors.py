"""Running by itself: the arrival sensor, declarative automation downstream, the daily schedule."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from plg_pipeline.defs.common import lake_key, marts
from plg_pipeline.defs.ops.jobs import ARRIVAL_DAY_ASSETS, CURATED_EVENTS
from plg_pipeline.defs.ops.sensors import days_to_ingest, raw_arrival_sensor
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib.slas import slas

PATH_TO_ACTIONS = [
    marts(name)
    for name in (
        "identity_map",
        "account_memberships",
        "user_consent",
        "sessions",
        "user_daily",
        "account_daily",
        "pql_scores",
        "trigger_candidates",
    )
]
"""Every unpartitioned asset between curated events and the delivered triggers."""


def land(raw: Path, day: str, name: str = "part-000.jsonl", text: str = '{"type":"track"}\n'):
    folder = raw / "events" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def tick(instance, raw: Path, cursor: str | None = None):
    from plg_pipeline.definitions import defs

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,  # partitioned run requests are resolved against the job
        resources={"settings": PipelineSettings(raw_dir=str(raw))},
    )
    return raw_arrival_sensor.evaluate_tick(context)


@pytest.fixture
def instance(dbt_manifest):
    with dg.instance_for_test() as inst:
        yield inst


def launched(result) -> list[tuple[str, str]]:
    """(first day, last day) of each requested run: one partition or a range run."""
    out = []
    for r in result.run_requests:
        if r.partition_key:
            out.append((r.partition_key, r.partition_key))
        else:
            tags = r.tags
            out.append(
                (
                    tags["dagster/asset_partition_range_start"],
                    tags["dagster/asset_partition_range_end"],
                )
            )
    return out


def test_new_and_rewritten_folders_launch_their_days_once(tmp_path, instance):
    raw = tmp_path / "raw"
    assert tick(instance, raw).run_requests == []  # no raw root yet: nothing, no error
    land(raw, "2026-06-01")
    land(raw, "2026-06-02")
    first = tick(instance, raw)
    # two new days: one run, in arrival order, so day 2 is deduplicated against day 1
    assert launched(first) == [("2026-06-01", "2026-06-02")]
    key = first.run_requests[0].run_key
    assert set(json.loads(first.cursor)) == {"2026-06-01", "2026-06-02"}
    # the same tick evaluated again (cursor not saved yet) asks for the same run key: no new run
    assert [r.run_key for r in tick(instance, raw).run_requests] == [key]
    # unchanged folders launch nothing, and writers' temp files do not count
    (raw / "events" / "dt=2026-06-02" / ".part-001.jsonl.tmp").write_text("half")
    quiet = tick(instance, raw, first.cursor)
    assert quiet.run_requests == [] and quiet.skip_message
    # a new latest day: exactly that partition
    land(raw, "2026-06-03")
    new_day = tick(instance, raw, quiet.cursor)
    assert launched(new_day) == [("2026-06-03", "2026-06-03")]
    assert new_day.run_requests[0].partition_key == "2026-06-03"
    # a file of 06-01 rewritten later relaunches it, once, with the days that look back at it
    path = land(raw, "2026-06-01", text='{"type":"track"}\n{"type":"page"}\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = tick(instance, raw, new_day.cursor)
    assert launched(again) == [("2026-06-01", "2026-06-03")]
    assert again.run_requests[0].run_key != key
    assert tick(instance, raw, again.cursor).run_requests == []


def test_a_rewrite_reaches_only_the_days_within_the_dedup_lookback():
    existing = ["2026-06-01", "2026-06-05", "2026-06-08", "2026-06-09", "2026-06-20"]
    assert days_to_ingest(["2026-06-01"], existing, 7) == existing[:3]
    assert days_to_ingest(["2026-06-20"], existing, 7) == ["2026-06-20"]
    assert days_to_ingest([], existing, 7) == []


def test_folders_outside_the_partitions_or_empty_are_not_launched(tmp_path, instance):
    raw = tmp_path / "raw"
    land(raw, "2020-01-01")  # before partitions_start
    (raw / "events" / "dt=2026-06-03").mkdir(parents=True)  # empty folder: nothing landed yet
    (raw / "events" / "dt=not-a-date").mkdir()
    result = tick(instance, raw)
    assert result.run_requests == []
    assert json.loads(result.cursor) == {}  # retried on later ticks, not forgotten


def test_a_day_curated_after_its_last_write_is_not_relaunched(tmp_path, instance):
    """A fresh cursor (new deployment after a CLI backfill) does not redo every day."""
    raw = tmp_path / "raw"
    land(raw, "2026-06-01")
    land(raw, "2026-06-02")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=CURATED_EVENTS, partition="2026-06-01")
    )
    result = tick(instance, raw)
    assert launched(result) == [("2026-06-02", "2026-06-02")]


def test_after_the_first_tick_a_new_folder_launches_whatever_its_mtimes(tmp_path, instance):
    raw = tmp_path / "raw"
    land(raw, "2026-06-01")
    first = tick(instance, raw)
    os.utime(land(raw, "2026-06-02"), (0, 0))  # moved in with its original (old) mtime
    # the day was covered, empty, by an earlier range run
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=CURATED_EVENTS, partition="2026-06-02")
    )
    later = tick(instance, raw, first.cursor)
    assert launched(later) == [("2026-06-02", "2026-06-02")]


def test_sensor_runs_target_exactly_the_arrival_day_assets(dbt_manifest):
    from plg_pipeline.definitions import defs

    job = defs.resolve_job_def("ingest_day_job")
    graph = defs.resolve_asset_graph()
    assert job.partitions_def is not None
    assert set(job.asset_layer.selected_asset_keys) == ARRIVAL_DAY_ASSETS.resolve(graph)
    sensor = defs.resolve_sensor_def("raw_arrival_sensor")
    assert sensor.job_name == "ingest_day_job"
    assert sensor.minimum_interval_seconds == slas().cadence.raw_arrival_sensor_seconds


def report(instance: dg.DagsterInstance, keys, partition: str | None = None) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def test_one_arrival_day_brings_everything_through_to_trigger_candidates(dbt_manifest, instance):
    from plg_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    everything = dg.AssetSelection.all().resolve(graph)
    unpartitioned = everything - ARRIVAL_DAY_ASSETS.resolve(graph)
    report(instance, unpartitioned)  # the state after a full backfill
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0
    report(instance, ARRIVAL_DAY_ASSETS.resolve(graph), partition="2026-06-02")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = {k for k in everything if result.get_num_requested(k)}
    assert set(PATH_TO_ACTIONS) <= requested
    assert marts("action_deliveries") not in requested  # the action sensor delivers
    # backtests and calibration are daily work, not per-arrival work
    assert not requested & {marts("trigger_backtest"), marts("weight_calibration")}
    # evaluated again before those runs finish: nothing is requested twice
    repeat = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert repeat.total_requested == 0


def test_missing_days_do_not_hold_automation_back_but_missing_tables_do(dbt_manifest, instance):
    """Most arrival-day partitions are always missing; an unbuilt unpartitioned input is not."""
    from plg_pipeline.definitions import defs

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    report(instance, [CURATED_EVENTS, lake_key("events_validated")], partition="2026-06-02")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert result.get_num_requested(marts("identity_map")) == 1  # needs only the events
    # pql_scores waits: account_daily's other inputs (billing) were never built
    assert result.get_num_requested(marts("pql_scores")) == 0


def test_sensors_and_schedule_start_by_themselves(dbt_manifest):
    from plg_pipeline.definitions import defs

    for name in ("raw_arrival_sensor", "downstream_automation_sensor", "action_sensor"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    names = {s.name for s in defs.get_repository_def().sensor_defs}
    # our automation sensor covers every asset, so Dagster adds no (stopped) default one
    assert "downstream_automation_sensor" in names
    assert "default_automation_condition_sensor" not in names
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == slas().cadence.daily_refresh_cron
    assert schedule.execution_timezone == "UTC"


def test_daily_refresh_covers_time_based_work_not_arrival_days_or_delivery(dbt_manifest):
    from plg_pipeline.definitions import defs

    job = defs.resolve_job_def("daily_refresh_job")
    selected = set(job.asset_layer.selected_asset_keys)
    for name in (
        "trigger_backtest",
        "weight_calibration",
        "erasure_log",
        "billing_events",
        "pql_scores",
    ):
        assert marts(name) in selected
    assert not selected & ARRIVAL_DAY_ASSETS.resolve(defs.resolve_asset_graph())
    assert marts("action_deliveries") not in selected
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=None)
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert len(requests) == 1 and schedule.job_name == "daily_refresh_job"
