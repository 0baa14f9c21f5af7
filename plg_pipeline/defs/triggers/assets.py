"""Triggers: which accounts and users get which product response, and would the rules have worked."""

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts, owners
from plg_pipeline.defs.io_manager import frame_metadata
from plg_pipeline.defs.ops.automation import AFTER_ARRIVAL
from plg_pipeline.defs.ops.freshness import sla_freshness
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import backtest, outcomes
from plg_pipeline.lib.configfile import config_path
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.trigger_conditions import TriggerInputs
from plg_pipeline.lib.trigger_rules import load_triggers
from plg_pipeline.lib.triggers import evaluate_triggers

INPUTS = {
    name: dg.AssetIn(marts(name))
    for name in (
        "account_daily",
        "user_daily",
        "account_memberships",
        "user_consent",
        "billing_events",
        "accounts",
        "pql_scores",
    )
}
COMMON = dict(
    group_name="triggers",
    owners=owners("triggers"),
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
    automation_condition=AFTER_ARRIVAL,
    freshness_policy=sla_freshness("triggers"),
)


def _inputs(settings: PipelineSettings, frames: dict[str, pl.LazyFrame]):
    plans = load_plans(settings.raw, settings.config)
    cfg = load_triggers(config_path("triggers.yaml", settings.config), plans=plans)
    return TriggerInputs(**{k: v.collect() for k, v in frames.items()}, plans=plans), cfg


@dg.asset(key=marts("trigger_candidates"), ins=INPUTS, **COMMON)
def trigger_candidates(settings: PipelineSettings, **frames: pl.LazyFrame) -> dg.Output:
    """Every fired trigger with its route, suppression reason and holdout flag; ids are stable."""
    inputs, cfg = _inputs(settings, frames)
    fired = evaluate_triggers(inputs, cfg)
    latest = fired.filter(pl.col("as_of_date") == pl.col("as_of_date").max())
    summary = (
        fired.group_by("trigger_type")
        .agg(
            pl.len().alias("fired"),
            pl.col("suppressed").sum().alias("suppressed"),
            pl.col("holdout").sum().alias("holdout"),
            (~pl.col("suppressed") & ~pl.col("holdout")).sum().alias("eligible"),
        )
        .sort("fired", descending=True)
    )
    reasons = fired.filter(pl.col("suppressed")).group_by("suppression_reason").len()
    return dg.Output(
        fired,
        metadata={
            "by_rule": frame_metadata(summary, preview_rows=30)["preview"],
            "suppression_reasons": dg.MetadataValue.json(dict(reasons.iter_rows())),
            "latest_as_of_date": str(latest["as_of_date"].max()),
            "latest_eligible": dg.MetadataValue.int(
                latest.filter(~pl.col("suppressed") & ~pl.col("holdout")).height
            ),
        },
    )


@dg.multi_asset(
    outs={
        "trigger_backtest": dg.AssetOut(
            key=marts("trigger_backtest"),
            description="Each rule replayed over history: fires, precision, recall, FPR, lead time.",
            owners=owners("triggers"),
        ),
        "trigger_sensitivity": dg.AssetOut(
            key=marts("trigger_sensitivity"),
            description="Each rule at conservative / balanced / aggressive thresholds.",
            owners=owners("triggers"),
        ),
    },
    ins=INPUTS,
    group_name="triggers",
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
)
def trigger_backtest(settings: PipelineSettings, **frames: pl.LazyFrame):
    """What the current rules would have done on history: a rule author sees it before shipping."""
    inputs, cfg = _inputs(settings, frames)
    per_rule, sensitivity = backtest.backtest(inputs, cfg, outcomes.upgrades(inputs.billing_events))
    yield dg.Output(
        per_rule, "trigger_backtest", metadata={"rules": frame_metadata(per_rule, 30)["preview"]}
    )
    yield dg.Output(sensitivity, "trigger_sensitivity")
