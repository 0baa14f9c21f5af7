"""The production instance (deploy/dagster.prod.yaml) on the real PostgreSQL at 127.0.0.1:5432.

Each test run gets a fresh database, dropped afterwards. Without a reachable server the tests
skip and say why.
"""

import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from psycopg2 import sql

from plg_pipeline.defs.actions.sensors import action_sensor
from plg_pipeline.defs.common import marts
from plg_pipeline.defs.ops.sensors import raw_arrival_sensor
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import ledger, warehouse
from plg_pipeline.lib.delivery import load_destinations
from plg_pipeline.lib.generator import generate
from plg_pipeline.lib.ingest import arrival_days
from plg_pipeline.receiver import Receiver
from plg_pipeline_tests.test_ops_recovery import build, use

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "connect_timeout": 3}


@pytest.fixture(scope="module")
def database():
    try:
        admin = psycopg2.connect(dbname="postgres", **SERVER)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}".strip())
    admin.autocommit = True
    name = f"plg_ops_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", [name]
            )
            cur.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def instance(database, tmp_path, monkeypatch):
    """An instance configured exactly as in production, credentials from the environment."""
    for name, value in {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres",
                        "PASSWORD": "", "DB": database}.items():  # fmt: skip
        monkeypatch.setenv(f"PLG_PG_{name}", value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.prod.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def test_prod_instance_stores_everything_in_postgres_and_serialises_warehouse_writers(instance):
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert instance.run_monitoring_enabled and instance.run_retries_enabled
    config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1  # pool "warehouse": one writer
    assert config.run_queue_config.max_concurrent_runs == 4


def test_sensor_to_run_to_action_on_postgres(dbt_manifest, instance, tmp_path, monkeypatch):
    from plg_pipeline.definitions import defs

    world = tmp_path / "world"
    generate(world, accounts=12, days=5, seed=7)
    held = arrival_days(world)[-1].isoformat()  # the newest day lands last
    raw = tmp_path / "raw"
    shutil.copytree(world, raw, ignore=shutil.ignore_patterns(f"dt={held}"))
    use(monkeypatch, raw, tmp_path / "wh")
    names = load_destinations().destinations
    with Receiver({f"/{n}": f"secret-{n}" for n in names}) as rx:
        for name, dest in names.items():
            monkeypatch.setenv(dest.url_env, f"{rx.base_url}/{name}")
            monkeypatch.setenv(dest.secret_env, f"secret-{name}")
        assert build(defs, instance, raw).success  # the history, before the sensors took over

        def deliver(cursor: str | None) -> str:
            result = action_sensor.evaluate_tick(
                dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
            )
            assert len(result.run_requests) == 1, result.skip_message
            job = defs.resolve_job_def("action_job")
            assert job.execute_in_process(
                instance=instance, tags=result.run_requests[0].tags
            ).success
            return result.cursor

        action_cursor = deliver(None)
        before = dict(rx.applied())
        settings = {"settings": PipelineSettings(raw_dir=str(raw))}
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=settings)
        raw_cursor = raw_arrival_sensor.evaluate_tick(context).cursor
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        shutil.copytree(world / "events" / f"dt={held}", raw / "events" / f"dt={held}")
        context = dg.build_sensor_context(
            instance=instance, cursor=raw_cursor, definitions=defs, resources=settings
        )
        (request,) = raw_arrival_sensor.evaluate_tick(context).run_requests
        ingest = defs.resolve_job_def("ingest_day_job").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert ingest.success and request.partition_key == held
        automation = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=automation.cursor
        )
        requested = [k for k in defs.resolve_all_asset_keys() if automation.get_num_requested(k)]
        assert marts("trigger_candidates") in requested
        job = defs.resolve_implicit_global_asset_job_def()
        assert job.execute_in_process(instance=instance, asset_selection=requested).success
        deliver(action_cursor)

    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    jobs = [r.job_name for r in runs]
    assert jobs.count("action_job") == 2 and "ingest_day_job" in jobs and "__ASSET_JOB" in jobs
    partition = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=marts("events"), asset_partitions=[held]), limit=1
    ).records
    assert partition and partition[0].run_id == ingest.run_id
    assert set(rx.applied().values()) <= {1}  # every delivery applied once
    assert set(before) <= set(rx.applied())
    with warehouse.connect(tmp_path / "wh" / "warehouse.duckdb") as con:
        table = ledger.read(con)
    delivered = table.filter(table["status"] == "delivered").height
    assert delivered == len(rx.applied())
