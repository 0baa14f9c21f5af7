"""The benchmark: it runs end to end on a tiny world, and its pandas baseline computes the same."""

from __future__ import annotations

import re
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from plg_pipeline import bench
from plg_pipeline.bench_pandas import COMPARED, run_pandas
from plg_pipeline.cli import main
from plg_pipeline.lib import ingest, lake
from plg_pipeline.lib.generator import accounts_for_events, generate

EVENTS, DAYS = 20_000, 33


def test_bench_prints_every_figure(tmp_path, capsys):
    code = main(
        [
            "bench",
            f"--events={EVENTS}",
            f"--days={DAYS}",
            f"--work={tmp_path}",
            "--pandas-events=4000",
            "--repeats=2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    figures = [
        "ingest",
        "identity",
        "sessions",
        "account_daily",
        "end to end",
        "duckdb read_json (floor before)",
        "duckdb read_json (floor after)",
        "pandas (",
        "incremental day 31 after 30",
        f"incremental day {DAYS} after {DAYS - 1}",
    ]
    lines = [line for line in out.splitlines() if " ev/s" in line and line[0] != " "]
    rows = {line.split("  ")[0] for line in lines}
    # each figure says how much CPU the VM's host took while it ran (0-100%)
    assert all(0 <= int(re.search(r" (\d+)%$", line)[1]) <= 100 for line in lines), out
    for name in figures:
        assert any(r.startswith(name) for r in rows), (name, out)
    verdicts = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert len(verdicts) == 8 and set(verdicts) <= {"PASS", "FAIL"}, out
    assert "PASS each extra day equals a full build of the same days: yes" in out, out
    days = ingest.arrival_days(tmp_path / "raw")
    for label in ("day 31 after 30", f"day {DAYS} after {DAYS - 1}"):
        spent = re.search(
            rf"^{label}: (.*); (\d+) date\(s\) rebuilt from (\S+)(, .*)?; the median of runs of (.*) s$",
            out,
            re.M,
        )
        assert spent and int(spent[2]) > 0, out
        assert date.fromisoformat(spent[3]) <= days[int(label.split()[1]) - 1], out
        assert len(spent[5].split(", ")) == 2, out
        parts = dict(part.rsplit(" ", 2)[:2] for part in spent[1].split(", "))
        assert list(parts) == ["ingest", "identity", "activity tables", "writes"], out
        assert all(float(seconds) > 0 for seconds in parts.values()), out
    # the lake the stages wrote has every arrival day and a full account_daily
    assert len(days) >= DAYS
    assert len(lake.partition_files(tmp_path / "lake", "events")) == len(days)
    assert lake.scan_dates(tmp_path / "lake", "account_daily").collect().height > 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    raw = tmp_path_factory.mktemp("world")
    generate(raw, accounts=accounts_for_events(EVENTS, 35), days=35, seed=3, fmt="jsonl.gz")
    return raw


def test_pandas_baseline_counts_what_polars_counts(world, tmp_path):
    """Same account_daily counts from both paths, so the speed ratio compares like with like."""
    lake_dir = tmp_path / "lake"
    rows = bench.stage_ingest(world, lake_dir)["rows_in"]
    bench.stage_downstream(world, lake_dir)
    ours = lake.scan_dates(lake_dir, "account_daily").sort("account_id", "date").collect()
    ours = ours.select(COMPARED)

    theirs = run_pandas(world, ingest.arrival_days(world), bench.BENCH_HASH_KEY)
    assert theirs["rows_in"] == rows
    pandas_daily = pl.from_pandas(theirs["account_daily"]).cast(ours.schema)
    assert ours["events"].sum() > 10_000 and ours["sessions"].sum() > 0
    assert_frame_equal(pandas_daily, ours)


def test_an_extra_day_is_the_median_of_its_runs_and_any_run_that_differs_counts():
    runs = [
        {"seconds": 3.0, "differ": []},
        {"seconds": 1.0, "differ": ["sessions"]},
        {"seconds": 2.0, "differ": []},
    ]
    median = bench._median_run(runs)
    assert median["seconds"] == 2.0 and median["runs"] == [3.0, 1.0, 2.0]
    assert median["differ"] == ["sessions"]
    assert bench._median_run(runs[:2])["seconds"] == 1.0
