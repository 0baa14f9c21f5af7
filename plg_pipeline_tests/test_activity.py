"""user_daily / account_daily: figures on a hand-made day, brute-force windows, incremental == full."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from plg_pipeline.lib.activity import (
    _FLAGGED_ROLES,
    ACTIVATION_COLUMNS,
    ActivityConfig,
    ActivityTables,
    _flags,
    _quotient,
    account_daily,
    activation_candidates,
    activity_tables,
    affected_dates,
    billing_changed_from,
    changed_users,
    changes_from,
    first_activations,
    load_activity_config,
    rebuild_note,
    recompute_range,
    user_daily,
)
from plg_pipeline.lib.catalog import Role, load_catalog
from plg_pipeline.lib.configfile import ConfigError
from plg_pipeline.lib.identity import (
    IdentityFacts,
    attribute_events,
    memberships,
    update_identity,
)
from plg_pipeline.lib.plans import LIMIT_NAMES, load_plans
from plg_pipeline.lib.schemas import BILLING_SCHEMA
from plg_pipeline.lib.sessions import sessionize
from plg_pipeline_tests.test_identity import make_events

CAT, PLANS, CFG = load_catalog(), load_plans(), ActivityConfig()
D0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def billing(rows: list[tuple]) -> pl.LazyFrame:
    full = [
        (f"b{i}", acc, at, plan, seats, mrr, "active", "upgrade", 0.0)
        for i, (acc, at, plan, seats, mrr) in enumerate(rows)
    ]
    return pl.DataFrame(full, schema=BILLING_SCHEMA, orient="row").lazy()


def pipeline(rows: list[dict]) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """attributed events, sessions and memberships through the real identity stage."""
    events = make_events(rows)
    state, _ = update_identity(None, events, CFG.identity)
    members = memberships(events, state.identity_map).collect().lazy()
    attributed = attribute_events(events, state.identity_map, members).collect().lazy()
    return attributed, sessionize(attributed, CFG.sessions), members


def full_daily(rows: list[dict], bill: pl.LazyFrame | None = None) -> pl.DataFrame:
    attributed, sessions, members = pipeline(rows)
    return account_daily(
        attributed, sessions, members, bill if bill is not None else billing([]), CAT, PLANS, CFG
    ).collect()


def full_tables(rows: list[dict], bill: pl.LazyFrame | None = None) -> ActivityTables:
    attributed, _, members = pipeline(rows)
    bill = bill if bill is not None else billing([])
    built = activity_tables(attributed, members, bill, CAT, PLANS, CFG)
    assert all(rows.span is None for rows in built)  # a full build replaces every date
    return ActivityTables(*(rows.frame for rows in built))


def update(existing: ActivityTables, *args, **kwargs) -> ActivityTables:
    """activity_tables over the stored `existing` (lazily, as the lake's date files), applied.
    `arrived` may be raw events: their rows of the attributed events (args[0]) are passed."""
    stored = ActivityTables(*(frame.lazy() for frame in existing))
    if kwargs.get("arrived") is not None:
        kwargs["arrived"] = args[0].join(
            kwargs["arrived"].select("event_id"), on="event_id", how="semi"
        )
    rebuilt = activity_tables(*args, stored=stored, **kwargs)
    for rows in rebuilt:  # only dates in its span, none outside
        assert rows.frame.filter(~rows.in_span()).is_empty()
    return ActivityTables(
        *(rows.apply(frame) for rows, frame in zip(rebuilt, existing, strict=True))
    )


TABLE_KEYS = {
    "sessions": ["session_id"],
    "user_daily": ["canonical_user_id", "account_id", "date"],
    "account_daily": ["account_id", "date"],
}


def assert_tables_equal(got: ActivityTables, want: ActivityTables) -> None:
    for name, keys in TABLE_KEYS.items():
        a, b = getattr(got, name), getattr(want, name)
        assert a.height == b.height > 0, name
        assert_frame_equal(a.sort(keys), b.sort(keys), check_exact=True)


def with_late(base: list[dict], late: list[dict]):
    """The tables stored for `base`, and what an update for the `late` rows reads: the
    attributed events and memberships of both, the dates the late rows affect and the rows."""
    late = labelled(late)
    attributed, _, members = pipeline(base + late)
    arrived = make_events(late)
    dates = affected_dates(arrived)
    return full_tables(base), attributed, members, dates, arrived


def labelled(late: list[dict]) -> list[dict]:
    """`late` with event ids of their own: make_events numbers rows by position."""
    return [{"event_id": f"late{i}", **row} for i, row in enumerate(late)]


def day(n: int, hh: int = 9, mm: int = 0) -> datetime:
    return (D0 + timedelta(days=n)).replace(hour=hh, minute=mm)


def track(user: str, name: str, when: datetime, account: str | None = "acc", **extra) -> dict:
    return {"user_id": user, "event_name": name, "event_time": when, "account_id": account, **extra}


HAND_MADE = [
    {
        "type": "identify",
        "user_id": "u1",
        "anonymous_id": "a1",
        "role": "admin",
        "event_time": day(0, 8),
    },
    {"type": "group", "user_id": "u1", "group_id": "acc", "event_time": day(0, 8)},
    track("u1", "Feature Used", day(0), feature="dashboards"),
    track("u1", "Feature Used", day(0, 9, 5), feature="sso"),
    track("u1", "Feature Used", day(0, 9, 6), feature="sso"),
    track("u1", "Project Created", day(0, 9, 7)),
    track("u1", "Invite Sent", day(0, 9, 8), role="admin"),
    track("u1", "Limit Reached", day(0, 11), limit_name="seats", used=3.0, allowed=3.0),
    track("u1", "Usage Reported", day(0, 11), limit_name="api_calls", quantity=120.0),
    {"anonymous_id": "a1", "event_name": "Pricing Page Viewed", "event_time": day(0, 12)},
    {"type": "group", "user_id": "u2", "group_id": "acc", "event_time": day(1, 8)},
    track("u2", "Signed Up", day(1), account=None),
    track("u2", "Gated Feature Viewed", day(1, 9, 1), feature="sso", required_plan="business"),
    track("u1", "Feature Used", day(3), feature="scim"),
]


def test_hand_made_account_days():
    bill = billing([("acc", day(1, 23, 59), "pro", 10, 150.0)])
    out = full_daily(HAND_MADE, bill)
    assert out["date"].to_list() == [date(2026, 3, 2) + timedelta(days=i) for i in range(4)]
    d0, d1, d2, d3 = out.iter_rows(named=True)
    assert (d0["events"], d0["active_users"], d0["wau"], d0["members"]) == (8, 1, 1, 1)
    assert (d0["distinct_features"], d0["premium_features"], d0["features_tier_2"]) == (2, 1, 1)
    assert (d0["limit_hits"], d0["limit_hits_seats"], d0["max_limit_utilisation"]) == (1, 1, 1.0)
    assert (d0["api_calls"], d0["invites_sent"], d0["admin_invites_sent"], d0["activations"]) == (
        120.0,
        1,
        1,
        1,
    )
    assert (
        d0["pricing_page_views"] == 1
    )  # anonymous event stitched to u1, attributed via membership
    assert (d0["sessions"], d0["session_seconds"]) == (3, 8 * 60.0)  # 9:00-9:08, 11:00, 12:00
    assert (d0["plan"], d0["plan_tier"], d0["seats"], d0["mrr"]) == ("free", 0, 1, 0.0)
    assert (d1["plan"], d1["seats"], d1["mrr"], d1["members"]) == ("pro", 10, 150.0, 2)
    assert (d1["active_users"], d1["wau"], d1["gated_feature_views"]) == (1, 2, 1)
    assert d1["seat_utilisation"] == pytest.approx(0.2)
    assert (d2["events"], d2["active_users"], d2["wau"], d2["mau"]) == (0, 0, 2, 2)
    assert (d3["features_tier_3"], d3["premium_features"], d3["wau"]) == (1, 1, 2)


def test_a_feature_outside_the_plan_catalog_takes_its_events_tier():
    """The catalog's tier wins; else the event's tier, as a plan name or a number; else 0."""
    rows = [
        {"type": "group", "user_id": "u1", "group_id": "acc", "event_time": day(0, 8)},
        track("u1", "Feature Used", day(0), feature="sso", tier="free"),  # catalog: business
        track("u1", "Feature Used", day(0, 9, 1), feature="beta_board", tier="pro"),
        track("u1", "Feature Used", day(0, 9, 2), feature="beta_audit", tier="3"),
        track("u1", "Feature Used", day(0, 9, 3), feature="notes"),
    ]
    (d0,) = full_daily(rows).iter_rows(named=True)
    tiers = [d0[f"features_tier_{t}"] for t in range(4)]
    assert (d0["distinct_features"], d0["premium_features"], tiers) == (4, 3, [1, 1, 1, 1])


def test_user_daily_flags():
    attributed, sessions, members = pipeline(HAND_MADE)
    out = (
        user_daily(attributed, sessions, members, CAT, PLANS, CFG)
        .collect()
        .sort("canonical_user_id", "date")
    )
    rows = out.select("canonical_user_id", "date", "events", "features_used", "premium_features_used",
                      "is_admin", "activated", "signed_up", "gated_feature_views").rows()  # fmt: skip
    assert rows == [
        ("u1", date(2026, 3, 2), 8, 2, 1, True, True, False, 0),
        ("u1", date(2026, 3, 5), 1, 1, 1, True, True, False, 0),
        ("u2", date(2026, 3, 3), 2, 0, 0, False, False, True, 1),  # a paywall view is no use
    ]
    # a day without a usage report has no API calls; without a reading, no level
    readings = out.select("api_calls", "max_limit_utilisation", "storage_gb", "limit_hits").rows()
    assert readings == [(120.0, 1.0, None, 1), (0.0, None, None, 0), (0.0, None, None, 0)]


def random_rows(seed: int, n: int = 300, days: int = 60) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        user, acc = f"u{rng.randrange(12)}", f"acc{rng.randrange(3)}"
        when = day(rng.randrange(days), rng.randrange(24), rng.randrange(60))
        rows.append(
            track(
                user,
                rng.choice(["Feature Used", "Invite Sent", "Report Exported", "Project Created"]),
                when,
                acc,
                feature="sso",
            )
        )
    return rows


def brute_force_windows(rows: list[dict], acc: str, on: date, days: int) -> int:
    lo = on - timedelta(days=days - 1)
    return len(
        {
            r["user_id"]
            for r in rows
            if r["account_id"] == acc and lo <= r["event_time"].date() <= on
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rolling_windows_match_brute_force(seed):
    rows = random_rows(seed)
    out = full_daily(rows)
    for r in out.iter_rows(named=True):
        for col, days in (("active_users", 1), ("wau", 7), ("mau", 28)):
            assert r[col] == brute_force_windows(rows, r["account_id"], r["date"], days), (
                col,
                r["date"],
            )
    assert out["events"].sum() == len(rows)
    firsts = {
        a: min(r["event_time"].date() for r in rows if r["account_id"] == a)
        for a in out["account_id"]
    }
    last = max(r["event_time"].date() for r in rows)
    for acc, group in out.group_by("account_id"):
        assert group["date"].to_list() == pl.date_range(firsts[acc[0]], last, eager=True).to_list()


@pytest.mark.parametrize(("seed", "late_days"), [(4, [10, 11]), (5, [58]), (6, [0, 30])])
@pytest.mark.parametrize("stored_activations", [False, True])
@pytest.mark.parametrize("by_user", [False, True])  # stored dates: every user, or those touched
def test_incremental_equals_full_after_late_events(seed, late_days, stored_activations, by_user):
    rows = random_rows(seed)
    base = [r for r in rows if r["event_time"].date() < day(59).date()]
    late = [
        track(f"u{seed}", "Feature Used", day(d, 23, 50), "acc1", feature="sso") for d in late_days
    ]
    late.append(track("u99", "Project Created", day(59), "acc9"))  # a new account, last day grows
    late.append(track("u1", "Project Created", day(late_days[0], 1), "acc2"))  # an earlier first
    late = labelled(late)
    bill = billing([("acc1", day(20), "business", 5, 175.0)])
    existing = full_tables(base, bill)

    attributed, _, members = pipeline(base + late)
    new_events = make_events(late)
    dates = affected_dates(new_events)
    when = {r["event_time"].date() for r in late}
    assert dates == sorted(when | {d - timedelta(days=1) for d in when})  # and the day before
    activations = None
    if stored_activations:
        # what the activity asset keeps: each id's first activation, merged day by day
        stored = activation_candidates(make_events(base), CAT).collect()
        candidates = activation_candidates(
            pl.concat([stored.lazy(), new_events.select(ACTIVATION_COLUMNS)]), CAT
        )
        state, _ = update_identity(None, make_events(base + late), CFG.identity)
        activations = first_activations(
            attribute_events(candidates, state.identity_map, members), CAT
        )
    arrived = new_events if by_user else None
    updated = update(
        existing, attributed, members, bill, CAT, PLANS, CFG, activations, dates=dates,
        arrived=arrived,
    )  # fmt: skip
    assert_tables_equal(updated, full_tables(base + late, bill))
    assert updated.account_daily["events"].sum() == len(base) + len(late)
    assert updated.account_daily["activations"].sum() > 0


@pytest.mark.parametrize(
    ("with_new_dates", "arrived"), [(True, None), (True, make_events([])), (False, None)]
)
def test_late_billing_row_reprices_from_its_date(with_new_dates, arrived):
    """With no arrived events every stored row of the dates is kept, and re-priced."""
    rows = random_rows(7)
    attributed, _, members = pipeline(rows)
    before = billing([("acc1", day(30), "pro", 10, 150.0)])
    existing = full_tables(rows, before)
    bill = billing(
        [("acc1", day(30), "pro", 10, 150.0), ("acc2", day(5), "enterprise", 40, 2400.0)]
    )
    since = billing_changed_from(before.collect(), bill.collect())
    assert since == day(5).date()
    dates = [day(59).date()] if with_new_dates else []
    kwargs = {"dates": dates, "billing_from": since, "arrived": arrived}
    updated = update(existing, attributed, members, bill, CAT, PLANS, CFG, **kwargs)
    assert_tables_equal(updated, full_tables(rows, bill))
    # a removed row re-prices too; an unchanged billing table changes nothing
    assert billing_changed_from(bill.collect(), before.collect()) == day(5).date()
    assert billing_changed_from(bill.collect(), bill.collect()) is None
    untouched = activity_tables(
        attributed, members, bill, CAT, PLANS, CFG,
        stored=ActivityTables(*(f.lazy() for f in existing)),
    )  # fmt: skip
    assert all(rows.frame.is_empty() for rows in untouched)


def test_affected_dates_include_relabelled_history():
    old = make_events(
        [{"anonymous_id": "a7", "event_time": day(2)}, {"user_id": "u7", "event_time": day(4)}]
    )
    new = make_events(
        [{"type": "identify", "anonymous_id": "a7", "user_id": "u7", "event_time": day(9)}]
    )
    state, _ = update_identity(None, old, CFG.identity)
    _, relabelled = update_identity(state, new, CFG.identity)
    dates = affected_dates(new, relabelled, id_dates(old, new))
    assert dates == [day(n).date() for n in (1, 2, 8, 9)]


def id_dates(*days: pl.LazyFrame) -> pl.DataFrame:
    """The identity facts' first and last date per raw id, merged day by day as a run does."""
    facts = IdentityFacts.empty()
    for events in days:
        facts = facts.merge(IdentityFacts.of(events))
    return facts.tables["dates"]


def test_config_errors_name_file_and_key(tmp_path: Path):
    assert load_activity_config().sessions.inactivity_gap_minutes == 30
    (tmp_path / "activity.yaml").write_text("identity:\n  max_users_per_anonymous_id: 0\n")
    with pytest.raises(ConfigError, match=r"activity\.yaml: identity\.max_users_per_anonymous_id"):
        load_activity_config(tmp_path)
    (tmp_path / "activity.yaml").write_text("wau_dayz: 7\n")
    with pytest.raises(ConfigError, match="wau_dayz"):
        load_activity_config(tmp_path)


def test_late_events_without_new_dates_rebuild_only_their_windows():
    base = random_rows(8)
    late = [
        track("u3", "Report Exported", day(5, 23, 59), "acc1"),
        track("u77", "Feature Used", day(6, 0, 5), "acc1", feature="sso"),  # a new member of acc1
    ]
    existing, attributed, members, dates, arrived = with_late(base, late)
    # only the events from the first affected date on are needed to find the range
    recent = attributed.filter(pl.col("event_date") >= dates[0])
    assert recompute_range(existing.account_daily, dates, recent, members, CFG) == (
        day(4).date(),
        day(6 + 27).date(),
    )
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))


def test_a_late_first_event_recounts_members_past_the_rebuilt_dates():
    """u50 joined acc1 on day 45; a late event shows them there on day 3: acc1's member count
    rises on days 3 to 44, past the MAU window the late dates rebuild (day 2, the day before,
    to 3 + 27 = day 30)."""
    base = [*random_rows(9), track("u50", "Feature Used", day(45), "acc1", feature="sso")]
    late = [track("u50", "Report Exported", day(3), "acc1")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    recent = attributed.filter(pl.col("event_date") >= dates[0])
    assert recompute_range(existing.account_daily, dates, recent, members, CFG) == (
        day(2).date(),
        day(30).date(),
    )
    stored = ActivityTables(*(frame.lazy() for frame in existing))
    rebuilt = activity_tables(
        attributed, members, billing([]), CAT, PLANS, CFG, stored=stored, dates=dates
    )
    assert rebuilt.account_daily.span == (day(2).date(), day(44).date())
    assert rebuilt.sessions.span == rebuilt.user_daily.span == (day(2).date(), day(30).date())
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))


@pytest.mark.parametrize(
    ("on", "others_late_on"),
    [(59, None), (10, None), (60, 50)],  # the last stored day; inside them; a new day
)
def test_a_role_change_reaches_every_stored_day_of_that_user(on, others_late_on):
    """is_admin follows the user's latest role: promoting u3 changes all their stored user-days,
    before and after the dates the promotion's own day rebuilds, and on the stored dates that
    another user's late event rebuilds, where u3's rows are kept."""
    base = random_rows(10)
    late = [{"type": "identify", "user_id": "u3", "role": "admin", "event_time": day(on, 12)}]
    if others_late_on is not None:
        late.append(track("u4", "Report Exported", day(others_late_on, 15), "acc1"))
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert not existing.user_daily.filter(pl.col("canonical_user_id") == "u3")["is_admin"].any()
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))


def test_a_new_event_just_after_midnight_extends_the_stored_session_of_the_day_before():
    """u40's session starts at 23:50 on day 10 and its 00:10 event on day 11 arrives a day
    later. The session belongs to day 10, so day 10 is rebuilt although it got no new event."""
    base = [*random_rows(11), track("u40", "Feature Used", day(10, 23, 50), "acc1", feature="sso")]
    late = [track("u40", "Report Exported", day(11, 0, 10), "acc1")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert dates == [day(10).date(), day(11).date()]
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))
    session = updated.sessions.filter(pl.col("canonical_user_id") == "u40")
    assert session.select("session_date", "events", "duration_s").rows() == [
        (day(10).date(), 2, 1200.0)
    ]


def test_a_late_membership_without_activity_starts_the_accounts_rows_at_its_date():
    """u3 joins the new acc7 on day 20 (a group call, no activity), reported late with a new
    day: acc7 has a row on every date from day 20, though no user's activity touched it."""
    base = random_rows(12)
    late = [
        {"type": "group", "user_id": "u3", "group_id": "acc7", "event_time": day(20)},
        track("u5", "Project Created", day(60), "acc1"),
    ]
    existing, attributed, members, dates, arrived = with_late(base, late)
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))
    acc7 = updated.account_daily.filter(pl.col("account_id") == "acc7")
    assert acc7["date"].min() == day(20).date() and acc7.height == 41


@pytest.mark.parametrize("with_identity_map", [False, True])  # events picked before attribution
def test_a_merge_moves_the_stored_rows_of_both_ids_to_one_user(with_identity_map):
    """a7 browsed anonymously on days 2 and 3; on day 30 it identifies as u70: the stored rows
    of a7 become u70's, on dates only the two ids' users are rebuilt on."""
    base = [
        *random_rows(13),
        {"anonymous_id": "a7", "event_name": "Feature Used", "event_time": day(2),
         "account_id": "acc1", "feature": "sso"},
        {"anonymous_id": "a7", "event_name": "Report Exported", "event_time": day(3, 23, 55),
         "account_id": "acc1"},
        track("u70", "Project Created", day(4, 0, 10), "acc1"),
    ]  # fmt: skip
    late = labelled(
        [
            {"type": "identify", "anonymous_id": "a7", "user_id": "u70", "event_time": day(30)},
            track("u5", "Project Created", day(60), "acc1"),
        ]
    )
    existing, attributed, members, _, arrived = with_late(base, late)
    state, _ = update_identity(None, make_events(base), CFG.identity)
    now, relabelled = update_identity(state, arrived, CFG.identity)
    assert relabelled.rows() == [("a7", "a7", "u70")]
    dates = affected_dates(arrived, relabelled, id_dates(make_events(base), arrived))
    assert dates[0] == day(1).date()
    users = pl.concat([relabelled["old_canonical_user_id"], relabelled["new_canonical_user_id"]])
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived,
        changed_users=users, identity_map=now.identity_map if with_identity_map else None,
    )  # fmt: skip
    assert_tables_equal(updated, full_tables(base + late))
    assert "a7" not in updated.user_daily["canonical_user_id"].to_list()
    # the session a7 started on day 3 runs into u70's event after midnight
    first = updated.sessions.filter(pl.col("canonical_user_id") == "u70").sort("session_start")
    assert first.row(1, named=True)["events"] == 2


@pytest.mark.parametrize("late_call", [False, True])  # without new dates: u3 is active after
@pytest.mark.parametrize("with_identity_map", [False, True])
def test_a_withdrawn_consent_removes_the_users_stored_rows_and_recounts_their_accounts(
    with_identity_map, late_call
):
    """u3 withdraws analytics consent on a new day (or in a late call dated day 5, with no new
    date): every stored row of u3 goes, and their accounts' figures drop them on every date,
    while the late window is only the new day (or day 5)."""
    base = random_rows(14)
    consent = {"type": "identify", "user_id": "u3", "consent_analytics": False}
    if late_call:
        late = labelled([{**consent, "event_time": day(5, 12)}])
    else:
        late = labelled(
            [{**consent, "event_time": day(60)}, track("u5", "Project Created", day(60), "acc1")]
        )
    attributed, _, members = pipeline(base + late)
    consenting = attributed.filter(pl.col("canonical_user_id") != "u3")
    existing = full_tables(base)
    state, _ = update_identity(None, make_events(base + late), CFG.identity)
    identities = state.identity_map.select("id", "canonical_user_id")
    opted_out = pl.DataFrame({"canonical_user_id": ["u3"]})
    ids, users = changed_users(identities, identities, opted_out.clear(), opted_out)
    assert users.to_list() == ["u3"]
    dates = affected_dates(make_events(late), ids, id_dates(make_events(base), make_events(late)))
    theirs = (
        make_events(base)
        .filter(pl.col("user_id").is_in(ids["id"].implode()))
        .select(first=pl.col("event_date").min(), last=pl.col("event_date").max())
        .collect()
    )
    first, last = theirs.row(0)
    # u3 is active from early on to after the late call's MAU window: the rebuild spans both
    assert first < day(5).date() and last > day(5 + CFG.mau_days).date()
    assert dates[0] == first - timedelta(days=1)
    assert dates[-1] == (last if late_call else day(60).date())
    updated = update(
        existing, consenting, members, billing([]), CAT, PLANS, CFG, dates=dates,
        arrived=make_events(late), changed_users=users,
        identity_map=state.identity_map if with_identity_map else None,
    )  # fmt: skip
    built = activity_tables(consenting, members, billing([]), CAT, PLANS, CFG)
    assert_tables_equal(updated, ActivityTables(*(rows.frame for rows in built)))
    assert "u3" not in updated.user_daily["canonical_user_id"].to_list()


def test_a_touched_users_session_from_the_day_before_keeps_its_start():
    """u41's stored session runs from 23:50 on day 9 into day 10; a late event on day 10 touches
    u41 from day 10, so the day before is read to see where that session started."""
    base = [
        *random_rows(15),
        track("u41", "Feature Used", day(9, 23, 50), "acc1", feature="sso"),
        track("u41", "Report Exported", day(10, 0, 10), "acc1"),
    ]
    late = [track("u41", "Project Created", day(10, 15)), track("u5", "Feature Used", day(60))]
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert dates[0] == day(9).date()
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))


# u42's stored session chains from 23:50 on day 9 to 00:40 on day 10, so a late event at 01:00,
# long after midnight, still belongs to it; u43's ended at 23:50, and a late event at 00:10,
# within the gap, continues it although no stored session of u43 ran into day 10.
CROSSED = [
    track("u42", "Feature Used", day(9, 23, 50), "acc1", feature="sso"),
    track("u42", "Report Exported", day(10, 0, 15), "acc1"),
    track("u42", "Report Exported", day(10, 0, 40), "acc1"),
]
JUST_BEFORE = [track("u43", "Feature Used", day(9, 23, 50), "acc1", feature="sso")]


@pytest.mark.parametrize(
    ("user", "stored", "late_at", "events"),
    [("u42", CROSSED, day(10, 1, 0), 4), ("u43", JUST_BEFORE, day(10, 0, 10), 2)],
    ids=["inside-a-session-across-midnight", "just-after-midnight"],
)
def test_a_late_event_joins_the_stored_session_of_the_day_before(user, stored, late_at, events):
    """Day 9 is rebuilt for the user, though the late event is on day 10."""
    base = [*random_rows(16), *stored]
    late = [track(user, "Project Created", late_at, "acc1"), track("u5", "Feature Used", day(60))]
    existing, attributed, members, dates, arrived = with_late(base, late)
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))
    sessions = updated.sessions.filter(pl.col("canonical_user_id") == user)
    assert sessions.select("session_date", "events").rows() == [(day(9).date(), events)]


def long_session(user: str, start: datetime, days: int) -> list[dict]:
    """An event every 20 minutes for `days` days, as a script or an open tab's heartbeat can
    send them: one session."""
    return [
        track(user, "Feature Used", start + timedelta(minutes=20 * i), "acc1", feature="sso")
        for i in range(days * 72)
    ]


@pytest.mark.parametrize(
    "late_at", [day(7, 12, 5), day(8, 0, 5)], ids=["inside-it", "just-after-its-end"]
)
def test_a_late_event_joining_a_session_longer_than_a_day_rebuilds_it_from_its_start(late_at):
    """u44's session runs from 00:00 on day 5 to 23:40 on day 7. The update reaches back to
    day 5, where it started, though the late event is two or three days later; the session
    counts it, as a full build does."""
    base = [*random_rows(16), *long_session("u44", day(5, 0), 3)]
    late = [track("u44", "Project Created", late_at, "acc1"), track("u5", "Feature Used", day(60))]
    existing, attributed, members, _, arrived = with_late(base, late)
    theirs = attributed.join(arrived.select("event_id").lazy(), on="event_id", how="semi")
    reached = changes_from(theirs, existing.sessions.lazy(), CFG.sessions)
    dates = affected_dates(arrived, reached=reached)
    assert dates[0] == day(4).date()
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))
    sessions = updated.sessions.filter(pl.col("canonical_user_id") == "u44")
    assert sessions.select("session_date", "events").rows() == [(day(5).date(), 217)]


@pytest.mark.parametrize("with_arrived", [True, False], ids=["touched", "every-user"])
def test_a_rebuilt_range_reaches_the_end_of_a_session_longer_than_a_day(with_arrived):
    """A late event on day 3 and no new dates rebuild days 2 to 3 + 27 = 30; u45's session
    from noon on day 30 runs to noon on day 33, so the range reaches day 32, the day before it
    ends: rebuilt from events up to day 31 only, it would lose its last two days."""
    base = [*random_rows(16), *long_session("u45", day(30, 12), 3)]
    base.append(track("u1", "Feature Used", day(50), "acc1", feature="sso"))
    late = [track("u45", "Project Created", day(3, 12, 5), "acc1")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    span = recompute_range(
        existing.account_daily, dates, attributed, members, CFG, sessions=existing.sessions.lazy()
    )
    assert span == (day(2).date(), day(32).date())
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates,
        arrived=arrived if with_arrived else None,
    )  # fmt: skip
    assert_tables_equal(updated, full_tables(base + late))


def test_a_late_event_after_the_last_stored_session_touches_its_user():
    """The stored days 11 and 12 have no session (an identify call on day 12 carries the
    tables to it); a late event on day 12 still touches u46 there, though no stored session
    reaches that far for it to join."""
    base = [*random_rows(18, days=11), {"type": "identify", "user_id": "u1", "event_time": day(12)}]
    late = [track("u46", "Feature Used", day(12, 15), "acc1", feature="sso")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert existing.account_daily["date"].max() == day(12).date()
    assert existing.sessions["session_end"].max() < day(11)
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, arrived=arrived
    )
    assert_tables_equal(updated, full_tables(base + late))


def test_a_late_earlier_activation_moves_it_past_the_rebuilt_dates():
    """u60 first created a project on day 50; a late event shows one on day 3. Their user-days
    from day 3 on are activated and acc1's activation moves from day 50 to day 3, both past the
    MAU window the late date rebuilds (day 2 to 3 + 27 = day 30)."""
    active = [track("u60", "Feature Used", day(n, 10), "acc1", feature="sso") for n in range(3, 51)]
    base = [*random_rows(11), *active, track("u60", "Project Created", day(50, 11), "acc1")]
    late = [track("u60", "Project Created", day(3, 11), "acc1")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert (
        recompute_range(existing.account_daily, dates, attributed, members, CFG)[1] < day(50).date()
    )
    for kwargs in ({}, {"arrived": arrived}):
        updated = update(
            existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates, **kwargs
        )
        assert_tables_equal(updated, full_tables(base + late))


def test_a_moved_activation_rewrites_only_the_days_it_flips():
    """u60 is active on days 3 to 50 and first created a project on day 50; a late one on day
    40 activates their days 40 to 49, inside the rebuilt dates (39 on): user_daily's update
    starts there, not at u60's first day, and still equals a full build."""
    active = [track("u60", "Feature Used", day(n, 10), "acc1", feature="sso") for n in range(3, 51)]
    base = [*random_rows(11), *active, track("u60", "Project Created", day(50, 11), "acc1")]
    late = [track("u60", "Project Created", day(40, 11), "acc1")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    stored = ActivityTables(*(frame.lazy() for frame in existing))
    theirs = attributed.join(arrived.select("event_id").lazy(), on="event_id", how="semi")
    rebuilt = activity_tables(
        attributed, members, billing([]), CAT, PLANS, CFG, stored=stored, dates=dates,
        arrived=theirs,
    )  # fmt: skip
    assert rebuilt.user_daily.span[0] == dates[0] == day(39).date()
    applied = ActivityTables(
        *(rows.apply(frame) for rows, frame in zip(rebuilt, existing, strict=True))
    )
    assert_tables_equal(applied, full_tables(base + late))
    flags = applied.user_daily.filter(pl.col("canonical_user_id") == "u60")
    assert flags.filter(pl.col("activated"))["date"].min() == day(40).date()


@pytest.mark.parametrize("moved_to", [45, None, 5, 9], ids=["later", "gone", "earlier", "a-day"])
@pytest.mark.parametrize("late_day", [51, 4], ids=["after", "before"])
def test_an_activation_moved_by_other_data_reflags_the_days_between(moved_to, late_day):
    """u60 is active on days 3 to 50, activated on day 10, and the update's one event is on day
    51 (rebuilt: 50 to 51) or 4 (3 to 31). Given activations that moved it (as an identity split would), user_daily flips the
    days between the old and the new activation, far from the rebuilt dates, and only they
    need to. (account_daily's activation counts are recounted from the affected dates, which
    for a real move include the moved event's: `affected_dates` lists relabelled ids' dates.)
    """
    active = [track("u60", "Feature Used", day(n, 10), "acc1", feature="sso") for n in range(3, 51)]
    base = [
        *random_rows(11, days=50),
        *active,
        track("u60", "Project Created", day(10, 11), "acc1"),
    ]
    late = [track("u1", "Feature Used", day(late_day, 9), "acc1", feature="sso")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    found = first_activations(attributed, CAT).collect()
    assert found.filter(pl.col("canonical_user_id") == "u60")["activation_date"].item() == (
        day(10).date()
    )
    moved = found.with_columns(
        activation_date=pl.when(pl.col("canonical_user_id") == "u60")
        .then(pl.lit(day(moved_to).date() if moved_to is not None else None, pl.Date))
        .otherwise("activation_date")
    ).lazy()
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, moved, dates=dates,
        arrived=arrived,
    )  # fmt: skip
    built = activity_tables(attributed, members, billing([]), CAT, PLANS, CFG, activations=moved)
    full = ActivityTables(*(rows.frame for rows in built))
    assert_tables_equal(
        updated._replace(account_daily=full.account_daily), full
    )  # user_daily and sessions
    flags = updated.user_daily.filter(pl.col("canonical_user_id") == "u60")
    assert flags.filter(pl.col("activated"))["date"].min() == (
        day(moved_to).date() if moved_to is not None else None
    )


@pytest.mark.parametrize("with_arrived", [True, False], ids=["touched", "every-user"])
def test_dates_without_events_before_the_new_ones_get_their_rows(with_arrived):
    """The stored dates end on day 50 and the next events are on day 55: days 51 to 54 have no
    event at all, yet a full build gives every account a row on them (its rolling windows are
    still open), and so must the update."""
    base = random_rows(12, days=50)
    late = [track("u1", "Feature Used", day(55, 9), "acc1", feature="sso")]
    existing, attributed, members, dates, arrived = with_late(base, late)
    assert existing.account_daily["date"].max() == day(49).date() and dates[0] == day(54).date()
    updated = update(
        existing, attributed, members, billing([]), CAT, PLANS, CFG, dates=dates,
        arrived=arrived if with_arrived else None,
    )  # fmt: skip
    assert_tables_equal(updated, full_tables(base + late))
    gap = updated.account_daily.filter(pl.col("date").is_between(day(50).date(), day(54).date()))
    assert gap.height == 5 * 3 and gap["events"].sum() == 0 and gap["mau"].min() > 0


def test_seat_utilisation_divides_by_a_repeated_divisor_exactly():
    """A divisor column of one repeated value (here a literal; a join can leave one behind)
    still gives wau / seats as Python divides, not wau * (1 / seats)."""
    frame = pl.DataFrame({"wau": [3, 3, 1]}).with_columns(seats=pl.lit(10))
    got = frame.select(_quotient("wau", "seats")).to_series().to_list()
    assert got == [3 / 10, 3 / 10, 1 / 10]


def test_api_calls_sum_to_the_same_figure_in_any_row_order():
    """Fractional usage quantities: a float sum of 0.1, 0.2, 0.3 is 0.6000000000000001 in one
    order and 0.6 in the other, and a rerun or an update must not change a stored figure."""
    usage = [
        track("u1", "Usage Reported", day(0, 9, m), limit_name="api_calls", quantity=q)
        for m, q in enumerate([0.1, 0.2, 0.3])
    ]
    joined = {"type": "group", "user_id": "u1", "group_id": "acc", "event_time": day(0, 8)}
    for rows in (usage, usage[::-1]):
        tables = full_tables([joined, *rows])
        assert tables.user_daily["api_calls"].to_list() == [0.6]
        assert tables.account_daily["api_calls"].to_list() == [0.6]


def test_events_of_other_roles_raise_no_flag():
    """The per-user figures sum flags over the events of `_FLAGGED_ROLES` only: an event of any
    other role, whatever its other columns, must leave every flag false and every reading
    empty, or a flag added for a new role would count nothing."""
    others = [r for r in Role.__args__ if r not in _FLAGGED_ROLES] + [None]
    rows = [
        {"_role": role, "limit_name": name, "role": "admin", "allowed": 10.0, "used": 20.0,
         "quantity": 3.0}
        for role in others
        for name in [*LIMIT_NAMES, "api_calls", "storage_gb", None]
    ]  # fmt: skip
    frame = pl.DataFrame(rows, schema_overrides={"_role": pl.Enum(Role.__args__)})
    flags = frame.select(**_flags(CFG))
    assert len(others) > 1 and flags.height == len(rows)
    for name, column in flags.to_dict().items():
        if column.dtype == pl.Boolean:
            assert not column.any(), name
        else:
            assert column.is_null().all(), name


def test_rebuild_note_says_how_far_back_an_update_went_and_why():
    rows = pl.DataFrame(
        {
            "account_id": ["a", "b", "a"],
            "date": [date(2026, 7, 29), date(2026, 7, 2), date(2026, 7, 30)],
        }
    )
    assert rebuild_note(rows, []) == "3 date(s) rebuilt from 2026-07-02"
    # old and new ids of a merge, and a consent change; a repeated id counts once
    assert rebuild_note(rows, ["u1", "u2", "u3", "u1"]) == (
        "3 date(s) rebuilt from 2026-07-02, 3 user id(s) relabelled or with changed consent"
        " (rebuilt from the first)"
    )
    assert rebuild_note(rows.clear(), []) == "0 date(s) rebuilt"
