"""Scoring: which behaviours predict expansion, and how ready each account is today."""

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts, owners
from plg_pipeline.defs.io_manager import frame_metadata
from plg_pipeline.defs.ops.automation import AFTER_ARRIVAL
from plg_pipeline.defs.ops.freshness import sla_freshness
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import outcomes, scoring, signals
from plg_pipeline.lib.plans import load_plans

COMMON = dict(
    group_name="scoring",
    owners=owners("scoring"),
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
    freshness_policy=sla_freshness("scoring"),
)


@dg.asset(
    key=marts("signal_lift"),
    ins={
        "account_daily": dg.AssetIn(marts("account_daily")),
        "billing": dg.AssetIn(marts("billing_events")),
    },
    **COMMON,
)
def signal_lift(
    settings: PipelineSettings, account_daily: pl.LazyFrame, billing: pl.LazyFrame
) -> dg.Output:
    """Upgrade conversion within 60 days with vs without each configured signal, and a verdict."""
    cfg = signals.load_signals_config(settings.config)
    plans = load_plans(settings.raw, settings.config)
    lift = signals.signal_lift(
        account_daily.collect(), outcomes.upgrades(billing.collect()), cfg, plans
    )
    verdicts = lift.group_by("verdict").len().sort("verdict")
    return dg.Output(
        lift,
        metadata={
            "lift_table": frame_metadata(lift, preview_rows=lift.height)["preview"],
            **{
                f"signals_{r['verdict']}": dg.MetadataValue.int(r["len"])
                for r in verdicts.to_dicts()
            },
        },
    )


@dg.asset(
    key=marts("pql_scores"),
    ins={"account_daily": dg.AssetIn(marts("account_daily"))},
    automation_condition=AFTER_ARRIVAL,
    **COMMON,
)
def pql_scores(settings: PipelineSettings, account_daily: pl.LazyFrame) -> dg.Output:
    """PQL score 0-100 per account and day from seven weighted components, with its tier and why."""
    cfg = scoring.load_scoring_config(settings.config)
    scores = scoring.pql_scores(
        account_daily.collect(), load_plans(settings.raw, settings.config), cfg
    )
    latest = scores.filter(pl.col("as_of_date") == pl.col("as_of_date").max())
    tiers = latest.group_by("tier").len().sort("tier")
    return dg.Output(
        scores,
        metadata={
            "score_version": scoring.score_version(cfg),
            "latest_as_of_date": str(latest["as_of_date"].max()),
            **{f"latest_{r['tier']}": dg.MetadataValue.int(r["len"]) for r in tiers.to_dicts()},
            "top_accounts": frame_metadata(
                latest.sort("score", descending=True).select(
                    "account_id", "score", "tier", "explanation"
                )
            )["preview"],
        },
    )


@dg.asset(
    key=marts("tier_transitions"),
    ins={"scores": dg.AssetIn(marts("pql_scores"))},
    automation_condition=AFTER_ARRIVAL,
    **COMMON,
)
def tier_transitions(scores: pl.LazyFrame) -> pl.DataFrame:
    """Days an account entered or left medium/high: downstream tools act on changes, not snapshots."""
    return scoring.tier_transitions(scores.collect())


@dg.asset(
    key=marts("weight_calibration"),
    ins={
        "scores": dg.AssetIn(marts("pql_scores")),
        "account_daily": dg.AssetIn(marts("account_daily")),
        "billing": dg.AssetIn(marts("billing_events")),
    },
    **COMMON,
)
def weight_calibration(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    scores: pl.LazyFrame,
    account_daily: pl.LazyFrame,
    billing: pl.LazyFrame,
) -> dg.Output:
    """Suggested component weights from upgrade history next to the current ones, both backtested."""
    cfg = scoring.load_scoring_config(settings.config)
    plans = load_plans(settings.raw, settings.config)
    flags = signals.account_signals(
        account_daily.collect(), signals.load_signals_config(settings.config), plans
    )
    try:
        result = scoring.calibrate_weights(
            scores.collect(), outcomes.upgrades(billing.collect()), cfg, flags
        )
    except scoring.InsufficientHistory as exc:
        context.log.warning(f"weight calibration skipped: {exc}")
        empty = pl.DataFrame(schema={"component": pl.String, "current_weight": pl.Float64})
        return dg.Output(empty, metadata={"skipped": str(exc)})
    return dg.Output(
        result.weights,
        metadata={
            **{k: v for k, v in result.summary.items() if v is not None},
            "weights": frame_metadata(result.weights, preview_rows=30)["preview"],
        },
    )
