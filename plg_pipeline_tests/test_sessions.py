"""Sessionisation edge cases: the gap rule, midnight, late events, time zones, date ranges."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from plg_pipeline.lib.sessions import SessionConfig, sessionize
from plg_pipeline_tests.test_identity import make_events

CFG = SessionConfig()


def attributed(rows: list[dict]) -> pl.LazyFrame:
    """Events already stitched: canonical_user_id = user_id, account from the row."""
    return make_events(rows).with_columns(canonical_user_id=pl.col("user_id"))


def run(rows: list[dict], cfg: SessionConfig = CFG, dates=None) -> pl.DataFrame:
    return (
        sessionize(attributed(rows), cfg, dates)
        .collect()
        .sort("canonical_user_id", "session_start")
    )


def at(hh: int, mm: int = 0, ss: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 3, day, hh, mm, ss)


def test_gap_exactly_at_threshold_continues_and_one_second_more_splits():
    rows = [
        {"user_id": "u", "event_time": at(9)},
        {"user_id": "u", "event_time": at(9, 30)},  # exactly 30 min: same session
        {"user_id": "u", "event_time": at(10, 0, 1)},  # 30 min 1 s: new session
    ]
    out = run(rows)
    assert out["events"].to_list() == [2, 1]
    assert out["duration_s"].to_list() == [1800.0, 0.0]


def test_session_crossing_midnight_belongs_to_start_day():
    out = run(
        [
            {"user_id": "u", "event_time": at(23, 50)},
            {"user_id": "u", "event_time": at(0, 10, day=3)},
        ]
    )
    assert out.select("session_date", "events", "duration_s").rows() == [
        (date(2026, 3, 2), 2, 1200.0)
    ]


def test_mixed_time_zones_order_by_instant():
    # 10:00+02:00 is 08:00 UTC, 09:20-05:00 is 14:20 UTC; 08:10Z is ten minutes after the first
    out = run(
        [
            {"user_id": "u", "event_time": "2026-03-02T10:00:00+02:00"},
            {"user_id": "u", "event_time": "2026-03-02T09:20:00-05:00"},
            {"user_id": "u", "event_time": "2026-03-02T08:10:00+00:00"},
        ]
    )
    assert out["events"].to_list() == [2, 1]
    assert out["session_start"].dt.hour().to_list() == [8, 14]


def test_late_event_bridges_two_sessions_and_ids_are_order_independent():
    early = [
        {"user_id": "u", "event_time": at(9), "account_id": "acc"},
        {"user_id": "u", "event_time": at(9, 50), "account_id": "acc"},
        {"user_id": "v", "event_time": at(9), "account_id": "acc"},
    ]
    before = run(early)
    assert before.filter(pl.col("canonical_user_id") == "u").height == 2
    late = {
        "user_id": "u",
        "event_time": at(9, 25),
        "account_id": "acc",
        "arrival_date": date(2026, 3, 5),
    }
    after = run([late, *early])
    u = after.filter(pl.col("canonical_user_id") == "u")
    assert u.select("events", "duration_s").rows() == [(3, 3000.0)]
    # the untouched session of v keeps its id; u's first session keeps its id (same start)
    assert after.filter(pl.col("canonical_user_id") == "v")["session_id"].to_list() == (
        before.filter(pl.col("canonical_user_id") == "v")["session_id"].to_list()
    )
    assert u["session_id"][0] == before["session_id"][0]
    assert_frame_equal(after, run(list(reversed([late, *early]))))


def test_users_are_sessionised_apart_and_bookkeeping_calls_ignored():
    out = run(
        [
            {"user_id": "u", "event_time": at(9)},
            {"user_id": "v", "event_time": at(9, 1)},
            {"user_id": "u", "type": "identify", "event_time": at(9, 10)},
            {"user_id": "u", "event_time": at(9, 20)},
        ]
    )
    assert out.select("canonical_user_id", "events").rows() == [("u", 2), ("v", 1)]
    assert out["session_id"].n_unique() == 2


def test_date_range_keeps_true_start_of_session_running_into_it():
    rows = [
        {"user_id": "u", "event_time": at(23, 55, day=1)},
        {"user_id": "u", "event_time": at(0, 20, day=2)},
        {"user_id": "u", "event_time": at(12, day=2)},
    ]
    full = run(rows)
    ranged = run(rows, dates=(date(2026, 3, 2), date(2026, 3, 2)))
    assert_frame_equal(ranged, full.filter(pl.col("session_date") == date(2026, 3, 2)))
    assert ranged.height == 1


def test_configurable_gap():
    rows = [{"user_id": "u", "event_time": at(9)}, {"user_id": "u", "event_time": at(9, 10)}]
    assert run(rows, SessionConfig(inactivity_gap_minutes=5)).height == 2
    with pytest.raises(ValueError):
        SessionConfig(inactivity_gap_minutes=0)


def test_account_is_first_known_account_of_session():
    out = run(
        [
            {"user_id": "u", "event_time": at(9)},
            {"user_id": "u", "event_time": at(9, 5), "account_id": "b"},
            {"user_id": "u", "event_time": at(9, 6), "account_id": "a"},
        ]
    )
    assert out["account_id"].to_list() == ["b"]
    assert out["session_start"].to_list()[0] == at(9).replace(tzinfo=UTC)
    assert timedelta(seconds=out["duration_s"][0]) == timedelta(minutes=6)


def test_simultaneous_first_events_count_for_the_least_account_in_any_order():
    rows = [
        {"user_id": "u", "event_time": at(9)},
        {"user_id": "u", "event_time": at(9, 5), "account_id": "b"},
        {"user_id": "u", "event_time": at(9, 5), "account_id": "a"},
        {"user_id": "u", "event_time": at(9, 6), "account_id": "0"},
    ]
    assert run(rows)["account_id"].to_list() == ["a"]
    assert run(list(reversed(rows)))["account_id"].to_list() == ["a"]


def reference_sessions(rows: list[dict], gap: timedelta) -> list[tuple]:
    """Sessions by the rule, walked in Python: (user, account, start, end, events)."""
    out = []
    for user in sorted({r["user_id"] for r in rows}):
        mine = [(r["event_time"], r["account_id"]) for r in rows if r["user_id"] == user]
        times = sorted(mine, key=lambda event: event[0])
        runs: list[list] = []
        for when, account in times:
            if runs and when - runs[-1][-1][0] <= gap:
                runs[-1].append((when, account))
            else:
                runs.append([(when, account)])
        for run_ in runs:
            known = [(w, a) for w, a in run_ if a is not None]
            account = min(known)[1] if known else None
            out.append((user, account, run_[0][0], run_[-1][0], len(run_)))
    return sorted(out, key=lambda s: (s[0], s[2]))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u", "v", "w"]),
            st.integers(0, 6 * 60),  # minutes after 20:00, over midnight too
            st.sampled_from([None, "a", "b", "c"]),
        ),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([5, 30, 45]),
)
def test_sessions_match_a_plain_walk_of_each_users_events(events, gap_minutes):
    rows = [
        {
            "user_id": user,
            "event_time": datetime(2026, 3, 2, 20, tzinfo=UTC) + timedelta(minutes=minute),
            "account_id": account,
        }
        for user, minute, account in events
    ]
    got = run(rows, SessionConfig(inactivity_gap_minutes=gap_minutes))
    want = reference_sessions(rows, timedelta(minutes=gap_minutes))
    assert (
        got.select(
            "canonical_user_id", "account_id", "session_start", "session_end", "events"
        ).rows()
        == want
    )
    assert got["session_id"].n_unique() == got.height
    assert (got["session_date"] == got["session_start"].dt.date()).all()


def test_many_shuffled_events_match_the_plain_walk():
    # thousands of sessions, in an order far from sorted
    rng = random.Random(11)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    rows = [
        {
            "user_id": f"u{rng.randrange(300)}",
            "event_time": start + timedelta(minutes=rng.randrange(3 * 24 * 60)),
            "account_id": rng.choice([None, "a", "b"]),
        }
        for _ in range(20_000)
    ]
    got = run(rows).select(
        "canonical_user_id", "account_id", "session_start", "session_end", "events"
    )
    want = reference_sessions(rows, timedelta(minutes=30))
    assert got.height > 5_000 and got.rows() == want
