"""PQL scores (seed 003): seven weighted product-usage components, tiers, and tier changes.

What each component measures is code (it needs the account_daily columns); how much it
weighs, where it earns full points and the tier boundaries are config/scoring.yaml, and the
score carries a hash of that config so every score can be traced to the weights behind it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config
from plg_pipeline.lib.outcomes import upgraded_within
from plg_pipeline.lib.plans import PlanCatalog
from plg_pipeline.lib.signals import Aggregation, trailing

ComponentName = Literal[
    "weekly_active_users",
    "feature_depth",
    "session_duration",
    "collaboration",
    "integrations",
    "org_expansion",
    "billing_proximity",
]


class Component(StrictModel):
    name: ComponentName
    label: str  # as shown in the explanation
    weight: float = Field(ge=0)
    full_at: float = Field(gt=0)  # metric value that earns the full weight (linear below)
    window_days: int = Field(ge=1)


class Tiers(StrictModel):
    """low: score <= low_max; medium: <= medium_max; high: above (seed 003: 0-40/41-70/71-100)."""

    low_max: float = 40
    medium_max: float = 70

    @model_validator(mode="after")
    def _ordered(self) -> Tiers:
        if not 0 <= self.low_max < self.medium_max < 100:
            raise ValueError("need 0 <= low_max < medium_max < 100")
        return self


class CalibrationConfig(StrictModel):
    outcome_window_days: int = Field(default=60, ge=1)
    sample_every_days: int = Field(default=7, ge=1)
    train_fraction: float = Field(default=0.7, gt=0, lt=1)
    l2: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=100, ge=1)


class ScoringConfig(StrictModel):
    components: list[Component] = Field(min_length=1)
    tiers: Tiers = Tiers()
    score_decimals: int = Field(default=1, ge=0, le=6)
    explanation_top: int = Field(default=3, ge=1)
    calibration: CalibrationConfig = CalibrationConfig()

    @field_validator("components")
    @classmethod
    def _weights(cls, components: list[Component]) -> list[Component]:
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate components in {names}")
        total = sum(c.weight for c in components)
        if abs(total - 100) > 1e-6:
            parts = ", ".join(f"{c.name} {c.weight:g}" for c in components)
            raise ValueError(f"weights must sum to 100, got {total:g} ({parts})")
        return components


def load_scoring_config(config_dir: Path | str | None = None) -> ScoringConfig:
    return load_config(config_path("scoring.yaml", config_dir), ScoringConfig)


def score_version(cfg: ScoringConfig) -> str:
    """Short stable hash of what decides a score (components, tiers, rounding)."""
    decisive = cfg.model_dump(mode="json", include={"components", "tiers", "score_decimals"})
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:12]


def _num(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.Float64).fill_null(0.0).fill_nan(0.0)


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den).otherwise(0.0)


def _wau(w: int) -> pl.Expr:
    """Share of seats active in the trailing 7 days (seat_utilisation), averaged over w days."""
    return trailing(_num("seat_utilisation"), "mean", w)


def _feature_depth(w: int) -> pl.Expr:
    """Most distinct advanced (tier > 0) features used on one day in the window."""
    return trailing(_num("premium_features"), "max", w)


def _session_duration(w: int) -> pl.Expr:
    """Average session length in minutes over the window."""
    seconds = trailing(_num("session_seconds"), "sum", w)
    return _ratio(seconds, trailing(_num("sessions"), "sum", w)) / 60


def _collaboration(w: int) -> pl.Expr:
    """Shares + invites per monthly active user, scaled to 30 days."""
    interactions = trailing(_num("shares") + _num("invites_sent"), "sum", w)
    return _ratio(interactions, _num("mau")) * 30 / w


def _integrations(w: int) -> pl.Expr:
    """Integrations connected in the window (no disconnect event exists, so a proxy for active)."""
    return trailing(_num("integrations_connected"), "sum", w)


def _org_expansion(w: int) -> pl.Expr:
    """Growth of monthly active users over w days; 0 without an earlier base (a new account)."""
    return (
        pl.when(_num("_mau_before") > 0).then(_num("mau") / _num("_mau_before") - 1).otherwise(0.0)
    )


# Plan limits (per month) metered by an account_daily column: flows add up, a level does not.
METERED: dict[str, Aggregation] = {"api_calls": "sum", "exports": "sum", "storage_gb": "max"}


def _billing_proximity(w: int) -> pl.Expr:
    """Highest use of any plan limit in the window; a limit hit counts as 100%.

    Metered use is the window's total (or peak, for storage) against the plan's monthly
    limit. Seats are measured against the plan's maximum (members or paid seats, whichever
    is more), not against the paid seats: a free account's seats are its members.
    """
    day = pl.max_horizontal(
        _num("max_limit_utilisation"),
        _ratio(pl.max_horizontal(_num("members"), _num("seats")), _num("_limit_seats")),
        pl.when(_num("limit_hits") > 0).then(1.0).otherwise(0.0),
    )
    metered = (
        _ratio(trailing(_num(name), agg, w), _num(f"_limit_{name}"))
        for name, agg in METERED.items()
    )
    return pl.max_horizontal(trailing(day, "max", w), *metered)


METRICS: dict[str, Callable[[int], pl.Expr]] = {
    "weekly_active_users": _wau,
    "feature_depth": _feature_depth,
    "session_duration": _session_duration,
    "collaboration": _collaboration,
    "integrations": _integrations,
    "org_expansion": _org_expansion,
    "billing_proximity": _billing_proximity,
}


def _fmt(x: float) -> str:
    return f"{round(x, 1):g}"


def score_expr(cfg: ScoringConfig, weights: dict[str, float] | None = None) -> pl.Expr:
    """Score from the `<component>_norm` columns, rounded as configured (weights overridable)."""
    weights = weights or {c.name: c.weight for c in cfg.components}
    total = pl.sum_horizontal(pl.col(f"{c.name}_norm") * weights[c.name] for c in cfg.components)
    return total.round(cfg.score_decimals)


def tier_expr(score: pl.Expr, cfg: ScoringConfig) -> pl.Expr:
    return (
        pl.when(score <= cfg.tiers.low_max)
        .then(pl.lit("low"))
        .when(score <= cfg.tiers.medium_max)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("high"))
    )


def _explanation(cfg: ScoringConfig) -> pl.Expr:
    """Top components by points, e.g. "weekly active users 20/20; billing proximity 14/15".

    Built from row-wise comparisons (each component's rank among the others, ties in config
    order) rather than per-row list sorting, which is an order of magnitude slower.
    """
    pts = [pl.col(f"{c.name}_points").round(1) for c in cfg.components]
    ranks = [
        pl.sum_horizontal(
            pl.lit(0),  # a one-component config has nothing to compare with
            *(
                (pts[j] > pts[i]) | ((pts[j] == pts[i]) & (j < i))
                for j in range(len(pts))
                if j != i
            ),
        )
        for i in range(len(pts))
    ]
    texts = [
        pl.format(f"{c.label} {{}}/{_fmt(c.weight)}", p.cast(pl.String).str.strip_suffix(".0"))
        for c, p in zip(cfg.components, pts, strict=True)
    ]
    top = [
        pl.coalesce(
            pl.when((rank == k) & (p > 0)).then(text)
            for rank, p, text in zip(ranks, pts, texts, strict=True)
        )
        for k in range(min(cfg.explanation_top, len(pts)))
    ]
    joined = pl.concat_str(top, separator="; ", ignore_nulls=True)
    return pl.when(joined != "").then(joined).otherwise(pl.lit("no activity scored"))


def pql_scores(account_daily: pl.DataFrame, plans: PlanCatalog, cfg: ScoringConfig) -> pl.DataFrame:
    """One row per account x date: score 0-100, tier, score_version, explanation, components.

    Per component: `<name>_value` (the metric), `<name>_norm` (value / full_at, clipped to
    0..1) and `<name>_points` (norm x weight). Every window looks back only, so the score of a
    day uses nothing that happened later. Everything needed is in account_daily: user_daily is
    not read.
    """
    limits = pl.LazyFrame(
        {
            "plan": [p.name for p in plans.plans],
            "_limit_seats": [p.max_seats for p in plans.plans],
            **{f"_limit_{n}": [p.limits.get(n) for p in plans.plans] for n in METERED},
        },
        schema={"plan": pl.String} | {f"_limit_{n}": pl.Float64 for n in ("seats", *METERED)},
    )
    lf = account_daily.lazy().sort("account_id", "date")
    lf = lf.join(limits, on="plan", how="left", maintain_order="left")
    expansion = next((c for c in cfg.components if c.name == "org_expansion"), None)
    if expansion is not None:
        before = lf.select(
            "account_id",
            (pl.col("date") + pl.duration(days=expansion.window_days)).alias("date"),
            pl.col("mau").alias("_mau_before"),
        )
        lf = lf.join(before, on=["account_id", "date"], how="left", maintain_order="left")
    values = [METRICS[c.name](c.window_days).alias(f"{c.name}_value") for c in cfg.components]
    norms = [
        (pl.col(f"{c.name}_value") / c.full_at).clip(0.0, 1.0).alias(f"{c.name}_norm")
        for c in cfg.components
    ]
    points = [
        (pl.col(f"{c.name}_norm") * c.weight).alias(f"{c.name}_points") for c in cfg.components
    ]
    return (
        lf.select("account_id", pl.col("date").alias("as_of_date"), *values)
        .with_columns(norms)
        .with_columns(points)
        .with_columns(score_expr(cfg).alias("score"))
        .with_columns(
            tier_expr(pl.col("score"), cfg).alias("tier"),
            pl.lit(score_version(cfg)).alias("score_version"),
            _explanation(cfg).alias("explanation"),
        )
        .select(
            "account_id",
            "as_of_date",
            "score",
            "tier",
            "score_version",
            "explanation",
            *(f"{c.name}_{k}" for c in cfg.components for k in ("value", "norm", "points")),
        )
        .collect()
    )


def tier_transitions(pql_scores: pl.DataFrame) -> pl.DataFrame:
    """Days an account's tier changes: entering or leaving medium or high.

    An account's first scored day counts as a transition (from_tier null) unless it starts
    low, so an account that is already high when first seen is not missed.
    """
    return (
        pql_scores.lazy()
        .sort("account_id", "as_of_date")
        .with_columns(pl.col("tier").shift(1).over("account_id").alias("from_tier"))
        .filter(
            pl.when(pl.col("from_tier").is_null())
            .then(pl.col("tier") != "low")
            .otherwise(pl.col("tier") != pl.col("from_tier"))
        )
        .select("account_id", "as_of_date", "from_tier", pl.col("tier").alias("to_tier"), "score")
        .collect()
    )


class InsufficientHistory(ValueError):
    """Too little upgrade history to fit or judge weights: a fact about the data, not a bug."""


@dataclass(frozen=True)
class Calibration:
    """Suggested weights (one row per component, then any signal) and the backtest summary."""

    weights: pl.DataFrame
    summary: dict[str, float | int | str | None]


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """L2-penalised logistic regression by Newton steps (IRLS).

    Returns ([intercept, coefs...], their standard errors from the penalised Hessian).
    The intercept is not penalised. The penalty keeps the fit finite when a component
    separates the classes perfectly, which small histories do.
    """
    design = np.column_stack([np.ones(len(x)), x])
    penalty = l2 * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    beta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        grad = design.T @ (p - y) + penalty @ beta
        hess = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta, np.sqrt(np.diag(np.linalg.inv(hess)))


def auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties at half credit."""
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = pl.Series(score).rank("average").to_numpy()
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def rescale_to_100(coefs: dict[str, float]) -> dict[str, int]:
    """Positive coefficients as integer weights summing to exactly 100 (largest remainder).

    Integers, so the suggestion can be pasted into scoring.yaml and pass the sum check.
    """
    positive = {k: max(v, 0.0) for k, v in coefs.items()}
    total = sum(positive.values())
    if total == 0:
        return dict.fromkeys(coefs, 0)
    exact = {k: 100 * v / total for k, v in positive.items()}
    floors = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: exact[k] - floors[k], reverse=True)
    for k in by_remainder[: 100 - sum(floors.values())]:
        floors[k] += 1
    return floors


def _precision(frame: pl.DataFrame, tier_col: str, tier: str) -> float | None:
    rows = frame.filter(pl.col(tier_col) == tier)
    return float(rows["_label"].mean()) if rows.height else None


def calibrate_weights(
    pql_scores: pl.DataFrame,
    upgrades: pl.DataFrame,
    cfg: ScoringConfig,
    signal_flags: pl.DataFrame | None = None,
) -> Calibration:
    """Suggest component weights from upgrade history, and backtest them against the current.

    Rows: each account's score every `sample_every_days` days, labelled by an upgrade within
    `outcome_window_days` (lib/outcomes), only where that window is fully observed. The
    sample dates are split in time: the model is fitted on the first `train_fraction` of
    them, minus the rows whose outcome window reaches into the evaluation part (so an
    upgrade never labels both sides), and judged on the rest. Suggested weights are the
    positive logistic coefficients of the 0..1 components rescaled to 100; a negative
    coefficient is clipped to 0 and listed in the summary. Both scorings are applied to the
    same stored components, so the AUCs and tier precisions compare like with like.
    `signal_flags` (account_signals output) adds one row per signal: its coefficient next to
    all components, i.e. what it tells about an upgrade beyond the score (no weight).
    """
    cal = cfg.calibration
    first, last = pql_scores["as_of_date"].min(), pql_scores["as_of_date"].max()
    days_in = (pl.col("as_of_date") - pl.lit(first)).dt.total_days()
    sampled = pql_scores.filter(
        (days_in % cal.sample_every_days == 0)
        & (pl.col("as_of_date") <= pl.lit(last) - pl.duration(days=cal.outcome_window_days))
    )
    names = [c.name for c in cfg.components]
    signals: list[str] = []
    if signal_flags is not None:
        signals = [c for c in signal_flags.columns if signal_flags.schema[c] == pl.Boolean]
        sampled = sampled.join(
            signal_flags.select("account_id", pl.col("date").alias("as_of_date"), *signals),
            on=["account_id", "as_of_date"],
            how="left",
        ).with_columns(pl.col(signals).fill_null(False))
    outcome = f"upgraded_within_{cal.outcome_window_days}d"
    rows = upgraded_within(sampled, upgrades, cal.outcome_window_days, "as_of_date").rename(
        {outcome: "_label"}
    )
    dates = rows["as_of_date"].unique().sort()
    if dates.len() < 2:
        raise InsufficientHistory(
            "calibration needs at least two sample dates with a full outcome window"
        )
    split = dates[min(int(dates.len() * cal.train_fraction), dates.len() - 1)]
    purge_from = split - timedelta(days=cal.outcome_window_days)
    train = rows.filter(pl.col("as_of_date") < purge_from)
    test = rows.filter(pl.col("as_of_date") >= split)
    y = train["_label"].to_numpy()
    if train.height == 0 or y.all() or not y.any():
        raise InsufficientHistory(
            f"calibration needs upgraded and not upgraded rows before {purge_from}; "
            f"history from {first} to {last} is too short"
        )
    norms = [f"{n}_norm" for n in names]
    beta, se = fit_logistic(train.select(norms).to_numpy(), y, cal.l2, cal.max_iter)
    coefs = dict(zip(names, beta[1:].tolist(), strict=True))
    suggested = rescale_to_100(coefs)
    signal_beta, signal_se = np.array([]), np.array([])
    if signals:
        features = train.select(*norms, *signals).cast(pl.Float64).to_numpy()
        both, both_se = fit_logistic(features, y, cal.l2, cal.max_iter)
        signal_beta, signal_se = both[1 + len(names) :], both_se[1 + len(names) :]
    current = {c.name: c.weight for c in cfg.components}
    test = test.with_columns(
        score_expr(cfg).alias("_current"),
        score_expr(cfg, {k: float(v) for k, v in suggested.items()}).alias("_suggested"),
    ).with_columns(
        tier_expr(pl.col("_current"), cfg).alias("_tier_current"),
        tier_expr(pl.col("_suggested"), cfg).alias("_tier_suggested"),
    )
    label = test["_label"].to_numpy()
    clipped = [n for n in names if coefs[n] < 0]
    weights = pl.DataFrame(
        {
            "component": names + signals,
            "kind": ["component"] * len(names) + ["signal"] * len(signals),
            "current_weight": [current[n] for n in names] + [None] * len(signals),
            "suggested_weight": [float(suggested[n]) for n in names] + [None] * len(signals),
            "coefficient": [coefs[n] for n in names] + signal_beta.tolist(),
            "coefficient_se": se[1:].tolist() + signal_se.tolist(),
            "clipped_to_zero": [n in clipped for n in names] + [False] * len(signals),
        },
        schema={
            "component": pl.String,
            "kind": pl.String,
            "current_weight": pl.Float64,
            "suggested_weight": pl.Float64,
            "coefficient": pl.Float64,
            "coefficient_se": pl.Float64,
            "clipped_to_zero": pl.Boolean,
        },
    )
    summary = {
        "score_version": score_version(cfg),
        "train_before": str(purge_from),
        "evaluate_from": str(split),
        "rows_train": train.height,
        "rows_evaluate": test.height,
        "upgrade_rate_evaluate": float(label.mean()) if test.height else None,
        "auc_current": auc(test["_current"].to_numpy(), label),
        "auc_suggested": auc(test["_suggested"].to_numpy(), label),
        "precision_high_current": _precision(test, "_tier_current", "high"),
        "precision_medium_current": _precision(test, "_tier_current", "medium"),
        "precision_high_suggested": _precision(test, "_tier_suggested", "high"),
        "precision_medium_suggested": _precision(test, "_tier_suggested", "medium"),
        "clipped_to_zero": ", ".join(clipped) or None,
    }
    return Calibration(weights=weights, summary=summary)
