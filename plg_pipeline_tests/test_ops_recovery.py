"""On-call procedures (docs/oncall.md), each run for real on a small generated world."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from polars.testing import assert_frame_equal

from plg_pipeline.defs.common import lake_key, marts
from plg_pipeline.defs.ops.jobs import ARRIVAL_DAY_ASSETS
from plg_pipeline.defs.ops.sensors import raw_arrival_sensor
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import delivery, lake, ledger, warehouse
from plg_pipeline.lib.generator import generate
from plg_pipeline.lib.ingest import arrival_days
from plg_pipeline.receiver import Receiver

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# the UI launches runs through the instance; here they execute synchronously in this process
SYNC_LAUNCHER = {
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
    "run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    },
}
DETERMINISTIC = ("events", "identity_map", "account_daily", "pql_scores", "trigger_candidates")
"""Tables whose content depends only on the raw files (erasure_log records wall-clock time)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("world") / "raw"
    generate(raw, accounts=12, days=5, seed=7)
    return raw


def use(monkeypatch, raw: Path, root: Path) -> Path:
    """Point the definitions' settings at `raw` and a warehouse (and lake) under `root`."""
    monkeypatch.setenv("PLG_RAW_DIR", str(raw))
    monkeypatch.setenv("PLG_WAREHOUSE", str(root / "warehouse.duckdb"))
    return root / "lake"


def range_tags(raw: Path) -> dict[str, str]:
    days = arrival_days(raw)
    return {
        "dagster/asset_partition_range_start": days[0].isoformat(),
        "dagster/asset_partition_range_end": days[-1].isoformat(),
    }


def ingest_day_job():
    """Reconstructable: re-execution rebuilds the job from its module, as a run worker does."""
    from plg_pipeline.definitions import defs

    return defs.resolve_job_def("ingest_day_job")


def day_outputs(lake_dir: Path, day: str) -> dict[str, pl.DataFrame]:
    return {
        table: pl.read_parquet(lake.partition_path(lake_dir, table, day)).sort("event_id")
        for table in ("events_validated", "events")
    }


def assert_same(left: dict[str, pl.DataFrame], right: dict[str, pl.DataFrame]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        assert_frame_equal(left[name], right[name], check_row_order=False, categorical_as_str=True)


def published_day(root: Path, day: str) -> pl.DataFrame:
    with warehouse.connect(root / "warehouse.duckdb", read_only=True) as con:
        return pl.from_arrow(
            con.sql(
                "select * from marts.events where arrival_date = ? order by event_id", params=[day]
            ).to_arrow_table()
        )


@contextmanager
def ui_graphql(instance: dg.DagsterInstance):
    """The webserver's GraphQL schema over our code location: what the UI shows and does."""
    target = ModuleTarget(
        module_name="plg_pipeline.definitions",
        attribute="defs",
        working_directory=str(REPO),
        location_name="plg_pipeline",
    )
    with WorkspaceProcessContext(instance, target) as process_context:

        def query(text: str, variables: dict | None = None) -> dict:
            result = execute_dagster_graphql(
                process_context.create_request_context(), text, variables
            )
            assert not result.errors, result.errors
            return result.data

        query.process_context = process_context
        yield query


PARTITION_STATUS = """
query ($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetPartitionStatuses {
      ... on TimePartitionStatuses { ranges { status startKey endKey } } } }
  }
}"""
LAUNCH = """
mutation ($day: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: "plg_pipeline", repositoryName: "__repository__",
               jobName: "ingest_day_job"},
    executionMetadata: {tags: [{key: "dagster/partition", value: $day}]}}) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
  }
}"""
REEXECUTE = """
mutation ($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
  }
}"""


def test_failed_partition_shows_in_the_ui_and_reexecutes_from_failure(
    dbt_manifest, world, tmp_path, monkeypatch
):
    day = arrival_days(world)[1].isoformat()
    clean_lake = use(monkeypatch, world, tmp_path / "clean")
    with dg.instance_for_test() as instance:
        assert ingest_day_job().execute_in_process(instance=instance, partition_key=day).success
    lake_dir = use(monkeypatch, world, tmp_path / "ops")
    # the curated file's path is taken (a full or broken disk looks the same to the step)
    blocker = lake.partition_path(lake_dir, "events", day)
    blocker.mkdir(parents=True)
    (blocker / "in-the-way").write_text("")
    with dg.instance_for_test(overrides=SYNC_LAUNCHER) as instance, ui_graphql(instance) as query:
        # launched like the sensor's runs: through the instance, from the code location
        launched = query(LAUNCH, {"day": day})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        failed = instance.get_run_by_id(launched["run"]["runId"])
        assert failed.status == dg.DagsterRunStatus.FAILURE
        ranges = query(PARTITION_STATUS, {"key": {"path": ["marts", "events"]}})
        ranges = ranges["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
        assert {"status": "FAILED", "startKey": day, "endKey": day} in ranges
        shutil.rmtree(blocker)  # the fix
        began = time.monotonic()
        launched = query(REEXECUTE, {"parent": failed.run_id})["launchPipelineReexecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        seconds = time.monotonic() - began
        child_id = launched["run"]["runId"]
        ranges = query(PARTITION_STATUS, {"key": {"path": ["marts", "events"]}})
        ranges = ranges["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
        assert {"status": "MATERIALIZED", "startKey": day, "endKey": day} in ranges
        child = instance.get_run_by_id(child_id)
        assert child.status == dg.DagsterRunStatus.SUCCESS
        assert child.parent_run_id == failed.run_id and child.tags["dagster/partition"] == day
        # from failure: the parse step that had succeeded is not executed again
        stats = instance.get_run_step_stats(child_id)
        assert {s.step_key for s in stats} == {"marts__events"}
    print(f"re-execution from failure took {seconds:.1f}s")
    assert_same(day_outputs(lake_dir, day), day_outputs(clean_lake, day))
    assert_frame_equal(published_day(tmp_path / "ops", day), published_day(tmp_path / "clean", day))


BACKFILL = """
mutation ($days: [String!], $assets: [AssetKeyInput!]) {
  launchPartitionBackfill(backfillParams: {assetSelection: $assets, partitionNames: $days}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL_STATUS = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }
"""


def test_ui_backfill_of_a_date_range_runs_exactly_those_days(
    dbt_manifest, world, tmp_path, monkeypatch
):
    from dagster._daemon.backfill import execute_backfill_iteration

    days = [d.isoformat() for d in arrival_days(world)[1:4]]
    use(monkeypatch, world, tmp_path / "ops")
    assets = [{"path": ["marts", "events"]}, {"path": ["lake", "events_validated"]},
              {"path": ["lake", "event_quarantine"]}, {"path": ["lake", "ingest_stats"]}]  # fmt: skip
    with dg.instance_for_test(overrides=SYNC_LAUNCHER) as instance, ui_graphql(instance) as query:
        launched = query(BACKFILL, {"days": days, "assets": assets})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        for _ in range(10):  # what the backfill daemon does on each of its ticks
            list(execute_backfill_iteration(query.process_context, logging.getLogger("backfill")))
            status = query(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if status["status"] != "REQUESTED":
                break
        assert status["status"] == "COMPLETED_SUCCESS"
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        parsed = instance.get_materialized_partitions(lake_key("events_validated"))
        curated = instance.get_materialized_partitions(marts("events"))
    assert sorted(parsed) == days  # exactly the range is re-read from the raw root ...
    # ... and the curated days whose cross-day dedup looks back at it are redone too
    assert set(days) <= curated and min(curated) == days[0]


def test_cli_backfill_of_a_date_range(dbt_manifest, world, tmp_path):
    days = [d.isoformat() for d in arrival_days(world)]
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "plg_pipeline.cli", "run", "--raw", str(world),
           "--warehouse", str(tmp_path / "wh" / "warehouse.duckdb"),
           "--start", days[1], "--end", days[2]]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert sorted(instance.get_materialized_partitions(marts("events"))) == days[1:3]


def path_assets(defs) -> dg.AssetSelection:
    """Ingestion and everything trigger_candidates is built from (no dbt marts, no delivery)."""
    upstream = dg.AssetSelection.assets(marts("trigger_candidates")).upstream().materializable()
    upstream = upstream.required_multi_asset_neighbors()
    return upstream | ARRIVAL_DAY_ASSETS


def build(defs, instance, raw: Path) -> dg.ExecuteInProcessResult:
    keys = path_assets(defs).resolve(defs.resolve_asset_graph())
    return defs.resolve_job_def("pipeline_job").execute_in_process(
        instance=instance, tags=range_tags(raw), asset_selection=list(keys), raise_on_error=False
    )


def tables(lake_dir: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for name in DETERMINISTIC:
        path = lake.table_path(lake_dir, name)
        files = [path] if path.exists() else lake.partition_files(lake_dir, name)
        out[name] = pl.read_parquet(files)
    return out


def folder_bytes(raw: Path, day) -> int:
    return sum(p.stat().st_size for p in (raw / "events" / f"dt={day}").iterdir())


def break_day(folder: Path) -> None:
    """A botched export: every line lost its properties."""
    for path in folder.glob("*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for event in lines:
            event.pop("properties", None)
        path.write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_a_day_reprocessed_after_fixing_its_raw_file_equals_a_clean_run(
    dbt_manifest, world, tmp_path, monkeypatch
):
    from plg_pipeline.definitions import defs
    from plg_pipeline.defs.actions.sensors import blocking_reasons

    clean_lake = use(monkeypatch, world, tmp_path / "clean")
    with dg.instance_for_test() as instance:
        assert build(defs, instance, world).success
    raw = tmp_path / "raw"
    shutil.copytree(world, raw)
    day = max(arrival_days(raw), key=lambda d: folder_bytes(raw, d)).isoformat()
    break_day(raw / "events" / f"dt={day}")
    lake_dir = use(monkeypatch, raw, tmp_path / "ops")
    settings = {"settings": PipelineSettings(raw_dir=str(raw))}
    with dg.instance_for_test() as instance:
        bad = build(defs, instance, raw)
        assert not bad.success  # a blocking data-quality check failed ...
        failed_checks = [c.check_name for c in bad.get_asset_check_evaluations() if not c.passed]
        assert "events_are_complete" in failed_checks
        assert not lake.table_path(lake_dir, "trigger_candidates").exists()  # ... stopping triggers
        assert blocking_reasons(instance, defs.resolve_asset_graph())  # and deliveries

        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=settings)
        cursor = raw_arrival_sensor.evaluate_tick(context).cursor  # every day curated: no runs
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)

        shutil.rmtree(raw / "events" / f"dt={day}")  # the fix: the day's files landed again
        shutil.copytree(world / "events" / f"dt={day}", raw / "events" / f"dt={day}")
        began = time.monotonic()
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, definitions=defs, resources=settings
        )
        (request,) = raw_arrival_sensor.evaluate_tick(context).run_requests
        # the day, and the later days whose deduplication looks back at it, in one run
        assert request.tags["dagster/asset_partition_range_start"] == day
        assert (
            request.tags["dagster/asset_partition_range_end"] == arrival_days(raw)[-1].isoformat()
        )
        job = defs.resolve_job_def("ingest_day_job")
        assert job.execute_in_process(instance=instance, tags=request.tags).success
        automation = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=automation.cursor
        )
        graph = defs.resolve_asset_graph()
        requested = [k for k in graph.get_all_asset_keys() if automation.get_num_requested(k)]
        assert marts("trigger_candidates") in requested
        rerun = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, asset_selection=requested
        )
        assert rerun.success
        seconds = time.monotonic() - began
        assert blocking_reasons(instance, graph) == []
    print(f"fixed day re-processed through trigger_candidates in {seconds:.1f}s")
    assert_same(tables(lake_dir), tables(clean_lake))


KILLER = """
import sys
import dagster as dg
from plg_pipeline.definitions import defs
tags = dict(zip(("dagster/asset_partition_range_start", "dagster/asset_partition_range_end"), sys.argv[1:3]))
with dg.DagsterInstance.ephemeral() as instance:
    defs.resolve_job_def("ingest_day_job").execute_in_process(instance=instance, tags=tags)
"""


def in_flight(root: Path) -> list[str]:
    """Files that exist only while a write is under way: lake temp files and the DuckDB WAL."""
    temps = [p.name for p in (root / "lake").rglob(".*.tmp")] if (root / "lake").exists() else []
    wal = root / "warehouse.duckdb.wal"
    return temps + ([wal.name] if wal.exists() else [])


def test_a_step_killed_mid_write_leaves_no_half_table_and_the_rerun_matches(
    dbt_manifest, world, tmp_path, monkeypatch
):
    days = [d.isoformat() for d in arrival_days(world)]
    clean_lake = use(monkeypatch, world, tmp_path / "clean")
    with dg.instance_for_test() as instance:
        job = ingest_day_job()
        assert job.execute_in_process(instance=instance, tags=range_tags(world)).success
    root = tmp_path / "ops"
    use(monkeypatch, world, root)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    caught: list[str] = []
    for _ in range(5):  # the write windows are short: try until a kill lands inside one
        shutil.rmtree(root, ignore_errors=True)
        proc = subprocess.Popen([sys.executable, "-c", KILLER, days[0], days[-1]], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        while proc.poll() is None and not (caught := in_flight(root)):
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if in_flight(root):  # still there after the kill: the write was really cut short
            break
    else:
        pytest.fail("no SIGKILL landed inside a lake or warehouse write in 5 attempts")
    # readers never see the half-written file: only complete partitions are listed
    for path in lake.partition_files(root / "lake", "events_validated"):
        pl.read_parquet(path)
    if (root / "warehouse.duckdb").exists():
        with warehouse.connect(root / "warehouse.duckdb") as con:  # replays or drops the WAL
            if warehouse.table_exists(con, "events"):
                counts = dict(
                    con.execute(
                        "select arrival_date::varchar, count(*) from marts.events group by 1"
                    ).fetchall()
                )
                for day, n in counts.items():  # each day all or nothing
                    assert n == published_day(tmp_path / "clean", day).height
    began = time.monotonic()
    with dg.instance_for_test() as instance:
        assert (
            ingest_day_job().execute_in_process(instance=instance, tags=range_tags(world)).success
        )
    print(f"killed during {caught}; the rerun recovered in {time.monotonic() - began:.1f}s")
    for day in days:
        assert_same(day_outputs(root / "lake", day), day_outputs(clean_lake, day))
        assert_frame_equal(published_day(root, day), published_day(tmp_path / "clean", day))


def candidates(n: int = 6) -> pl.DataFrame:
    from plg_pipeline_tests.test_delivery import candidates as contract_candidates

    return contract_candidates(n)


def dead_letter_world(tmp_path: Path, base_url: str) -> tuple[Path, dict[str, str]]:
    """Ledger with slack dead-lettered (its endpoint was down for every attempt)."""
    lake.write_parquet(candidates(), lake.table_path(tmp_path / "lake", "trigger_candidates"))
    rules = yaml.safe_load(delivery.config_path(delivery.CONFIG_FILE).read_text())
    rules["delivery"].update(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02,
                             connect_timeout_s=0.5, read_timeout_s=2.0)  # fmt: skip
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / delivery.CONFIG_FILE).write_text(yaml.safe_dump(rules))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/slack"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("inapp", "crm", "slack"):
        env[f"PLG_{name.upper()}_URL"] = f"{base_url}/{name}"
        env[f"PLG_{name.upper()}_SECRET"] = f"s-{name}"
    cli = [sys.executable, "-m", "plg_pipeline.lib.delivery", "--warehouse",
           str(tmp_path / "wh.duckdb"), "--config-dir", str(tmp_path / "config")]  # fmt: skip
    subprocess.run(cli, env={**env, "PLG_SLACK_URL": down}, check=True, capture_output=True)
    return tmp_path / "wh.duckdb", env


def statuses(db: Path) -> dict[str, str]:
    with warehouse.connect(db) as con:  # ledger.read creates the table if missing
        table = ledger.read(con)
    return {f"{d}/{s}": n for d, s, n in ledger.counts(table).iter_rows()}


SECRETS = {f"/{n}": f"s-{n}" for n in ("inapp", "crm", "slack")}


def test_dead_letters_are_retried_with_the_cli(tmp_path):
    with Receiver(SECRETS) as rx:
        db, env = dead_letter_world(tmp_path, rx.base_url)
        assert statuses(db)["slack/dead_letter"] == 2
        plain = [sys.executable, "-m", "plg_pipeline.lib.delivery", "--warehouse", str(db),
                 "--config-dir", str(tmp_path / "config")]  # fmt: skip
        subprocess.run(plain, env=env, check=True, capture_output=True)
        assert statuses(db)["slack/dead_letter"] == 2  # dead letters wait for an explicit retry
        subprocess.run([*plain, "--retry-dead-letters"], env=env, check=True, capture_output=True)
        assert "slack/dead_letter" not in statuses(db) and statuses(db)["slack/delivered"] == 2
        assert set(rx.applied().values()) == {1}


def test_dead_letters_are_retried_by_action_job_config(tmp_path, dbt_manifest, monkeypatch):
    from plg_pipeline.definitions import defs
    from plg_pipeline.defs.actions.assets import ActionConfig

    with Receiver(SECRETS) as rx:
        db, env = dead_letter_world(tmp_path, rx.base_url)
        for name, value in env.items():
            if name.startswith("PLG_"):
                monkeypatch.setenv(name, value)
        use(monkeypatch, tmp_path, tmp_path)
        monkeypatch.setenv("PLG_WAREHOUSE", str(db))
        monkeypatch.setenv("PLG_CONFIG_DIR", str(tmp_path / "config"))
        result = defs.resolve_job_def("action_job").execute_in_process(
            run_config=dg.RunConfig(
                {"marts__action_deliveries": ActionConfig(retry_dead_letters=True)}
            )
        )
        assert result.success
        meta = result.asset_materializations_for_node("marts__action_deliveries")[0].metadata
        assert meta["revived_dead_letters"].value == 2
        assert "slack/dead_letter" not in statuses(db) and statuses(db)["slack/delivered"] == 2
        assert set(rx.applied().values()) == {1}
