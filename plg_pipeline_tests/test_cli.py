"""`plg-pipeline generate` and `plg-pipeline run` as a user runs them: real subprocesses on a
tiny world, a local Dagster home, and config overrides that must stop the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from plg_pipeline.lib.configfile import PACKAGE_CONFIG_DIR
from plg_pipeline_tests.e2e_fixtures import (
    dagster_home,
    read_warehouse,
    table_differences,
    warehouse_tables,
)

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "plg-pipeline")
RUN_TIMESTAMPS = {"erasure_log": ["erased_at"], "action_deliveries": ["updated_at", "delivered_at"]}
"""Columns recording when the run did something; excluded from the second-run comparison."""


def cli(*args: str, cwd: Path, config_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLG_")}
    env.update(PLG_HASH_KEY="cli-test-key", DAGSTER_HOME=str(cwd / "dagster_home"))
    if config_dir is not None:
        env["PLG_CONFIG_DIR"] = str(config_dir)
    return subprocess.run(
        [CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, dbt_manifest) -> Path:
    """A generated tiny raw root, shared (read-only) by every test here."""
    base = tmp_path_factory.mktemp("cli")
    out = cli(
        "generate", "--out", "raw", "--accounts", "10", "--days", "8", "--bad-rate", "0.01",
        cwd=base,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "events" in out.stdout
    return base / "raw"


def workdir(tmp_path: Path) -> Path:
    dagster_home(tmp_path / "dagster_home")
    return tmp_path


def run(tiny: Path, cwd: Path, config_dir: Path | None = None) -> subprocess.CompletedProcess:
    return cli("run", "--raw", str(tiny), "--warehouse", "wh/warehouse.duckdb", cwd=cwd,
               config_dir=config_dir)  # fmt: skip


def override(tmp_path: Path, name: str, edit) -> Path:
    """A PLG_CONFIG_DIR holding one edited copy of a packaged config file."""
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    data = yaml.safe_load((PACKAGE_CONFIG_DIR / name).read_text())
    edit(data)
    (folder / name).write_text(yaml.safe_dump(data))
    return folder


def test_generate_then_run_twice(tiny, tmp_path):
    cwd = workdir(tmp_path)
    first = run(tiny, cwd)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert "success" in first.stdout and "marts.events" in first.stdout, first.stdout
    assert "0 failed" in first.stdout
    warehouse = cwd / "wh" / "warehouse.duckdb"
    tables = {t for s, t in warehouse_tables(warehouse) if s == "marts"}
    expected = {"events", "quarantined_events", "identity_map", "account_daily", "pql_scores"}
    assert expected | {"trigger_candidates", "action_deliveries", "erasure_log"} <= tables
    before = read_warehouse(warehouse)
    assert before["events"].height > 0 and before["account_daily"].height > 0
    assert not (cwd / "data").exists()  # nothing written to default paths

    second = run(tiny, cwd)
    assert second.returncode == 0, second.stderr[-4000:]
    assert not table_differences(before, read_warehouse(warehouse), RUN_TIMESTAMPS)


def test_run_exits_non_zero_when_a_blocking_check_fails(tiny, tmp_path):
    cwd = workdir(tmp_path)
    config = override(tmp_path, "quality.yaml", lambda d: d.update(min_identity_match_rate=0.9999))
    out = run(tiny, cwd, config)
    assert out.returncode != 0, out.stdout[-3000:]
    assert "FAILED" in out.stdout
    assert "events_are_attributed_to_users_and_accounts" in out.stdout, out.stdout[-3000:]
    # the blocking check stopped everything downstream of the checked asset
    tables = {t for s, t in warehouse_tables(cwd / "wh" / "warehouse.duckdb") if s == "marts"}
    assert "pql_scores" not in tables


def test_a_bad_config_file_fails_the_run_naming_file_and_key(tiny, tmp_path):
    cwd = workdir(tmp_path)

    def unbalance(data):
        data["components"][0]["weight"] += 7

    config = override(tmp_path, "scoring.yaml", unbalance)
    out = run(tiny, cwd, config)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"config error: {config / 'scoring.yaml'}: components" in out.stderr, out.stderr
    assert "sum to 100" in out.stderr
    assert not (cwd / "wh").exists()  # stopped before any step ran


def test_a_malformed_quality_threshold_names_its_key(tiny, tmp_path):
    cwd = workdir(tmp_path)
    config = override(tmp_path, "quality.yaml", lambda d: d.update(min_identity_match_rate=1.5))
    out = run(tiny, cwd, config)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"{config / 'quality.yaml'}: min_identity_match_rate" in out.stderr, out.stderr


def test_generate_writes_the_contract_layout(tiny):
    assert sorted(p.name for p in tiny.iterdir() if not p.name.startswith("_")) == [
        "billing",
        "config",
        "crm",
        "events",
        "privacy",
    ]
    days = sorted((tiny / "events").glob("dt=*"))
    assert len(days) >= 8
    assert pl.read_csv(tiny / "crm" / "accounts.csv").height >= 10
