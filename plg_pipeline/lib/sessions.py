"""Sessionisation: a user's events split wherever they were idle longer than the gap.

Rule: a new session starts when the time since the user's previous event is strictly greater
than `inactivity_gap_minutes`; an idle time exactly equal to the gap continues the session.
Sessions are cut per canonical user (not per account or device), a session crossing midnight
belongs to the UTC day it started, and the id hashes the user and the start instant, so a
re-run over the same events (in any order, late ones included) gives the same ids.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from pydantic import Field

from plg_pipeline.lib.configfile import StrictModel

TS = pl.Datetime("us", "UTC")
SESSION_SCHEMA = {
    "session_id": pl.String,
    "canonical_user_id": pl.String,
    "account_id": pl.String,
    "session_start": TS,
    "session_end": TS,
    "session_date": pl.Date,
    "events": pl.Int64,
    "duration_s": pl.Float64,
}
_ID_SEED = 20240607
"""Fixed seed: Polars' hash is stable for a given seed within the pinned Polars version."""


class SessionConfig(StrictModel):
    inactivity_gap_minutes: float = Field(default=30, gt=0)
    activity_types: list[str] = Field(default=["track", "page", "screen"], min_length=1)
    """Event types that are user activity; identify/group/alias calls are bookkeeping."""


def sessionize(
    attributed: pl.LazyFrame, cfg: SessionConfig, dates: tuple[date, date] | None = None
) -> pl.LazyFrame:
    """sessions from attributed events (canonical_user_id, account_id, event_time, type).

    With `dates` (first, last), only sessions starting in that range are returned; one day of
    events on each side is read, so that a session running over midnight into the range keeps
    its true start and one running out of it keeps its end. A session longer than a day needs
    its start in the range and the range to end the day before it does: an update's affected
    dates reach back to its start (`activity.changes_from`) and its range on to its end
    (`activity.recompute_range`).
    """
    ev = attributed.filter(
        pl.col("canonical_user_id").is_not_null() & pl.col("type").is_in(cfg.activity_types)
    )
    if dates is not None:
        day = timedelta(days=1)
        ev = ev.filter(pl.col("event_date").is_between(dates[0] - day, dates[1] + day))
    gap = timedelta(minutes=cfg.inactivity_gap_minutes)
    sessions = (
        ev.select("canonical_user_id", "account_id", "event_time")
        # a hash key first makes the sort several times faster than on strings alone; the
        # user id after it keeps two users that collide on the hash apart; the account last
        # settles which account a session starting with simultaneous events counts for
        .sort(
            pl.col("canonical_user_id").hash(seed=_ID_SEED),
            "canonical_user_id",
            "event_time",
            "account_id",
            nulls_last=True,
        )
        .with_columns(
            _session_no=(
                (pl.col("canonical_user_id") != pl.col("canonical_user_id").shift())
                | (pl.col("event_time").diff() > gap)
            )
            .fill_null(True)
            .cum_sum()
        )
        .group_by("_session_no")
        .agg(
            pl.col("canonical_user_id").first(),
            account_id=pl.col("account_id").drop_nulls().first(),
            session_start=pl.col("event_time").first(),
            session_end=pl.col("event_time").last(),
            events=pl.len().cast(pl.Int64),
        )
        .with_columns(
            session_id=pl.concat_str(
                "canonical_user_id",
                pl.col("session_start").dt.epoch("us").cast(pl.String),
                separator="|",
            )
            .hash(seed=_ID_SEED)
            .cast(pl.String),
            session_date=pl.col("session_start").dt.date(),
            duration_s=(pl.col("session_end") - pl.col("session_start")).dt.total_microseconds()
            / 1e6,
        )
        .select(list(SESSION_SCHEMA))
    )
    if dates is not None:
        sessions = sessions.filter(pl.col("session_date").is_between(*dates))
    return sessions
