"""The conditions that make a trigger rule fire, evaluated over the whole history at once.

Account-level conditions run on account_daily (dense per account from its first event), so
trailing windows are exact; user-level ones run on the user's active days, which is also when
an in-product nudge can be shown.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import date
from itertools import repeat

import polars as pl

from plg_pipeline.lib.outcomes import upgrades as billing_upgrades
from plg_pipeline.lib.plans import PlanCatalog
from plg_pipeline.lib.trigger_rules import (
    Bound,
    GrowthCondition,
    PowerUsersCondition,
    Rule,
    SeatAdoptionGapCondition,
    StalledPqlCondition,
    SustainedRatioCondition,
    WindowCondition,
)

FIRE_SCHEMA = {
    "rule": pl.String,
    "account_id": pl.String,
    "user_id": pl.String,
    "as_of_date": pl.Date,
    "signal_value": pl.Float64,
    "threshold": pl.Float64,
}


@dataclass(frozen=True)
class TriggerInputs:
    """The tables the trigger engine reads (schemas in ARCHITECTURE.md)."""

    account_daily: pl.DataFrame
    user_daily: pl.DataFrame
    account_memberships: pl.DataFrame
    user_consent: pl.DataFrame
    billing_events: pl.DataFrame
    accounts: pl.DataFrame
    pql_scores: pl.DataFrame
    plans: PlanCatalog


@dataclass(frozen=True)
class Prepared:
    """Inputs reshaped once, so many rules and backtest variants reuse them."""

    account: pl.DataFrame  # account_daily + overage_usd + activated_share, sorted
    user: pl.DataFrame  # user_daily sorted by user, account, date
    members: pl.DataFrame  # account_id, user_id, joined_on, activated_on
    pql: pl.DataFrame
    upgrades: pl.DataFrame


def _asof_steps(grid: pl.LazyFrame, steps: pl.LazyFrame, cols: list[str]) -> pl.LazyFrame:
    """Running totals of per-(account, date) increments, read at each grid date (0 before any)."""
    running = (
        steps.group_by("account_id", "date")
        .agg(pl.col(c).sum() for c in cols)
        .sort("account_id", "date")
        .with_columns(pl.col(c).cum_sum().over("account_id") for c in cols)
        .sort("date")
    )
    return (
        grid.sort("date")
        .join_asof(running, on="date", by="account_id", check_sortedness=False)
        .with_columns(pl.col(c).fill_null(0) for c in cols)
    )


def prepare(inputs: TriggerInputs) -> Prepared:
    memberships = inputs.account_memberships.lazy().select(
        "account_id",
        pl.col("canonical_user_id").alias("user_id"),
        pl.col("valid_from").dt.date().alias("joined_on"),
    )
    first_act = (
        inputs.user_daily.lazy()
        .filter(pl.col("activated"))
        .group_by("account_id", pl.col("canonical_user_id").alias("user_id"))
        .agg(pl.col("date").min().alias("activated_on"))
    )
    members = (
        memberships.group_by("account_id", "user_id")
        .agg(pl.col("joined_on").min())
        .join(first_act, on=["account_id", "user_id"], how="left")
        .sort("account_id", "user_id")
    )
    overage = (
        inputs.billing_events.lazy()
        .group_by("account_id", pl.col("occurred_at").dt.date().alias("date"))
        .agg(pl.col("overage_usd").fill_null(0).sum())
    )
    account = inputs.account_daily.lazy().join(overage, on=["account_id", "date"], how="left")
    account = (
        _asof_steps(account, _adoption_steps(members, 0), ["eligible", "adopted"])
        .with_columns(
            pl.col("overage_usd").fill_null(0.0),
            (pl.col("adopted") / pl.col("eligible").clip(lower_bound=1)).alias("activated_share"),
        )
        .drop("eligible", "adopted")
        .sort("account_id", "date")
    )
    return Prepared(
        account=account.collect(),
        user=inputs.user_daily.sort("canonical_user_id", "account_id", "date"),
        members=members.collect(),
        pql=inputs.pql_scores.sort("account_id", "as_of_date"),
        upgrades=billing_upgrades(inputs.billing_events),
    )


def _adoption_steps(members: pl.LazyFrame, grace_days: int) -> pl.LazyFrame:
    """+1 eligible when a member is grace_days old, +1 adopted when an eligible member activates."""
    eligible_on = pl.col("joined_on") + pl.duration(days=grace_days)
    return pl.concat(
        [
            members.select(
                "account_id", eligible_on.alias("date"), eligible=pl.lit(1), adopted=pl.lit(0)
            ),
            members.filter(pl.col("activated_on").is_not_null()).select(
                "account_id",
                pl.max_horizontal(eligible_on, "activated_on").alias("date"),
                eligible=pl.lit(0),
                adopted=pl.lit(1),
            ),
        ]
    )


def _window(col: str, agg: str, days: int, over: list[str]) -> pl.Expr:
    if agg == "last":
        return pl.col(col).cast(pl.Float64)
    size = f"{days}d"
    fn = {
        "sum": pl.Expr.rolling_sum_by,
        "max": pl.Expr.rolling_max_by,
        "mean": pl.Expr.rolling_mean_by,
    }
    return fn[agg](pl.col(col).cast(pl.Float64), "date", size).over(over)


def _bounds_ok(bounds: list[Bound], days: int, over: list[str]) -> pl.Expr:
    return pl.all_horizontal(
        pl.lit(True), *(_window(b.metric, b.agg, days, over) >= b.min for b in bounds)
    )


def _fires_window(p: Prepared, c: WindowCondition) -> pl.LazyFrame:
    over = ["canonical_user_id", "account_id"] if c.source == "user" else ["account_id"]
    frame = p.user.lazy() if c.source == "user" else p.account.lazy()
    value = _window(c.metric, c.agg, c.window_days, over)
    days = (
        (pl.col(c.metric) > 0).cast(pl.Int64).rolling_sum_by("date", f"{c.window_days}d").over(over)
    )
    hit = (value > c.threshold) if c.strict else (value >= c.threshold)
    user = pl.col("canonical_user_id") if c.source == "user" else pl.lit(None, pl.String)
    if c.account_also:
        context = p.account.lazy().select(
            "account_id",
            "date",
            _account_ok=_bounds_ok(c.account_also, c.window_days, ["account_id"]),
        )
        frame = frame.join(context, on=["account_id", "date"], how="left", maintain_order="left")
        hit = hit & pl.col("_account_ok").fill_null(False)
    return frame.with_columns(signal_value=value, user_id=user).filter(
        hit & (days >= c.min_days) & _bounds_ok(c.also, c.window_days, over)
    )


def _fires_sustained(p: Prepared, c: SustainedRatioCondition) -> pl.LazyFrame:
    # Both windows must be full (min_samples on dense daily rows): a week-old account has no
    # baseline yet, and 6 high days are not 7.
    metric = pl.col(c.metric).cast(pl.Float64)
    base = p.account.lazy().select(
        "account_id",
        (pl.col("date") + pl.duration(days=c.consecutive_days)).alias("date"),
        metric.rolling_median_by("date", f"{c.baseline_days}d", min_samples=c.baseline_days)
        .over("account_id")
        .clip(lower_bound=c.min_baseline)
        .alias("_baseline"),
    )
    low = metric.rolling_min_by("date", f"{c.consecutive_days}d", min_samples=c.consecutive_days)
    return (
        p.account.lazy()
        .with_columns(_low=low.over("account_id"))
        .join(base, on=["account_id", "date"], how="inner")
        .with_columns(
            signal_value=pl.col("_low") / pl.col("_baseline"), user_id=pl.lit(None, pl.String)
        )
        .filter(pl.col("signal_value") > c.threshold)
    )


def _fires_growth(p: Prepared, c: GrowthCondition) -> pl.LazyFrame:
    current = _window(c.metric, "sum", c.window_days, ["account_id"])
    frame = p.account.lazy().with_columns(_cur=current)
    prev = frame.select(
        "account_id",
        (pl.col("date") + pl.duration(days=c.window_days)).alias("date"),
        pl.col("_cur").alias("_prev"),
    )
    growth = (pl.col("_cur") - pl.col("_prev")) / pl.col("_prev")
    return (
        frame.join(prev, on=["account_id", "date"], how="inner")
        .with_columns(signal_value=growth, user_id=pl.lit(None, pl.String))
        .filter(
            (pl.col("signal_value") >= c.threshold)
            & (pl.col("_cur") >= c.min_current)
            & (pl.col("_prev") >= c.min_previous)
            & _bounds_ok(c.also, c.window_days, ["account_id"])
        )
    )


def _fires_power_users(p: Prepared, c: PowerUsersCondition) -> pl.LazyFrame:
    over = ["canonical_user_id", "account_id"]
    points = (
        p.user.lazy()
        .with_columns(
            _wk=_window("sessions", "sum", 7, over),
            _feat=_window(c.feature_metric, "sum", 7, over),
        )
        .filter((pl.col("_wk") >= c.min_weekly_sessions) & (pl.col("_feat") > 0))
        .select("account_id", "canonical_user_id", "date")
    )
    # A power day at p counts on [p, p + window); merging each user's overlapping spans and
    # summing +1/-1 at span edges gives the distinct count per day without a user x day grid.
    gap = (pl.col("date") - pl.col("date").shift(1)).dt.total_days() >= c.window_days
    spans = (
        points.with_columns(_span=gap.fill_null(True).cast(pl.Int64).cum_sum().over(over))
        .group_by("account_id", "canonical_user_id", "_span")
        .agg(
            pl.col("date").min().alias("_start"),
            (pl.col("date").max() + pl.duration(days=c.window_days)).alias("_stop"),
        )
    )
    steps = pl.concat(
        [
            spans.select("account_id", pl.col("_start").alias("date"), _n=pl.lit(1)),
            spans.select("account_id", pl.col("_stop").alias("date"), _n=pl.lit(-1)),
        ]
    )
    return (
        _asof_steps(p.account.lazy(), steps, ["_n"])
        .with_columns(signal_value=pl.col("_n").cast(pl.Float64), user_id=pl.lit(None, pl.String))
        .filter(pl.col("signal_value") >= c.threshold)
    )


def _fires_seat_gap(p: Prepared, c: SeatAdoptionGapCondition, cooldown_days: int) -> pl.LazyFrame:
    members = p.members.lazy()
    gap = (
        _asof_steps(
            p.account.lazy().select("account_id", "date"),
            _adoption_steps(members, c.grace_days),
            ["eligible", "adopted"],
        )
        .with_columns(signal_value=pl.col("adopted") / pl.col("eligible").clip(lower_bound=1))
        .filter((pl.col("eligible") >= c.min_members) & (pl.col("signal_value") < c.threshold))
        .sort("date", "account_id")
        .collect()
    )
    # Cooldown on the account-days before fanning out to members keeps the fan-out small;
    # the per-user cooldown downstream then keeps every fanned-out row.
    gap = gap.filter(greedy_keep(gap["account_id"], gap["date"], cooldown_days))
    return (
        gap.lazy()
        .join(members, on="account_id", how="inner")
        .filter(
            (pl.col("joined_on") + pl.duration(days=c.grace_days) <= pl.col("date"))
            & (pl.col("activated_on").is_null() | (pl.col("activated_on") > pl.col("date")))
        )
    )


def _fires_stalled(p: Prepared, c: StalledPqlCondition) -> pl.LazyFrame:
    is_tier = pl.col("tier") == c.tier
    new_run = (is_tier != is_tier.shift(1)) | (
        (pl.col("date") - pl.col("date").shift(1)).dt.total_days() > 1
    )
    last_up = (
        p.upgrades.lazy().select("account_id", pl.col("as_date").alias("_up")).unique().sort("_up")
    )
    start = pl.max_horizontal(pl.col("_run_start"), pl.col("_up") + pl.duration(days=1))
    return (
        p.pql.lazy()
        .rename({"as_of_date": "date"})
        .with_columns(_run=new_run.fill_null(True).cast(pl.Int64).cum_sum().over("account_id"))
        .with_columns(_run_start=pl.col("date").min().over("account_id", "_run"))
        .filter(is_tier)
        .sort("date")
        .join_asof(last_up, left_on="date", right_on="_up", by="account_id", check_sortedness=False)
        .with_columns(
            signal_value=((pl.col("date") - start).dt.total_days() + 1).cast(pl.Float64),
            user_id=pl.lit(None, pl.String),
        )
        .filter(pl.col("signal_value").is_between(c.threshold, c.max_days))
    )


def greedy_keep(
    keys: Iterable[Hashable], days: Iterable[date], gaps: int | Iterable[int]
) -> pl.Series:
    """Keep a row unless a kept row with the same key lies fewer than its gap days before it.

    Rows must come in date order (ties in the order that should win). Sequential by nature (a
    kept row decides about the next), so a plain loop; it runs on fired rows only.
    """
    gaps = repeat(gaps) if isinstance(gaps, int) else gaps
    last: dict[Hashable, date] = {}
    kept = []
    for key, day, gap in zip(keys, days, gaps, strict=False):  # gaps may be endless
        prev = last.get(key)
        keep = prev is None or (day - prev).days >= gap
        if keep:
            last[key] = day
        kept.append(keep)
    return pl.Series("keep", kept, dtype=pl.Boolean)


def fire_rule(p: Prepared, rule: Rule) -> pl.DataFrame:
    """Days on which `rule`'s condition holds, at most one per target per `cooldown_days`.

    The cooldown runs from the last kept fire (not from fixed calendar buckets), so a condition
    that holds across a bucket edge cannot fire twice in two days.
    """
    c = rule.condition
    if isinstance(c, WindowCondition):
        fires = _fires_window(p, c)
    elif isinstance(c, SustainedRatioCondition):
        fires = _fires_sustained(p, c)
    elif isinstance(c, GrowthCondition):
        fires = _fires_growth(p, c)
    elif isinstance(c, PowerUsersCondition):
        fires = _fires_power_users(p, c)
    elif isinstance(c, SeatAdoptionGapCondition):
        fires = _fires_seat_gap(p, c, rule.cooldown_days)
    else:
        fires = _fires_stalled(p, c)
    fires = (
        fires.select(
            pl.lit(rule.name).alias("rule"),
            "account_id",
            "user_id",
            pl.col("date").alias("as_of_date"),
            pl.col("signal_value").cast(pl.Float64),
            pl.lit(float(c.threshold)).alias("threshold"),
        )
        .sort("as_of_date", "account_id", "user_id", nulls_last=False)
        .collect()
    )
    keys = zip(fires["account_id"], fires["user_id"], strict=True)
    return fires.filter(greedy_keep(keys, fires["as_of_date"], rule.cooldown_days))


def fire_rules(p: Prepared, rules: list[Rule]) -> pl.DataFrame:
    """All rules' kept fires, stacked (FIRE_SCHEMA)."""
    empty = pl.DataFrame(schema=FIRE_SCHEMA)
    return pl.concat([empty, *(fire_rule(p, r) for r in rules)])
