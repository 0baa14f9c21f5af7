"""The outcome every signal, score and trigger is judged against: an account paying more.

One definition shared by signal lift, weight calibration and the trigger backtest, so the
three can never disagree on what "converted" means.
"""

from __future__ import annotations

import polars as pl

# Billing `change` values (CONTRACT.md section 3) through which an account starts or grows
# paying. Contract vocabulary, not a tunable rule: a row also has to raise the MRR to count.
UPGRADE_CHANGES = ("new", "upgrade", "seat_add")

UPGRADE_SCHEMA = {
    "account_id": pl.String,
    "upgraded_at": pl.Datetime("us", "UTC"),
    "as_date": pl.Date,
    "change": pl.String,
    "mrr_before": pl.Float64,
    "mrr_after": pl.Float64,
    "mrr_delta": pl.Float64,
}


def upgrades(billing_events: pl.DataFrame) -> pl.DataFrame:
    """Billing rows that raise an account's MRR through new (free -> paid), upgrade or seat_add.

    Rows arrive late and out of order, so each account's log is put in business order
    (occurred_at, then event_id) before `mrr_before` is read off the previous row (0 for the
    first row: the account was free). A `new` row at 0 MRR (a free trial) is not an upgrade.
    """
    return (
        billing_events.lazy()
        .sort("account_id", "occurred_at", "event_id")
        .with_columns(
            pl.col("mrr").shift(1).over("account_id").fill_null(0.0).alias("mrr_before"),
        )
        .filter(pl.col("change").is_in(UPGRADE_CHANGES) & (pl.col("mrr") > pl.col("mrr_before")))
        .select(
            "account_id",
            pl.col("occurred_at").alias("upgraded_at"),
            pl.col("occurred_at").dt.date().alias("as_date"),
            "change",
            pl.col("mrr_before").cast(pl.Float64),
            pl.col("mrr").cast(pl.Float64).alias("mrr_after"),
            (pl.col("mrr") - pl.col("mrr_before")).cast(pl.Float64).alias("mrr_delta"),
        )
        .collect()
        .cast(UPGRADE_SCHEMA)
    )


def upgraded_within(
    frame: pl.DataFrame, upgrades: pl.DataFrame, days: int, date_col: str = "date"
) -> pl.DataFrame:
    """`frame` plus `upgraded_within_{days}d`: an upgrade strictly after `date_col`, within `days`.

    Strictly after, because an upgrade on the observation day itself may have caused the
    behaviour being observed (a new plan unlocks features), not followed from it.
    The next upgrade after each row is found with a forward as-of join, so the cost stays
    linear in rows; the input's row order and columns are kept.
    """
    name = f"upgraded_within_{days}d"
    nxt = (
        upgrades.lazy()
        .select("account_id", pl.col("as_date").alias("_next_upgrade"))
        .unique()
        .sort("_next_upgrade")
    )
    return (
        frame.lazy()
        .with_row_index("_row")
        .sort(date_col)
        .join_asof(
            nxt,
            left_on=date_col,
            right_on="_next_upgrade",
            by="account_id",
            strategy="forward",
            allow_exact_matches=False,
            coalesce=False,
            check_sortedness=False,  # sorted just above; Polars cannot verify it within groups
        )
        .with_columns(
            (
                pl.col("_next_upgrade").is_not_null()
                & (pl.col("_next_upgrade") <= pl.col(date_col) + pl.duration(days=days))
            ).alias(name)
        )
        .sort("_row")
        .drop("_row", "_next_upgrade")
        .collect()
    )
