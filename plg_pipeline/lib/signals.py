"""Expansion signals (seed 000): trailing-window conditions on account_daily, and their lift.

A signal is data, not code (config/signals.yaml), so a growth PM can add a candidate, run the
lift table, and keep only what the account history says predicts an upgrade.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from statistics import NormalDist
from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config
from plg_pipeline.lib.outcomes import upgraded_within
from plg_pipeline.lib.plans import PlanCatalog

# A column computed here rather than by the activity stage: it needs the plan catalog.
TIER_FEATURE_SHARE = "tier_feature_share"

Aggregation = Literal["sum", "max", "mean", "last"]
Comparator = Literal[">=", ">", "<=", "<", "=="]


class Condition(StrictModel):
    """`aggregation` of the daily sum of `columns` over the trailing `window_days`, compared."""

    columns: list[str] = Field(min_length=1)
    aggregation: Aggregation = "sum"
    window_days: int = Field(default=30, ge=1)
    comparator: Comparator = ">="
    threshold: float


class Signal(Condition):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    # Count a day's value only on days when this holds (e.g. admin views after a limit hit).
    when: Condition | None = None


class Verdicts(StrictModel):
    keep_min_pp: float = 30.0
    drop_below_pp: float = 10.0

    @model_validator(mode="after")
    def _ordered(self) -> Verdicts:
        if self.drop_below_pp > self.keep_min_pp:
            raise ValueError("drop_below_pp must not exceed keep_min_pp")
        return self


class SignalsConfig(StrictModel):
    outcome_window_days: int = Field(default=60, ge=1)
    evaluation_every_days: int = Field(default=7, ge=1)
    min_accounts_per_group: int = Field(default=20, ge=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    verdicts: Verdicts = Verdicts()
    signals: list[Signal] = Field(min_length=1)

    @field_validator("signals")
    @classmethod
    def _unique(cls, signals: list[Signal]) -> list[Signal]:
        names = [s.name for s in signals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate signal names: {', '.join(dupes)}")
        return signals


def load_signals_config(config_dir: Path | str | None = None) -> SignalsConfig:
    return load_config(config_path("signals.yaml", config_dir), SignalsConfig)


def trailing(expr: pl.Expr, aggregation: Aggregation, window_days: int) -> pl.Expr:
    """`expr` aggregated over each account's trailing `window_days` calendar days (incl. today).

    By date, not by row count, so a missing day never stretches the window.
    """
    if aggregation == "last":
        return expr
    window = f"{window_days}d"
    rolled = {
        "sum": expr.rolling_sum_by("date", window),
        "max": expr.rolling_max_by("date", window),
        "mean": expr.rolling_mean_by("date", window),
    }[aggregation]
    return rolled.over("account_id")


def _compare(expr: pl.Expr, comparator: Comparator, threshold: float) -> pl.Expr:
    return {
        ">=": expr >= threshold,
        ">": expr > threshold,
        "<=": expr <= threshold,
        "<": expr < threshold,
        "==": expr == threshold,
    }[comparator]


def _daily(cond: Condition) -> pl.Expr:
    return pl.sum_horizontal(pl.col(c).cast(pl.Float64).fill_null(0.0) for c in cond.columns)


def _holds(cond: Condition) -> pl.Expr:
    return _compare(
        trailing(_daily(cond), cond.aggregation, cond.window_days), cond.comparator, cond.threshold
    )


def with_tier_feature_share(account_daily: pl.LazyFrame, plans: PlanCatalog) -> pl.LazyFrame:
    """Add `tier_feature_share`: share of the account's own plan's features used that day.

    account_daily has distinct features per tier per day only, so this is a per-day share;
    take its trailing max for "adopted in the window" (a lower bound of the distinct share).
    """
    features_in_plan = pl.DataFrame(
        {
            "plan_tier": [p.tier for p in plans.plans],
            "_features_in_plan": [len(p.features) for p in plans.plans],
        },
        schema={"plan_tier": pl.Int64, "_features_in_plan": pl.Int64},
    )
    used = pl.sum_horizontal(
        pl.when(pl.col("plan_tier") >= p.tier)
        .then(pl.col(f"features_tier_{p.tier}").fill_null(0))
        .otherwise(0)
        for p in plans.plans
    )
    return (
        account_daily.join(
            features_in_plan.lazy(), on="plan_tier", how="left", maintain_order="left"
        )
        .with_columns(
            pl.when(pl.col("_features_in_plan") > 0)
            .then(used / pl.col("_features_in_plan"))
            .otherwise(0.0)
            .alias(TIER_FEATURE_SHARE)
        )
        .drop("_features_in_plan")
    )


def account_signals(
    account_daily: pl.DataFrame,
    cfg: SignalsConfig,
    plans: PlanCatalog,
    as_of: date | None = None,
) -> pl.DataFrame:
    """Per account x date: `<signal>` (bool) and `<signal>_value` (the windowed metric).

    Windows look back only, so a row never uses later data; `as_of` keeps that one date.
    """
    needed = {c for s in cfg.signals for c in s.columns + (s.when.columns if s.when else [])}
    missing = sorted(needed - set(account_daily.columns) - {TIER_FEATURE_SHARE})
    if missing:
        raise ValueError(f"signals.yaml refers to columns not in account_daily: {missing}")
    lf = account_daily.lazy().sort("account_id", "date")
    if TIER_FEATURE_SHARE in needed:
        lf = with_tier_feature_share(lf, plans)
    values = []
    for s in cfg.signals:
        daily = _daily(s)
        if s.when is not None:
            daily = pl.when(_holds(s.when)).then(daily).otherwise(0.0)
        values.append(trailing(daily, s.aggregation, s.window_days).alias(f"{s.name}_value"))
    out = lf.select("account_id", "date", *values).with_columns(
        _compare(pl.col(f"{s.name}_value"), s.comparator, s.threshold)
        .fill_null(False)
        .alias(s.name)
        for s in cfg.signals
    )
    if as_of is not None:
        out = out.filter(pl.col("date") == as_of)
    flags = [s.name for s in cfg.signals]
    return out.select("account_id", "date", *flags, *(f"{n}_value" for n in flags)).collect()


def wilson(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion: honest at small n and near 0 or 1, unlike Wald."""
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe_diff(x1: int, n1: int, x2: int, n2: int, confidence: float) -> tuple[float, float]:
    """CI for p1 - p2 by Newcombe's hybrid score method (1998, method 10) from Wilson limits."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def verdict(lift_pp: float | None, n_with: int, n_without: int, cfg: SignalsConfig) -> str:
    if lift_pp is None or min(n_with, n_without) < cfg.min_accounts_per_group:
        return "insufficient"
    if lift_pp >= cfg.verdicts.keep_min_pp:
        return "keep"
    return "weak" if lift_pp >= cfg.verdicts.drop_below_pp else "drop"


def signal_units(
    account_daily: pl.DataFrame, upgrades: pl.DataFrame, cfg: SignalsConfig, plans: PlanCatalog
) -> pl.DataFrame:
    """One row per signal x account: did it show the signal, and did it upgrade afterwards.

    Evaluation dates are every `evaluation_every_days` days from the first date in the data,
    up to the last date that still has a full `outcome_window_days` of follow-up. An account
    that shows the signal on some evaluation date is a "with" unit anchored at the first such
    date; an account that never does is a "without" unit anchored at its first evaluation
    date. One unit per account keeps the units independent (overlapping daily windows of the
    same account would shrink the CI without adding evidence). The outcome is an upgrade
    strictly after the anchor and within `outcome_window_days`.
    """
    first, last = account_daily["date"].min(), account_daily["date"].max()
    flags = account_signals(account_daily, cfg, plans).lazy()
    names = [s.name for s in cfg.signals]
    days_in = (pl.col("date") - pl.lit(first)).dt.total_days()
    units = (
        flags.filter(
            (days_in % cfg.evaluation_every_days == 0)
            & (pl.col("date") <= pl.lit(last) - pl.duration(days=cfg.outcome_window_days))
        )
        .unpivot(on=names, index=["account_id", "date"], variable_name="signal", value_name="flag")
        .group_by("account_id", "signal")
        .agg(
            pl.col("flag").any().alias("with_signal"),
            pl.coalesce(pl.col("date").filter(pl.col("flag")).min(), pl.col("date").min()).alias(
                "anchor_date"
            ),
        )
        .collect()
    )
    outcome = f"upgraded_within_{cfg.outcome_window_days}d"
    return upgraded_within(units, upgrades, cfg.outcome_window_days, "anchor_date").rename(
        {outcome: "upgraded"}
    )


def signal_lift(
    account_daily: pl.DataFrame, upgrades: pl.DataFrame, cfg: SignalsConfig, plans: PlanCatalog
) -> pl.DataFrame:
    """Upgrade conversion with vs without each signal, lift in points with a CI, and a verdict.

    Units are defined in `signal_units`. lift_pp = 100 * (conv_with - conv_without); the CI is
    Newcombe's hybrid score interval; the verdict reads the point estimate against
    config thresholds (seed 000: >= 30 pp keep, < 10 pp drop), or "insufficient" when either
    group has fewer than `min_accounts_per_group` accounts.
    """
    counts = (
        signal_units(account_daily, upgrades, cfg, plans)
        .group_by("signal")
        .agg(
            pl.col("with_signal").sum().alias("accounts_with"),
            (~pl.col("with_signal")).sum().alias("accounts_without"),
            (pl.col("with_signal") & pl.col("upgraded")).sum().alias("upgraded_with"),
            (~pl.col("with_signal") & pl.col("upgraded")).sum().alias("upgraded_without"),
        )
    )
    by_name = {row["signal"]: row for row in counts.iter_rows(named=True)}
    rows = []
    for s in cfg.signals:
        c = by_name.get(s.name, {})
        n1, n0 = c.get("accounts_with", 0), c.get("accounts_without", 0)
        x1, x0 = c.get("upgraded_with", 0), c.get("upgraded_without", 0)
        conv1 = x1 / n1 if n1 else None
        conv0 = x0 / n0 if n0 else None
        lift = low = high = None
        if n1 and n0:
            lift = 100 * (conv1 - conv0)
            low, high = (100 * v for v in newcombe_diff(x1, n1, x0, n0, cfg.confidence))
        rows.append(
            {
                "signal": s.name,
                "description": s.description,
                "accounts_with": n1,
                "accounts_without": n0,
                "conv_with": conv1,
                "conv_without": conv0,
                "lift_pp": lift,
                "ci_low_pp": low,
                "ci_high_pp": high,
                "verdict": verdict(lift, n1, n0, cfg),
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "signal": pl.String,
            "description": pl.String,
            "accounts_with": pl.Int64,
            "accounts_without": pl.Int64,
            "conv_with": pl.Float64,
            "conv_without": pl.Float64,
            "lift_pp": pl.Float64,
            "ci_low_pp": pl.Float64,
            "ci_high_pp": pl.Float64,
            "verdict": pl.String,
        },
    )
