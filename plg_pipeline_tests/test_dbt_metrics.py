"""The dbt metrics layer on a hand-built warehouse: every expected figure is worked out by hand.

One materialization of the dbt assets per module (fixture `built`, a real `dbt build` on a DuckDB
file in tmp), then each test reads the marts it checks; one more run shows a failing dbt test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from plg_pipeline_tests.dbt_fixtures import (
    materialize_metrics,
    query,
    write_sources,
)

# The dbt assets can only be imported once the manifest exists.
pytestmark = pytest.mark.usefixtures("dbt_manifest")


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Billing log, inserted out of order on purpose (e03 before e02, g03 first). Months Jan-Apr 2026.
# Revenue = paid MRR at month end + overage billed in the month; trialing/canceled pay 0.
#
# A1 (smb)  Jan  e01 new pro 2 seats 100            S=0    E=100  new +100
#           Feb  e02 seat_add 150 (+50 seat)         S=100  E=300  seat +50, upgrade +150
#                e03 upgrade business 300 (+150)
#           Mar  e04 renewal 300, overage 40          S=300  E=340  overage +40
#           Apr  e05 renewal 300, overage 0           S=340  E=300  contraction -40 (overage gone)
# A2 (smb)  Jan  f01 trialing 100 (pays 0), f02 active 100   S=0 E=100 new +100
#           Feb  f03 seat_remove 50                   S=100  E=50   contraction -50
#           Mar  f04 canceled 0                       S=50   E=0    churn -50
#           Apr  f05 reactivation 50                  S=0    E=50   reactivation +50
# A3 (mid)  Feb  g01 new 1000, g02 seat_add 1200 at the same instant (event_id decides: g02 last)
#                                                     S=0    E=1200 new +1200
#           Mar  g03 renewal 1200 (arrives late), g04 upgrade enterprise 2400
#                                                     S=1200 E=2400 upgrade +1200
#           Apr  g05 seat_remove 2000                 S=2400 E=2000 contraction -400
# A4 (ent)  Mar  h01 trialing 500: never pays         S=0    E=0 in Mar and Apr
BILLING = [
    ("e01", "A1", ts("2026-01-05 09:00"), "pro", 2, 100.0, "active", "new", 0.0),
    ("e03", "A1", ts("2026-02-20 09:00"), "business", 3, 300.0, "active", "upgrade", 0.0),
    ("e02", "A1", ts("2026-02-10 09:00"), "pro", 3, 150.0, "active", "seat_add", 0.0),
    ("e04", "A1", ts("2026-03-15 09:00"), "business", 3, 300.0, "active", "renewal", 40.0),
    ("e05", "A1", ts("2026-04-15 09:00"), "business", 3, 300.0, "active", "renewal", 0.0),
    ("f01", "A2", ts("2026-01-10 09:00"), "pro", 2, 100.0, "trialing", "new", 0.0),
    ("f02", "A2", ts("2026-01-25 09:00"), "pro", 2, 100.0, "active", "new", 0.0),
    ("f03", "A2", ts("2026-02-14 09:00"), "pro", 1, 50.0, "active", "seat_remove", 0.0),
    ("f04", "A2", ts("2026-03-03 09:00"), "pro", 1, 0.0, "canceled", "churn", 0.0),
    ("f05", "A2", ts("2026-04-08 09:00"), "pro", 1, 50.0, "active", "reactivation", 0.0),
    ("g03", "A3", ts("2026-03-10 09:00"), "business", 12, 1200.0, "active", "renewal", 0.0),
    ("g02", "A3", ts("2026-02-01 00:00"), "business", 12, 1200.0, "active", "seat_add", 0.0),
    ("g01", "A3", ts("2026-02-01 00:00"), "business", 10, 1000.0, "active", "new", 0.0),
    ("g04", "A3", ts("2026-03-20 09:00"), "enterprise", 12, 2400.0, "active", "upgrade", 0.0),
    ("g05", "A3", ts("2026-04-02 09:00"), "enterprise", 10, 2000.0, "active", "seat_remove", 0.0),
    ("h01", "A4", ts("2026-03-01 09:00"), "business", 5, 500.0, "trialing", "new", 0.0),
]

ACCOUNTS = [
    ("A1", "Acme", "smb", "software", ts("2026-01-01 00:00")),
    ("A2", "Bolt", "smb", "retail", ts("2026-01-02 00:00")),
    ("A3", "Cogs", "mid_market", "industry", ts("2026-01-20 00:00")),
    ("A4", "Dyno", "enterprise", "finance", ts("2026-02-20 00:00")),
]

IDENTITY = [
    ("u1", "user", "u1"),
    ("u2", "user", "u2"),
    ("anon2", "anonymous", "u2"),
    ("u3", "user", "u3"),
    ("u4", "user", "u4"),
    ("u5", "user", "u5"),
    ("u7", "user", "u7"),
    ("u8", "user", "u8"),
]

# u2 belonged to A2 first, then A1 from 2026-01-01: its events without an account go to A1.
MEMBERSHIPS = [
    ("u2", "A2", "member", ts("2025-06-01 00:00")),
    ("u2", "A1", "member", ts("2026-01-01 00:00")),
]

_event_seq = iter(range(1, 1000))


def event(name, at, user=None, account=None, anonymous=None, trigger=None) -> tuple:
    moment = ts(at)
    return (
        f"ev{next(_event_seq):03d}",
        "track",
        name,
        user,
        anonymous,
        account,
        moment,
        moment.date(),
        trigger,
    )


# Signups and activations (activation = "Project Created", window 7 days):
#   u1 signup Jan 05 10:00 (A1), activation Jan 06 22:00  -> 1.5 days, within window
#   u2 signup Jan 10 00:00 as anon2 (A1 via membership), activation Jan 20 00:00 -> 10 days, late
#   u3 signup Jan 15 12:00 (A2), activation Jan 18 12:00  -> 3 days, within window
#   u4 signup Jan 20 00:00 (A1), activation Jan 20 06:00  -> 0.25 days, within window
#   u5 signup Feb 03 08:00 (A3), activation Feb 05 08:00  -> 2 days, within window
# Jan smb cohort: 4 signups, 4 activated, 3 within window -> activation rate 3/4 = 0.75;
#   TTV days sorted 0.25, 1.5, 3, 10 -> median (1.5 + 3) / 2 = 2.25.
# Feb mid_market cohort: 1 signup, rate 1.0, TTV 2.0.
# Decoys: u1's second activation (later, ignored by min), an activation by u7 who never signed up.
EVENTS = [
    event("Signed Up", "2026-01-05 10:00", user="u1", account="A1"),
    event("Project Created", "2026-01-06 22:00", user="u1", account="A1"),
    event("Project Created", "2026-01-08 10:00", user="u1", account="A1"),
    event("Signed Up", "2026-01-10 00:00", anonymous="anon2"),
    event("Project Created", "2026-01-20 00:00", user="u2"),
    event("Signed Up", "2026-01-15 12:00", user="u3", account="A2"),
    event("Project Created", "2026-01-18 12:00", user="u3", account="A2"),
    event("Signed Up", "2026-01-20 00:00", user="u4", account="A1"),
    event("Project Created", "2026-01-20 06:00", user="u4", account="A1"),
    event("Signed Up", "2026-02-03 08:00", user="u5", account="A3"),
    event("Project Created", "2026-02-05 08:00", user="u5", account="A3"),
    event("Project Created", "2026-02-06 08:00", user="u7", account="A1"),
    # Invites. A1 Jan: 1 sent, 0 accepted. A1 Feb: 4 sent (u2's by membership), 2 accepted.
    # A2 Feb: 2 sent, 0 accepted.
    event("Invite Sent", "2026-01-12 10:00", user="u1", account="A1"),
    event("Invite Sent", "2026-02-04 10:00", user="u1", account="A1"),
    event("Invite Sent", "2026-02-04 11:00", user="u1", account="A1"),
    event("Invite Sent", "2026-02-10 11:00", user="u1", account="A1"),
    event("Invite Sent", "2026-02-11 11:00", user="u2"),
    event("Invite Accepted", "2026-02-05 09:00", user="u7", account="A1"),
    event("Invite Accepted", "2026-02-06 09:00", user="u8", account="A1"),
    event("Invite Sent", "2026-02-15 09:00", user="u3", account="A2"),
    event("Invite Sent", "2026-02-15 10:00", user="u3", account="A2"),
]

# Active days. A1 Jan: u1 -> 1 active user. A1 Feb: u1, u2, u4, u7, u8 -> 5. A2 Feb: u3 -> 1.
USER_DAILY = [
    ("u1", "A1", date(2026, 1, 5), 3),
    ("u1", "A1", date(2026, 1, 12), 2),
    ("u1", "A1", date(2026, 2, 4), 4),
    ("u1", "A1", date(2026, 2, 10), 1),
    ("u2", "A1", date(2026, 2, 11), 1),
    ("u4", "A1", date(2026, 2, 12), 1),
    ("u7", "A1", date(2026, 2, 5), 1),
    ("u8", "A1", date(2026, 2, 6), 1),
    ("u3", "A2", date(2026, 1, 15), 2),
    ("u3", "A2", date(2026, 2, 15), 2),
    ("u5", "A3", date(2026, 2, 3), 2),
]

# PQL entries (upgrade_window_days 60, the dbt_project.yml default):
#   A1 low->medium Jan 20: paid rises Feb 10 (+50), Feb 20 (+150) -> converted, 200, 21 days
#   A2 low->medium Feb 01: next rise Apr 08 is 66 days later -> not converted
#   A3 low->high Feb 10: rise Mar 20 (+1200) -> converted, 38 days; high->medium->high later are
#      not entries.
TIER_TRANSITIONS = [
    ("A1", date(2026, 1, 20), "low", "medium"),
    ("A2", date(2026, 2, 1), "low", "medium"),
    ("A3", date(2026, 2, 10), "low", "high"),
    ("A3", date(2026, 2, 25), "high", "medium"),
    ("A3", date(2026, 3, 1), "medium", "high"),
]

# Triggers (program seat_limit). t1 A1 Feb 01 actioned: rises Feb 10 +50, Feb 20 +150 -> 200.
# t2 A2 Feb 01 holdout: no rise by Apr 02. t3 A3 Feb 15 holdout: rise Mar 20 +1200.
# t4 A4 Mar 05 suppressed: in neither group.
# Attribution Feb / seat_limit: triggered 1 account, 1 upgraded (rate 1.0), 200 MRR;
#   holdout 2 accounts, 1 upgraded (rate 0.5), 1200 MRR (600 per account);
#   lift 1.0 - 0.5 = 0.5; incremental MRR = 1 x (200 - 600) = -400.
TRIGGERS = [
    (
        "t1",
        "A1",
        "u1",
        "seat_limit",
        date(2026, 2, 1),
        "in_product",
        False,
        None,
        False,
        "seat_limit",
        150.0,
    ),
    (
        "t2",
        "A2",
        "u3",
        "seat_limit",
        date(2026, 2, 1),
        "in_product",
        False,
        None,
        True,
        "seat_limit",
        50.0,
    ),
    (
        "t3",
        "A3",
        "u5",
        "seat_limit",
        date(2026, 2, 15),
        "sdr",
        False,
        None,
        True,
        "seat_limit",
        1000.0,
    ),
    (
        "t4",
        "A4",
        None,
        "seat_limit",
        date(2026, 3, 5),
        "in_product",
        True,
        "cooldown",
        False,
        "seat_limit",
        400.0,
    ),
]

DELIVERIES = [
    ("t1", "in_product", "delivered", 1, ts("2026-02-01 01:00")),
    ("t1", "webhook", "failed", 3, None),
]

PROMPTS = [
    event("Expansion Prompt Viewed", "2026-02-02 10:00", user="u1", account="A1", trigger="t1"),
    event("Expansion Prompt Clicked", "2026-02-02 10:01", user="u1", account="A1", trigger="t1"),
]

PQL_SCORES = [
    ("A1", date(2026, 1, 20), 55.0, "medium", "v1", "seats"),
    ("A2", date(2026, 2, 1), 50.0, "medium", "v1", "seats"),
    ("A3", date(2026, 2, 10), 80.0, "high", "v1", "seats"),
]

SOURCES = {
    "billing_events": BILLING,
    "accounts": ACCOUNTS,
    "identity_map": IDENTITY,
    "account_memberships": MEMBERSHIPS,
    "events": EVENTS + PROMPTS,
    "user_daily": USER_DAILY,
    "tier_transitions": TIER_TRANSITIONS,
    "trigger_candidates": TRIGGERS,
    "action_deliveries": DELIVERIES,
    "pql_scores": PQL_SCORES,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object]:
    work = tmp_path_factory.mktemp("dbt_metrics")
    warehouse = work / "warehouse.duckdb"
    write_sources(warehouse, SOURCES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DBT_TARGET_PATH", str(work / "target"))  # keep dbt artefacts out of the repo
        result = materialize_metrics(warehouse)
    return warehouse, result


def m(month: int) -> date:
    return date(2026, month, 1)


def rows(warehouse: Path, table: str, columns: str, order: str) -> list[tuple]:
    return query(warehouse, f"select {columns} from marts.{table} order by {order}")


def test_mrr_movements_follow_the_billing_log(built):
    warehouse, _ = built
    got = rows(
        warehouse,
        "mrr_movements",
        "account_id, revenue_month, starting_mrr, new_mrr, expansion_seat_mrr, "
        "expansion_upgrade_mrr, expansion_overage_mrr, contraction_mrr, churn_mrr, "
        "reactivation_mrr, ending_mrr",
        "account_id, revenue_month",
    )
    assert got == [
        ("A1", m(1), 0, 100, 0, 0, 0, 0, 0, 0, 100),
        ("A1", m(2), 100, 0, 50, 150, 0, 0, 0, 0, 300),
        ("A1", m(3), 300, 0, 0, 0, 40, 0, 0, 0, 340),
        ("A1", m(4), 340, 0, 0, 0, 0, -40, 0, 0, 300),
        ("A2", m(1), 0, 100, 0, 0, 0, 0, 0, 0, 100),
        ("A2", m(2), 100, 0, 0, 0, 0, -50, 0, 0, 50),
        ("A2", m(3), 50, 0, 0, 0, 0, 0, -50, 0, 0),
        ("A2", m(4), 0, 0, 0, 0, 0, 0, 0, 50, 50),
        ("A3", m(2), 0, 1200, 0, 0, 0, 0, 0, 0, 1200),
        ("A3", m(3), 1200, 0, 0, 1200, 0, 0, 0, 0, 2400),
        ("A3", m(4), 2400, 0, 0, 0, 0, -400, 0, 0, 2000),
        ("A4", m(3), 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ("A4", m(4), 0, 0, 0, 0, 0, 0, 0, 0, 0),
    ]


def test_nrr_and_grr_by_segment(built):
    # Accounts paying at the start of the month only.
    # smb Feb: A1 100->300, A2 100->50. start 200, end 350 -> NRR 1.75; GRR (100+50)/200 = 0.75;
    #   seat 50/200 = 25 pp, upgrade 150/200 = 75 pp, contraction -50/200 = -25 pp.
    # smb Mar: A1 300->340, A2 50->0. start 350, end 340 -> NRR 340/350; GRR 300/350;
    #   usage 40/350*100 = 11.43 pp, churn -50/350*100 = -14.29 pp.
    # smb Apr: A1 340->300 (A2 starts at 0: reactivation is not NRR). NRR = GRR = 300/340.
    # mid_market Mar: A3 1200->2400, NRR 2.0, GRR 1.0, upgrade 100 pp.
    # mid_market Apr: A3 2400->2000, NRR = GRR = 2000/2400, contraction -16.67 pp.
    got = rows(
        built[0],
        "nrr_by_segment",
        "segment, revenue_month, starting_mrr, ending_mrr, nrr, grr, seat_expansion_pp, "
        "plan_upgrade_pp, usage_expansion_pp, contraction_pp, churn_drag_pp",
        "segment, revenue_month",
    )
    expected = [
        ("mid_market", m(3), 1200, 2400, 2.0, 1.0, 0, 100, 0, 0, 0),
        ("mid_market", m(4), 2400, 2000, 2000 / 2400, 2000 / 2400, 0, 0, 0, -400 / 24, 0),
        ("smb", m(2), 200, 350, 1.75, 0.75, 25, 75, 0, -25, 0),
        ("smb", m(3), 350, 340, 340 / 350, 300 / 350, 0, 0, 40 / 3.5, 0, -50 / 3.5),
        ("smb", m(4), 340, 300, 300 / 340, 300 / 340, 0, 0, 0, -40 / 3.4, 0),
    ]
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row[:2] == want[:2]
        assert row[2:] == pytest.approx(want[2:])


def test_nrr_and_grr_by_cohort_with_decomposition(built):
    # Jan cohort = A1 + A2, 100 + 100 = 200 at the end of January.
    #   Feb: 300 + 50 = 350 -> NRR 1.75; GRR (min(300,100) + min(50,100)) / 200 = 0.75
    #   Mar: 340 + 0 = 340 -> NRR 1.70; GRR (100 + 0) / 200 = 0.5
    #   Apr: 300 + 50 = 350 -> NRR 1.75; GRR (100 + 50) / 200 = 0.75
    #   Apr decomposition since January, in pp of 200: seat +50 -> 25, upgrade +150 -> 75,
    #   overage +40 -> 20, contraction -50-40 -> -45, churn -50 -> -25, reactivation +50 -> 25;
    #   100 + 25 + 75 + 20 - 45 - 25 + 25 = 175 = 100 x NRR.
    # Feb cohort = A3, 1200: Mar 2400 -> NRR 2, GRR 1; Apr 2000 -> NRR 2000/1200, GRR 1.
    got = rows(
        built[0],
        "nrr_by_cohort",
        "cohort_month, revenue_month, months_since_acquisition, starting_mrr, ending_mrr, nrr, "
        "grr, seat_expansion_pp, plan_upgrade_pp, usage_expansion_pp, contraction_pp, "
        "churn_drag_pp, reactivation_pp",
        "cohort_month, revenue_month",
    )
    jan, feb = m(1), m(2)
    expected = [
        (jan, jan, 0, 200, 200, 1.0, 1.0, 0, 0, 0, 0, 0, 0),
        (jan, feb, 1, 200, 350, 1.75, 0.75, 25, 75, 0, -25, 0, 0),
        (jan, m(3), 2, 200, 340, 1.7, 0.5, 25, 75, 20, -25, -25, 0),
        (jan, m(4), 3, 200, 350, 1.75, 0.75, 25, 75, 20, -45, -25, 25),
        (feb, feb, 0, 1200, 1200, 1.0, 1.0, 0, 0, 0, 0, 0, 0),
        (feb, m(3), 1, 1200, 2400, 2.0, 1.0, 0, 100, 0, 0, 0, 0),
        (feb, m(4), 2, 1200, 2000, 2000 / 1200, 1.0, 0, 100, 0, -400 / 12, 0, 0),
    ]
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row[:3] == want[:3]
        assert row[3:] == pytest.approx(want[3:])


def test_expansion_velocity(built):
    # Jan cohort (2 accounts) in Feb: A1 expanded +200, A2 shrank -50.
    #   expansion per account 200 / 2 = 100; net change (200 - 50) / 2 = 75; share 1 / 2.
    got = query(
        built[0],
        "select expansion_mrr_per_account, net_mrr_change_per_account, expanding_share "
        "from marts.expansion_velocity where cohort_month = ? and revenue_month = ?",
        [m(1), m(2)],
    )
    assert got == [(100.0, 75.0, 0.5)]


def test_activation_rate_and_time_to_value(built):
    got = rows(
        built[0],
        "activation_by_cohort",
        "cohort_month, segment, signups, activated_users, activation_rate, median_ttv_days",
        "cohort_month",
    )
    assert got == [
        (m(1), "smb", 4, 4, 0.75, 2.25),
        (m(2), "mid_market", 1, 1, 1.0, 2.0),
    ]


def test_day_n_retention(built):
    # Last active day is Feb 15. Jan smb, day 7: u1 (Jan 12 active), u2 (Jan 17), u3 (Jan 22),
    # u4 (Jan 27) are all eligible -> 1 / 4. Day 30: u1 (Feb 04, active), u2 (Feb 09),
    # u3 (Feb 14) eligible; u4's Feb 19 is not in the data yet -> 1 / 3.
    # Feb mid_market, day 7: u5's Feb 10 is eligible, not active -> 0 / 1.
    got = rows(
        built[0],
        "retention",
        "cohort_month, segment, retention_day, eligible_users, retained_users, retention_rate",
        "cohort_month, retention_day",
    )
    assert got == [
        (m(1), "smb", 7, 4, 1, 0.25),
        (m(1), "smb", 30, 3, 1, pytest.approx(1 / 3)),
        (m(2), "mid_market", 7, 1, 0, 0.0),
    ]


def test_viral_coefficient(built):
    # A1 Feb: 4 sent / 5 active users = 0.8 per user; 2 accepted / 4 sent = 0.5 -> k = 0.4.
    # A2 Feb: 2 sent / 1 active = 2.0; 0 accepted -> k = 0. A1 Jan: 1 sent / 1 active, 0 accepted.
    # smb Feb: (4 + 2) sent / (5 + 1) active = 1.0; 2 / 6 accepted -> k = 1/3.
    by_account = rows(
        built[0],
        "viral_coefficient",
        "account_id, activity_month, active_users, invites_sent, invites_accepted, "
        "viral_coefficient",
        "account_id, activity_month",
    )
    feb = m(2)
    assert ("A1", m(1), 1, 1, 0, 0.0) in by_account
    assert ("A1", feb, 5, 4, 2, pytest.approx(0.4)) in by_account
    assert ("A2", feb, 1, 2, 0, 0.0) in by_account
    by_segment = query(
        built[0],
        "select viral_coefficient from marts.viral_coefficient_by_segment "
        "where segment = 'smb' and activity_month = ?",
        [feb],
    )
    assert by_segment == [(pytest.approx(1 / 3),)]


def test_activation_and_pql_funnels(built):
    # Jan smb signups u1..u4: 3 activated in the window (u1, u3, u4); their accounts A1 and A2
    # entered PQL after signup (Jan 20, Feb 01) and raised paid MRR after it (Feb 10, Apr 08).
    activation = query(
        built[0],
        "select stage, users from marts.dashboard_activation_funnel "
        "where cohort_month = ? and segment = 'smb' order by stage_order",
        [m(1)],
    )
    assert activation == [("signed_up", 4), ("activated", 3), ("pql", 3), ("paid", 3)]
    # Jan smb accounts: A1 scored, entered medium, never high, actioned trigger t1 on Feb 01
    # (within 60 days of entry), upgraded Feb 10.
    pql = query(
        built[0],
        "select stage, accounts from marts.dashboard_pql_funnel "
        "where funnel_month = ? and segment = 'smb' order by stage_order",
        [m(1)],
    )
    assert pql == [("scored", 1), ("pql", 1), ("high_tier", 0), ("triggered", 1), ("upgraded", 1)]


def test_pql_conversion(built):
    got = rows(
        built[0],
        "pql_conversion",
        "entry_month, segment, tier, pql_entries, converted_entries, upgrade_mrr, "
        "median_days_to_upgrade",
        "entry_month, segment",
    )
    assert got == [
        (m(1), "smb", "medium", 1, 1, 200.0, 21.0),
        (m(2), "mid_market", "high", 1, 1, 1200.0, 38.0),
        (m(2), "smb", "medium", 1, 0, 0.0, None),
    ]


def test_revenue_attribution_compares_triggered_with_holdout(built):
    got = rows(
        built[0],
        "dashboard_revenue_attribution",
        "trigger_month, program, triggered_accounts, holdout_accounts, triggered_upgrade_rate, "
        "holdout_upgrade_rate, upgrade_rate_lift, triggered_expansion_mrr, "
        "holdout_expansion_mrr, incremental_expansion_mrr",
        "trigger_month",
    )
    assert got == [(m(2), "seat_limit", 1, 2, 1.0, 0.5, 0.5, 200.0, 1200.0, -400.0)]


def test_trigger_performance(built):
    # Feb in_product: t1 actioned (delivered, viewed, clicked, upgraded) + t2 held out.
    # Feb sdr: t3 held out. Mar in_product: t4 suppressed.
    got = rows(
        built[0],
        "dashboard_trigger_performance",
        "trigger_month, route, fired, suppressed, held_out, actioned, delivered, "
        "prompts_viewed, prompts_clicked, upgraded",
        "trigger_month, route",
    )
    assert got == [
        (m(2), "in_product", 2, 0, 1, 1, 1, 1, 1, 1),
        (m(2), "sdr", 1, 0, 1, 0, 0, 0, 0, 0),
        (m(3), "in_product", 1, 1, 0, 0, 0, 0, 0, 0),
    ]


def test_materialize_emits_every_model_with_row_counts_and_passing_checks(built):
    _, result = built
    assert result.success
    row_counts = {
        event.asset_key.to_user_string(): event.materialization.metadata.get("dagster/row_count")
        for event in result.get_asset_materialization_events()
    }
    assert {"staging/stg_events", "marts/nrr_by_cohort", "marts/dashboard_pql_funnel"} <= set(
        row_counts
    )
    assert row_counts["marts/mrr_movements"].value == 13  # the 13 account-months above
    checks = result.get_asset_check_evaluations()
    assert len(checks) > 50
    assert all(check.passed for check in checks)


def test_failing_dbt_test_is_a_failed_asset_check_with_its_row_count(tmp_path, monkeypatch):
    # Two billing rows with a negative MRR break `paid_mrr >= 0` on stg_billing_events.
    bad_rows = [
        ("x01", "A5", ts("2026-03-01 09:00"), "pro", 1, -10.0, "active", "new", 0.0),
        ("x02", "A5", ts("2026-03-02 09:00"), "pro", 1, -20.0, "active", "renewal", 0.0),
    ]
    warehouse = tmp_path / "warehouse.duckdb"
    write_sources(warehouse, {**SOURCES, "billing_events": BILLING + bad_rows})
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))

    result = materialize_metrics(
        warehouse, selection=["staging/stg_billing_events"], raise_on_error=False
    )

    assert not result.success
    failed = [check for check in result.get_asset_check_evaluations() if not check.passed]
    assert [(c.asset_key.to_user_string(), c.check_name) for c in failed] == [
        (
            "staging/stg_billing_events",
            "expression_is_true_stg_billing_events_paid_mrr_0_and_overage_usd_0",
        )
    ]
    assert failed[0].metadata["dagster_dbt/failed_row_count"].value == 2
