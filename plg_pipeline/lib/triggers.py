"""The trigger engine: rule fires -> context -> value-first guard -> routing -> suppression -> holdout.

Rules are always replayed over the whole history and only the asked dates are returned: the
rule cooldown and the rate limit depend on earlier triggers, so a one-day rerun must see the
same past as the full run to produce the same rows and the same trigger ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import polars as pl

from plg_pipeline.lib.plans import PlanCatalog
from plg_pipeline.lib.suppression import (
    holdout_flags,
    latest_consent,
    rate_limit,
    reason_expr,
    route_expr,
    trigger_ids,
    with_history,
)
from plg_pipeline.lib.trigger_conditions import Prepared, TriggerInputs, fire_rules, prepare
from plg_pipeline.lib.trigger_rules import TriggersConfig, ValueFirst

TRIGGER_SCHEMA = {
    "trigger_id": pl.String,
    "account_id": pl.String,
    "user_id": pl.String,
    "trigger_type": pl.String,
    "as_of_date": pl.Date,
    "route": pl.String,
    "suppressed": pl.Boolean,
    "suppression_reason": pl.String,
    "holdout": pl.Boolean,
    "program": pl.String,
    "surface": pl.String,
    "response": pl.String,
    "owner": pl.String,
    "guardrail": pl.String,
    "due_at": pl.Datetime("us", "UTC"),
    "expansion_mrr_potential": pl.Float64,
    "score": pl.Float64,
    "tier": pl.String,
    "explanation": pl.String,
    "priority": pl.Int64,
    "level": pl.String,
    "value_first": pl.Boolean,
    "signal_value": pl.Float64,
    "threshold": pl.Float64,
    "plan": pl.String,
    "segment": pl.String,
    "audience": pl.List(pl.String),
}


def _rules_frame(cfg: TriggersConfig, plans: PlanCatalog) -> pl.LazyFrame:
    rows = []
    for r in cfg.rules:
        named = r.upsell_to not in (None, "next")
        target = plans.plan(r.upsell_to) if named else None
        rows.append(
            {
                "rule": r.name,
                "program": r.program,
                "priority": r.priority,
                "surface": r.surface,
                "response": r.response,
                "guardrail": r.guardrail,
                "owner": r.owner,
                "rule_route": r.route,
                "level": r.level,
                "expansion_nudge": r.expansion_nudge,
                "value_first_guard": r.value_first_guard,
                "upsell_next": r.upsell_to == "next",
                "target_tier": target.tier if target else None,
                "target_price": target.price_per_seat_usd if target else None,
                "signal": r.condition.describe(),
            }
        )
    return pl.LazyFrame(
        rows, schema_overrides={"target_tier": pl.Int64, "target_price": pl.Float64}
    )


def _plans_frame(plans: PlanCatalog) -> pl.LazyFrame:
    rows = []
    for p in plans.plans:
        nxt = plans.next_plan(p.name)
        rows.append(
            {
                "plan": p.name,
                "plan_price": p.price_per_seat_usd,
                "next_tier": nxt.tier if nxt else None,
                "next_price": nxt.price_per_seat_usd if nxt else None,
            }
        )
    return pl.LazyFrame(rows, schema_overrides={"next_tier": pl.Int64, "next_price": pl.Float64})


def _value_first(account: pl.DataFrame, cfg: ValueFirst) -> pl.LazyFrame:
    """Heavy usage with weak outcome (exports, shares, integrations), both per active user."""
    size = f"{cfg.window_days}d"
    sessions = pl.col("sessions").cast(pl.Float64).rolling_sum_by("date", size).over("account_id")
    outcome = pl.sum_horizontal(cfg.outcome_metrics).cast(pl.Float64).rolling_sum_by("date", size)
    return account.lazy().select(
        "account_id",
        pl.col("date").alias("as_of_date"),
        (
            (sessions / pl.col("mau").clip(lower_bound=1) >= cfg.min_sessions_per_active_user)
            & (
                outcome.over("account_id") / pl.col("mau").clip(lower_bound=1)
                <= cfg.max_outcomes_per_active_user
            )
        ).alias("heavy_weak"),
    )


def _context(
    p: Prepared, fires: pl.DataFrame, cfg: TriggersConfig, plans: PlanCatalog
) -> pl.LazyFrame:
    """Fires + rule fields, the account's plan and usage that day, PQL score, expansion potential.

    Potential = target plan price per seat x max(seats, active users in 28 days) - current MRR,
    floored at 0: the plan step and the seat headroom in one figure. Target = the rule's named
    plan, else the next plan, else (top plan) the current plan, which leaves only seat headroom.
    """
    state = p.account.lazy().select(
        "account_id", pl.col("date").alias("as_of_date"), "plan", "plan_tier", "seats", "mrr", "mau"
    )
    pql = p.pql.lazy().select(
        "account_id", "as_of_date", "score", "tier", pl.col("explanation").alias("pql_explanation")
    )
    price = (
        pl.when(pl.col("upsell_next") | pl.col("target_price").is_null())
        .then(pl.coalesce("next_price", "plan_price"))
        .otherwise(pl.col("target_price"))
    )
    headcount = pl.max_horizontal(pl.col("seats").fill_null(0), pl.col("mau").fill_null(0))
    already = (pl.col("upsell_next") & pl.col("next_tier").is_null()) | (
        pl.col("target_tier").is_not_null() & (pl.col("target_tier") <= pl.col("plan_tier"))
    )
    return (
        fires.lazy()
        .join(_rules_frame(cfg, plans), on="rule", how="left")
        .join(state, on=["account_id", "as_of_date"], how="left")
        .join(_plans_frame(plans), on="plan", how="left")
        .join(pql, on=["account_id", "as_of_date"], how="left")
        .join(_value_first(p.account, cfg.value_first), on=["account_id", "as_of_date"], how="left")
        .with_columns(
            (price * headcount - pl.col("mrr").fill_null(0))
            .clip(lower_bound=0)
            .alias("expansion_mrr_potential"),
            already.fill_null(False).alias("already_on_plan"),
            (pl.col("value_first_guard") & pl.col("heavy_weak").fill_null(False)).alias(
                "value_first"
            ),
        )
    )


def _audience(frame: pl.LazyFrame, p: Prepared, consent: pl.LazyFrame) -> pl.LazyFrame:
    """Who a trigger may reach: the user, or for account-level rows the account's consenting members.

    audience_opted_out marks an in-product account-level trigger whose every member opted out:
    there is nobody it may be shown to.
    """
    keys = ["trigger_id"]
    members = (
        frame.filter(pl.col("user_id").is_null())
        .select("trigger_id", "account_id", "as_of_date")
        .join(
            p.members.lazy().select("account_id", pl.col("user_id").alias("member"), "joined_on"),
            on="account_id",
        )
        .filter(pl.col("joined_on") <= pl.col("as_of_date"))
        .join(consent.rename({"user_id": "member"}), on="member", how="left")
        .group_by(keys)
        .agg(
            pl.col("member").filter(~pl.col("opted_out").fill_null(False)).sort().alias("_members"),
            pl.col("opted_out").fill_null(False).any().alias("_any_out"),
        )
    )
    account_level = pl.col("user_id").is_null()
    return (
        frame.join(consent, on="user_id", how="left")
        .join(members, on=keys, how="left")
        .with_columns(
            pl.when(account_level)
            .then(pl.col("_members").fill_null([]))
            .when(pl.col("opted_out").fill_null(False))
            .then(pl.lit([], pl.List(pl.String)))
            .otherwise(pl.concat_list(pl.col("user_id")))
            .alias("audience"),
        )
        .with_columns(
            (
                account_level
                & (pl.col("route") == "in_product")
                & pl.col("_any_out").fill_null(False)
                & (pl.col("audience").list.len() == 0)
            ).alias("audience_opted_out")
        )
    )


def _explanation() -> pl.Expr:
    text = pl.format(
        "{}: {} = {} (threshold {})",
        pl.col("rule"),
        pl.col("signal"),
        pl.col("signal_value").round(2),
        pl.col("threshold").round(2),
    )
    text = (
        pl.when(pl.col("value_first"))
        .then(pl.concat_str(text, pl.lit("; value first: heavy usage, weak outcome")))
        .otherwise(text)
    )
    return (
        pl.when(pl.col("pql_explanation").is_not_null())
        .then(pl.concat_str(text, pl.lit("; PQL: "), pl.col("pql_explanation")))
        .otherwise(text)
        .alias("explanation")
    )


def _due_at(sla_hours: dict[str, float]) -> pl.Expr:
    """SLA clock starts at the end of the as_of_date, when that day's data is complete."""
    micros = pl.col("route").replace_strict(
        {k: int(v * 3_600_000_000) for k, v in sla_hours.items()}, return_dtype=pl.Int64
    )
    day_end = pl.col("as_of_date").cast(pl.Datetime("us")).dt.replace_time_zone(
        "UTC"
    ) + pl.duration(days=1)
    return (day_end + pl.duration(microseconds=micros)).alias("due_at")


def evaluate_triggers(
    inputs: TriggerInputs, cfg: TriggersConfig, as_of_dates: Iterable[date] | None = None
) -> pl.DataFrame:
    """One row per fired trigger (suppressed and held-out ones included) on `as_of_dates`.

    None means every date in the history. Columns: TRIGGER_SCHEMA.
    """
    p = prepare(inputs)
    fires = fire_rules(p, cfg.rules)
    fires = fires.with_columns(
        trigger_ids(fires["rule"], fires["account_id"], fires["user_id"], fires["as_of_date"])
    )
    consent = latest_consent(inputs.user_consent, cfg.suppression)
    segments = inputs.accounts.lazy().select("account_id", "segment")
    frame = (
        _context(p, fires, cfg, inputs.plans)
        .with_columns(
            pl.when(pl.col("value_first"))
            .then(pl.lit(cfg.value_first.response))
            .otherwise(pl.col("response"))
            .alias("response"),
            route_expr(cfg.routing),
        )
        .with_columns(_due_at(cfg.sla_hours), _explanation())
        .pipe(_audience, p, consent)
        .pipe(with_history, p.upgrades, p.account, p.user, cfg.suppression)
        .with_columns(reason_expr(cfg.suppression))
        .join(segments, on="account_id", how="left")
        .collect()
    )
    frame = frame.with_columns(
        rate_limit(frame, cfg.suppression),
        holdout_flags(frame, cfg.holdout),
    ).rename({"rule": "trigger_type"})
    dates = None if as_of_dates is None else pl.Series(list(as_of_dates), dtype=pl.Date)
    return (
        frame.filter(pl.lit(True) if dates is None else pl.col("as_of_date").is_in(dates.implode()))
        .with_columns(suppressed=pl.col("suppression_reason").is_not_null())
        .select([pl.col(c).cast(t) for c, t in TRIGGER_SCHEMA.items()])
        .sort("as_of_date", "account_id", "trigger_type", "user_id", nulls_last=False)
    )
