"""The whole graph on a small generated world, run twice: what issue 2 calls done.

One fixture generates the world, materializes every arrival day, snapshots the marts,
then materializes the same range again; the tests read the tables the runs left behind.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from plg_pipeline.lib.ingest import load_ingest_config
from plg_pipeline_tests.e2e_fixtures import (
    all_frames,
    failures,
    find_ips,
    find_substrings,
    make_world,
    materialize,
    read_warehouse,
    table_differences,
    truth_pii,
)

pytestmark = pytest.mark.slow

RUN_TIMESTAMPS = {
    # Columns that record when this run did something, not what the data says.
    "erasure_log": ["erased_at"],
    "action_deliveries": ["created_at", "updated_at", "delivered_at", "next_attempt_at"],
}
CONTRACT = {  # CONTRACT.md section 7: table -> columns it has at least
    "identity_map": ["id", "id_type", "canonical_user_id"],
    "account_daily": ["account_id", "date", "active_users", "seats", "events"],
    "pql_scores": ["account_id", "as_of_date", "score", "tier"],
    "trigger_candidates": [
        "trigger_id",
        "account_id",
        "user_id",
        "trigger_type",
        "as_of_date",
        "route",
        "suppressed",
        "suppression_reason",
        "holdout",
    ],
    "action_deliveries": ["trigger_id", "destination", "status", "attempts", "delivered_at"],
    "quarantined_events": ["source_file", "line", "reason", "raw"],
}


@pytest.fixture(scope="session")
def runs(tmp_path_factory, dbt_manifest):
    world = make_world(tmp_path_factory.mktemp("e2e"), accounts=30, days=24)
    first = materialize(world)
    assert first.success, failures(first)
    before = read_warehouse(world.warehouse)
    second = materialize(world)
    assert second.success, failures(second)
    return world, first, before, read_warehouse(world.warehouse)


@pytest.fixture(scope="session")
def marts(runs) -> dict[str, pl.DataFrame]:
    return runs[3]


def raw_lines(raw) -> pl.DataFrame:
    """Every parseable raw event line: message id, its dt folder, file, line and timestamp."""
    rows = []
    for path in sorted((raw / "events").rglob("*.jsonl")):
        dt = date.fromisoformat(path.parent.name.removeprefix("dt="))
        for n, text in enumerate(path.read_text().splitlines(), 1):
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("messageId"), str):
                rows.append((obj["messageId"], dt, path.relative_to(raw).as_posix(), n, text))
    return pl.DataFrame(
        rows, schema=["event_id", "dt", "source_file", "line", "text"], orient="row"
    )


def test_every_step_and_blocking_check_succeeds(runs):
    _, first, _, _ = runs
    assert first.success
    checks = first.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]


def test_rows_are_accounted_for_per_arrival_day_from_the_tables(runs, marts):
    world = runs[0]
    lookback = load_ingest_config().dedup_lookback_days
    stats = pl.read_parquet(world.lake / "ingest_stats" / "*.parquet")
    validated = pl.read_parquet(world.lake / "events_validated" / "*.parquet")
    events = marts["events"]
    quarantine = marts["quarantined_events"].filter(pl.col("source") == "events")
    assert stats["arrival_date"].sort().to_list() == world.days
    assert events["event_id"].is_unique().all(), "a message id is counted twice in marts.events"
    first_arrival = events.select("event_id", first=pl.col("arrival_date"))
    for day in world.days:
        s = stats.filter(pl.col("arrival_date") == day).row(0, named=True)
        accepted = events.filter(pl.col("arrival_date") == day).height
        quarantined = quarantine.filter(pl.col("arrival_date") == day).height
        todays = validated.filter(pl.col("arrival_date") == day)
        cross_day = todays.join(
            events.filter(pl.col("arrival_date") == day), on="event_id", how="anti"
        )
        # every cross-day duplicate was accepted on an earlier arrival day within the lookback
        earlier = cross_day.join(first_arrival, on="event_id", how="left")["first"]
        assert earlier.is_not_null().all(), day
        assert ((earlier < day) & (earlier >= day - timedelta(days=lookback))).all(), day
        total = accepted + quarantined + s["duplicates_in_day"] + cross_day.height + s["erased"]
        assert s["rows_in"] == total, (day, s, accepted, quarantined, cross_day.height)
    # rows in, counted from the raw files themselves, on days that hold only plain JSONL
    plain_days = 0
    for day in world.days:
        files = list((world.raw / "events" / f"dt={day}").iterdir())
        if all(f.name.endswith(".jsonl") for f in files):
            plain_days += 1
            # an empty file is quarantined as one row (line 0), so it is never lost
            lines = sum(max(1, len(f.read_text().splitlines())) for f in files)
            rows_in = stats.filter(pl.col("arrival_date") == day)["rows_in"][0]
            assert rows_in == lines, day
    assert plain_days > len(world.days) // 2


def test_every_bad_input_kind_is_quarantined_with_its_reason(runs, marts):
    world = runs[0]
    bad = pl.read_csv(world.raw / "_truth" / "bad_lines.csv", schema_overrides={"line": pl.Int64})
    quarantine = marts["quarantined_events"]
    assert quarantine["reason"].is_not_null().all()
    assert (quarantine["reason"].str.len_chars() > 0).all()
    # a whole-file problem (empty, truncated) has no line in the truth: any row of the file counts
    joined = bad.join(
        quarantine.rename({"source_file": "file"}), on="file", how="inner", suffix="_q"
    ).filter(pl.col("line").is_null() | (pl.col("line") == pl.col("line_q")))
    found = joined.unique(["file", "line", "kind"])
    missing = bad.join(found, on=["file", "kind"], how="anti")
    assert missing.is_empty(), missing
    kinds = set(bad["kind"].to_list())
    assert set(found["kind"].to_list()) == kinds
    assert len(kinds) >= 15  # the generator's whole catalogue of bad inputs is exercised


def test_a_retry_in_a_later_folder_is_counted_once(runs, marts):
    lines = raw_lines(runs[0].raw)
    spans = lines.group_by("event_id").agg(
        first=pl.col("dt").min(), last=pl.col("dt").max(), n=pl.len()
    )
    retried = spans.filter(pl.col("last") > pl.col("first")).sort("event_id")
    assert retried.height > 0, "the generator wrote no cross-day retry"
    events = marts["events"]
    for row in retried.head(5).iter_rows(named=True):
        kept = events.filter(pl.col("event_id") == row["event_id"])
        assert kept.height == 1, row
        assert kept["arrival_date"][0] == row["first"], row


def test_a_late_event_keeps_its_own_event_date(runs, marts):
    lines = raw_lines(runs[0].raw)
    late = marts["events"].filter(
        pl.col("event_date") < pl.col("arrival_date") - pl.duration(days=1)
    )
    assert late.height > 0, "the generator wrote no late event"
    sample = late.sort("event_id").head(20).join(lines, on=["source_file", "line"])
    assert sample.height == min(20, late.height)
    for row in sample.iter_rows(named=True):
        stamp = json.loads(row["text"])["timestamp"]
        utc = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        assert row["event_date"] == utc.date(), row
        assert row["event_id"] == row["event_id_right"]


def test_no_email_name_or_full_ip_anywhere(runs):
    world = runs[0]
    pii = truth_pii(world.raw)
    words = pii["email"] + pii["name"]
    ips = set(pii["ip"])
    assert words and ips
    leaks = defaultdict(dict)
    scanned = 0
    for where, frame in all_frames(world):
        scanned += 1
        for column, hits in {**find_substrings(frame, words), **find_ips(frame, ips)}.items():
            leaks[where][column] = hits[:3]
    assert scanned > 30
    assert not leaks, dict(leaks)


def test_emails_are_kept_only_as_their_hmac(runs, marts):
    from plg_pipeline.lib.pii import hmac_hex

    world = runs[0]
    emails = pl.Series(truth_pii(world.raw)["email"]).str.to_lowercase()
    digests = set(hmac_hex(emails, world.env()["PLG_HASH_KEY"]).to_list())
    seen = set(marts["events"]["email_hash"].drop_nulls().to_list())
    assert seen and seen <= digests
    assert marts["events"]["context_ip"].drop_nulls().str.ends_with(".0/24").all()


def test_a_second_run_of_the_same_range_changes_no_marts_table(runs):
    _, _, before, after = runs
    assert len(before) > 20
    assert not table_differences(before, after, RUN_TIMESTAMPS)


def test_public_tables_follow_the_contract(marts):
    for table, columns in CONTRACT.items():
        assert table in marts, table
        assert set(columns) <= set(marts[table].columns), (table, columns)
    scores = marts["pql_scores"]
    assert scores.height > 0
    assert scores["score"].is_between(0, 100).all()
    assert set(scores["tier"].unique().to_list()) <= {"low", "medium", "high"}
    ids = marts["identity_map"]
    assert set(ids["id_type"].unique().to_list()) <= {"user", "anonymous"}
    assert ids["id"].is_unique().all()
    assert marts["account_daily"].select("account_id", "date").is_unique().all()
    assert marts["trigger_candidates"]["trigger_id"].is_unique().all()
