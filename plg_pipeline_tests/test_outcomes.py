"""outcomes: what counts as an upgrade, and the "upgraded within N days" flag."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl

from plg_pipeline.lib.outcomes import upgraded_within, upgrades
from plg_pipeline.lib.schemas import BILLING_SCHEMA


def billing(*rows: tuple[str, str, datetime, float, str]) -> pl.DataFrame:
    """Billing log from (event_id, account_id, occurred_at, mrr, change); other columns filler."""
    return pl.DataFrame(
        [
            {
                "event_id": e,
                "account_id": a,
                "occurred_at": t,
                "plan": "pro",
                "seats": 1,
                "mrr": m,
                "status": "active",
                "change": c,
                "overage_usd": 0.0,
            }
            for e, a, t, m, c in rows
        ],
        schema=BILLING_SCHEMA,
        orient="row",
    )


def ts(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def test_upgrades_reads_previous_mrr_in_business_order_not_arrival_order():
    log = billing(
        # account a arrives out of order: the seat_add row is first in the file
        ("a3", "a", ts(3, 1), 60.0, "seat_add"),
        ("a1", "a", ts(1, 1), 0.0, "new"),  # free trial: no MRR raise, not an upgrade
        ("a2", "a", ts(2, 1), 45.0, "upgrade"),
        ("a4", "a", ts(3, 5), 30.0, "downgrade"),
        ("a5", "a", ts(3, 20), 45.0, "upgrade"),
        # account b: paid from the first row (mrr_before 0), then a renewal raise does not count
        ("b2", "b", ts(1, 10), 100.0, "renewal"),
        ("b1", "b", ts(1, 2, 9), 80.0, "new"),
        # same timestamp: event_id breaks the tie (c1 before c2)
        ("c2", "c", ts(1, 3), 30.0, "seat_add"),
        ("c1", "c", ts(1, 3), 15.0, "new"),
        # a seat_add that does not raise MRR (e.g. a credit) is not an upgrade
        ("d1", "d", ts(1, 1), 50.0, "new"),
        ("d2", "d", ts(1, 9), 50.0, "seat_add"),
    )
    got = upgrades(log).sort("account_id", "upgraded_at", "change")
    assert got.columns == [
        "account_id",
        "upgraded_at",
        "as_date",
        "change",
        "mrr_before",
        "mrr_after",
        "mrr_delta",
    ]
    assert got.select("account_id", "as_date", "change", "mrr_before", "mrr_after").rows() == [
        ("a", date(2026, 2, 1), "upgrade", 0.0, 45.0),
        ("a", date(2026, 3, 1), "seat_add", 45.0, 60.0),
        ("a", date(2026, 3, 20), "upgrade", 30.0, 45.0),
        ("b", date(2026, 1, 2), "new", 0.0, 80.0),
        ("c", date(2026, 1, 3), "new", 0.0, 15.0),
        ("c", date(2026, 1, 3), "seat_add", 15.0, 30.0),
        ("d", date(2026, 1, 1), "new", 0.0, 50.0),
    ]
    assert got["mrr_delta"].to_list() == [45.0, 15.0, 15.0, 80.0, 15.0, 15.0, 50.0]
    assert got.schema["upgraded_at"] == pl.Datetime("us", "UTC")


def test_upgrades_of_an_empty_log_has_the_schema():
    got = upgrades(billing())
    assert got.height == 0
    assert got.schema["as_date"] == pl.Date and got.schema["mrr_delta"] == pl.Float64


def test_upgraded_within_is_strictly_after_and_inclusive_of_the_last_day():
    ups = upgrades(
        billing(
            ("a1", "a", ts(2, 1), 15.0, "new"),
            ("a2", "a", ts(4, 1), 30.0, "seat_add"),
        )
    )
    frame = pl.DataFrame(
        {
            "account_id": ["a", "a", "a", "a", "b", "a"],
            "day": [
                date(2026, 2, 1),  # upgrade on the day itself: not after -> next is 4/1, too far
                date(2026, 1, 2),  # 30 days before 2/1: inside
                date(2026, 1, 1),  # 31 days before: outside
                date(2026, 3, 5),  # 27 days before the seat_add
                date(2026, 1, 20),  # another account's upgrade does not count
                date(2026, 4, 2),  # nothing after
            ],
            "keep": [1, 2, 3, 4, 5, 6],
        }
    )
    got = upgraded_within(frame, ups, 30, "day")
    assert got.columns == ["account_id", "day", "keep", "upgraded_within_30d"]
    assert got["keep"].to_list() == [1, 2, 3, 4, 5, 6]  # order and columns kept
    assert got["upgraded_within_30d"].to_list() == [False, True, False, True, False, False]
