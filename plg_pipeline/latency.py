"""Event-to-action latency of a local deployment: land a new arrival day, time its delivery.

    python -m plg_pipeline.latency --accounts 200 --days 90 --workdir /tmp/plg-latency

Generates a world, processes all but its last arrival day with `plg-pipeline run`, starts
`dagster dev` (webserver + daemon) on a throwaway DAGSTER_HOME, waits for the sensors' first
ticks, then renames the held-back day's folder into the raw root and times: the ingestion run,
the automation run, the action run and the first delivery the local receiver gets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path

import httpx
import yaml

from plg_pipeline.lib.delivery import load_destinations
from plg_pipeline.lib.generator import generate
from plg_pipeline.lib.ingest import arrival_days
from plg_pipeline.lib.slas import slas
from plg_pipeline.receiver import Receiver

REPO = Path(__file__).resolve().parent.parent
START = date(2026, 6, 1)
BIN = Path(sys.executable).parent
LOW_LATENCY_INSTANCE = {
    # the daemon picks queued runs up every second instead of every five
    "run_coordinator": {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    },
    "sensors": {"use_threads": True, "num_workers": 4},
}
"""The project's dagster.yaml plus the production settings that matter for latency and order."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_instance(home: Path, extra: Mapping | None = None) -> Path:
    """DAGSTER_HOME with the project's dagster.yaml, plus `extra` top-level keys."""
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    prod = yaml.safe_load((REPO / "deploy" / "dagster.prod.yaml").read_text())
    runs = config.setdefault("concurrency", {}).setdefault("runs", {})
    runs.setdefault("tag_concurrency_limits", prod["concurrency"]["runs"]["tag_concurrency_limits"])
    config.update(extra or {})
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def pipeline_env(home: Path, raw: Path, warehouse: Path, receiver: Receiver) -> dict[str, str]:
    """Environment of every process: instance, paths, and the receiver as every destination."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PLG_RAW_DIR": str(raw),
        "PLG_WAREHOUSE": str(warehouse),
        "PLG_HASH_KEY": os.environ.get("PLG_HASH_KEY", "latency-hash-key"),
        # `dagster dev` re-parses dbt with plain `dbt`: the venv's one, even when not activated
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for name, dest in load_destinations().destinations.items():
        env[dest.url_env] = f"{receiver.base_url}/{name}"
        env[dest.secret_env] = receiver.secrets[f"/{name}"]
    return env


def receiver_for_destinations() -> Receiver:
    names = load_destinations().destinations
    return Receiver({f"/{name}": secrets.token_hex(16) for name in names})


class DagsterDev:
    """`dagster dev` (webserver, daemon, code server) in its own process group, stopped cleanly.

    Started from Python, not a shell `&`, so it keeps its SIGINT handler (DAGSTER_NOTES pitfall 3).
    """

    def __init__(self, env: Mapping[str, str], cwd: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(self.port),
               "-m", "plg_pipeline.definitions"]  # fmt: skip
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def graphql(self, query: str, variables: Mapping | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body["data"]

    def wait_loaded(self, timeout_s: float = 180) -> None:
        query = "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError, RuntimeError):
                entries = self.graphql(query)["workspaceOrError"]["locationEntries"]
                kinds = [
                    e["locationOrLoadError"]["__typename"]
                    for e in entries
                    if e["locationOrLoadError"]
                ]
                if "PythonError" in kinds:
                    raise RuntimeError(f"code location failed to load: see {self._log.name}")
                if kinds == ["RepositoryLocation"]:
                    return
            time.sleep(0.5)
        raise TimeoutError("dagster dev did not load the code location")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own process group only
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> DagsterDev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def sensor_ticked(instance, name: str, after: float) -> bool:
    """Whether sensor `name` has finished a tick that started after `after` (epoch seconds)."""
    from dagster._core.scheduler.instigation import TickStatus

    states = [s for s in instance.all_instigator_state() if s.name == name]
    done = (TickStatus.SUCCESS, TickStatus.SKIPPED)
    return any(
        tick.timestamp > after and tick.status in done
        for state in states
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3)
    )


def run_timeline(instance, since: float) -> list[dict]:
    """Runs created after `since`: job, partition, status and start/end relative to `since`."""
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(created_after=_utc(since)))
    rows = []
    for rec in sorted(records, key=lambda r: r.create_timestamp.timestamp()):
        rows.append(
            {
                "job": rec.dagster_run.job_name,
                "partition": rec.dagster_run.tags.get("dagster/partition"),
                "status": rec.dagster_run.status.value,
                "created_s": round(rec.create_timestamp.timestamp() - since, 1),
                "start_s": round(rec.start_time - since, 1) if rec.start_time else None,
                "end_s": round(rec.end_time - since, 1) if rec.end_time else None,
            }
        )
    return rows


def _utc(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC)


@contextlib.contextmanager
def deployment(workdir: Path, raw: Path, warehouse: Path, rx: Receiver) -> Iterator[tuple]:
    """A running `dagster dev` over `raw`/`warehouse`, with sensors and automation ticking."""
    home = write_instance(workdir / "dagster_home", LOW_LATENCY_INSTANCE)
    env = pipeline_env(home, raw, warehouse, rx)
    with DagsterDev(env, cwd=workdir, log=workdir / "dagster_dev.log") as dev:
        dev.wait_loaded()
        import dagster as dg

        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield dev, instance, env


def initial_build(env: Mapping[str, str], home: Path, raw: Path) -> None:
    """The history before the sensors take over: every asset on the way to delivery.

    The dbt metric marts are left out: nothing between a landed file and a delivery reads them.
    """
    import dagster as dg

    from plg_pipeline.defs.common import marts
    from plg_pipeline.defs.ops.jobs import ARRIVAL_DAY_ASSETS

    os.environ.update(env)  # the definitions' resources read their settings from it
    from plg_pipeline.definitions import defs

    path = dg.AssetSelection.assets(marts("action_deliveries")).upstream().materializable()
    keys = (path.required_multi_asset_neighbors() | ARRIVAL_DAY_ASSETS).resolve(
        defs.resolve_asset_graph()
    )
    days = arrival_days(raw)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = defs.resolve_job_def("pipeline_job").execute_in_process(
            instance=instance,
            asset_selection=list(keys),
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            },
        )
    if not result.success:
        raise RuntimeError("the initial build failed")


def measure(
    workdir: Path, accounts: int = 200, days: int = 90, timeout_s: float = 600, held_days: int = 2
) -> dict[str, object]:
    """Process all but the last `held_days` days of activity, then time them from landing to delivery.

    The last day alone often fires no deliverable trigger (cool-downs, holdout), so two land.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    world, raw, warehouse = workdir / "world", workdir / "raw", workdir / "wh" / "warehouse.duckdb"
    for path in (world, raw, warehouse.parent, workdir / "dagster_home"):
        shutil.rmtree(path, ignore_errors=True)
    generate(world, accounts=accounts, days=days, start=START)
    # the last days of activity land, with the stragglers that arrived after them
    held = [d for d in arrival_days(world) if d >= START + timedelta(days=days - held_days)]
    hidden = [f"dt={d}" for d in held]
    shutil.copytree(world, raw, ignore=shutil.ignore_patterns(*hidden, "_truth"))
    with receiver_for_destinations() as rx:
        home = write_instance(workdir / "dagster_home", LOW_LATENCY_INSTANCE)
        env = pipeline_env(home, raw, warehouse, rx)
        began = time.monotonic()
        initial_build(env, home, raw)
        backfill_s = time.monotonic() - began
        delivered_before = len(rx.effects)
        with deployment(workdir, raw, warehouse, rx) as (_, instance, _env):
            ready = time.time()
            for name in ("raw_arrival_sensor", "downstream_automation_sensor", "action_sensor"):
                wait_for(lambda n=name: sensor_ticked(instance, n, ready), 120, f"{name} tick")
            wait_for(lambda: not _in_flight(instance), 300, "start-up runs to finish")
            for day in held:
                shutil.copytree(world / "events" / f"dt={day}", raw / "events" / f".dt={day}")
            landed = time.time()
            for day in held:  # each folder appears whole (rename), all within a millisecond
                (raw / "events" / f".dt={day}").rename(raw / "events" / f"dt={day}")
            action_done = wait_for(
                lambda: _finished_action_run(instance, landed), timeout_s, "the action run"
            )
            timeline = run_timeline(instance, landed)
        new = [r for r in rx.requests if r.at >= landed and r.outcome == "applied"]
        first = min((r.at for r in new), default=None)
    return {
        "accounts": accounts,
        "days": days,
        "landed_days": [d.isoformat() for d in held],
        "landed_bytes": sum(
            p.stat().st_size for d in held for p in (raw / "events" / f"dt={d}").iterdir()
        ),
        "initial_backfill_s": round(backfill_s, 1),
        "deliveries_before": delivered_before,
        "new_deliveries": len(new),
        "first_delivery_s": None if first is None else round(first - landed, 1),
        "action_run_finished_s": round(action_done - landed, 1),
        "action_run_status": timeline[-1]["status"] if timeline else None,
        "sla_s": slas().event_to_action_seconds,
        "goal_s": slas().event_to_action_goal_seconds,
        "runs": timeline,
    }


def _in_flight(instance) -> bool:
    import dagster as dg

    waiting = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
    statuses = [dg.DagsterRunStatus(s) for s in waiting]
    return bool(instance.get_runs(dg.RunsFilter(statuses=statuses)))


def _finished_action_run(instance, since: float) -> float | None:
    import dagster as dg

    records = instance.get_run_records(
        dg.RunsFilter(job_name="action_job", created_after=_utc(since))
    )
    ended = [r.end_time for r in records if r.dagster_run.is_finished and r.end_time]
    return min(ended) if ended else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/plg-latency")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--held-days", type=int, default=2, help="days of activity that land")
    args = parser.parse_args(argv)
    # a plain `kill` still stops `dagster dev` and the receiver on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from plg_pipeline.manifest import ensure_dbt_manifest

    ensure_dbt_manifest()
    result = measure(Path(args.workdir), args.accounts, args.days, args.timeout, args.held_days)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
