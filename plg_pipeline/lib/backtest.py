"""Replay the trigger rules over history and judge them against real upgrades.

Rules are judged on their raw fires (the condition and the rule's own cooldown), before
suppression, routing and holdout: the question is whether the signal predicts expansion,
not whether the guardrails let it through.
"""

from __future__ import annotations

import polars as pl

from plg_pipeline.lib.outcomes import upgraded_within
from plg_pipeline.lib.trigger_conditions import Prepared, TriggerInputs, fire_rule, prepare
from plg_pipeline.lib.trigger_rules import Rule, TriggersConfig

PER_RULE_SCHEMA = {
    "rule": pl.String,
    "fires": pl.Int64,
    "accounts": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "false_positive_rate": pl.Float64,
    "median_lead_days": pl.Float64,
}
SENSITIVITY_SCHEMA = {
    "rule": pl.String,
    "variant": pl.String,
    "threshold": pl.Float64,
    "fires": pl.Int64,
    "precision": pl.Float64,
    "recall": pl.Float64,
}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score_fires(fires: pl.DataFrame, p: Prepared, upgrades: pl.DataFrame, horizon: int) -> dict:
    """Precision, recall, false-positive rate and lead time of one rule's fires.

    precision: fired accounts with an upgrade within `horizon` days after one of their fires.
    recall: upgrades in the replayed period with a fire of the rule in the `horizon` days before.
    false_positive_rate: fired accounts among the accounts that never upgraded in the period.
    median_lead_days: upgrade date minus the first fire in its look-back, over recalled upgrades.
    """
    start, end = p.account["date"].min(), p.account["date"].max()
    period = upgrades.filter(pl.col("as_date").is_between(start, end))
    fired = fires["account_id"].n_unique()
    hits = upgraded_within(fires, upgrades, horizon, "as_of_date")
    true_pos = hits.filter(pl.col(f"upgraded_within_{horizon}d"))["account_id"].n_unique()
    ups = period.select("account_id", "as_date").unique()
    lead = (
        ups.join(fires.select("account_id", "as_of_date"), on="account_id")
        .filter(
            (pl.col("as_of_date") < pl.col("as_date"))
            & (pl.col("as_of_date") >= pl.col("as_date") - pl.duration(days=horizon))
        )
        .group_by("account_id", "as_date")
        .agg(pl.col("as_of_date").min().alias("first_fire"))
        .with_columns(lead=(pl.col("as_date") - pl.col("first_fire")).dt.total_days())
    )
    never = p.account.select("account_id").unique().join(ups, on="account_id", how="anti")
    false_pos = never.join(fires.select("account_id").unique(), on="account_id").height
    return {
        "fires": fires.height,
        "accounts": fired,
        "precision": _ratio(true_pos, fired),
        "recall": _ratio(lead.height, ups.height),
        "false_positive_rate": _ratio(false_pos, never.height),
        "median_lead_days": lead["lead"].median() if lead.height else None,
    }


def _scaled(rule: Rule, factor: float) -> Rule:
    return rule.model_copy(update={"condition": rule.condition.scaled(factor)})


def backtest(
    inputs: TriggerInputs,
    cfg: TriggersConfig,
    upgrades: pl.DataFrame,
    variants: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per_rule, sensitivity): each rule as configured, then each rule x threshold variant.

    `upgrades` is outcomes.upgrades(billing_events); `variants` maps a name to the factor on
    the rule's main threshold (default: cfg.backtest.variants; > 1 is stricter).
    """
    p = prepare(inputs)
    horizon = cfg.backtest.horizon_days
    variants = cfg.backtest.variants if variants is None else variants
    per_rule, sensitivity = [], []
    for rule in cfg.rules:
        per_rule.append({"rule": rule.name} | score_fires(fire_rule(p, rule), p, upgrades, horizon))
        for name, factor in variants.items():
            scaled = _scaled(rule, factor)
            scores = score_fires(fire_rule(p, scaled), p, upgrades, horizon)
            sensitivity.append(
                {"rule": rule.name, "variant": name, "threshold": scaled.condition.threshold}
                | {k: scores[k] for k in ("fires", "precision", "recall")}
            )
    return (
        pl.DataFrame(per_rule, schema=PER_RULE_SCHEMA),
        pl.DataFrame(sensitivity, schema=SENSITIVITY_SCHEMA),
    )
