"""plg-pipeline evaluate: do the demo's expansion analytics tell expansion from its look-alikes?

Reads what a run left in the warehouse (schema marts) and the generator's answer key
(`<raw>/_truth/accounts.csv`, the archetype of every account), and prints five measurements:
signal lift, PQL tier vs later upgrades, each rule's backtest, trigger rates per archetype, and
the weight calibration. No Dagster import: the figures come from the marts and lib functions.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from statistics import NormalDist

import polars as pl

from plg_pipeline.lib import outcomes, scoring, signals, warehouse
from plg_pipeline.lib.configfile import config_path
from plg_pipeline.lib.plans import PlanCatalog, load_plans
from plg_pipeline.lib.trigger_rules import TriggersConfig, load_triggers

EXPANSION_READY = "expansion_ready"
# The generator's archetypes that look like expansion without being it (seed 002).
LOOK_ALIKES = ("lone_power_user", "blocked_admin", "heavy_weak_outcome", "early_limit")
TIERS = ("low", "medium", "high")
TABLES = (
    "signal_lift",
    "pql_scores",
    "billing_events",
    "account_daily",
    "trigger_backtest",
    "trigger_sensitivity",
    "trigger_candidates",
    "weight_calibration",
)


def read_marts(path: Path | str, tables: tuple[str, ...] = TABLES) -> dict[str, pl.DataFrame]:
    """The named marts tables as frames; a missing table is an error naming it."""
    with warehouse.connect(path, read_only=True) as con:
        missing = [t for t in tables if not warehouse.table_exists(con, t)]
        if missing:
            raise FileNotFoundError(f"{path}: no marts.{', marts.'.join(missing)}: run the graph")
        return {t: warehouse.read_table(con, t) for t in tables}


def read_archetypes(raw: Path | str) -> pl.DataFrame:
    """account_id, archetype, group (expansion_ready | look_alike | other) from the truth file."""
    truth = pl.read_csv(Path(raw) / "_truth" / "accounts.csv", columns=["account_id", "archetype"])
    return truth.with_columns(group_expr())


def group_expr() -> pl.Expr:
    return (
        pl.when(pl.col("archetype") == EXPANSION_READY)
        .then(pl.lit("expansion_ready"))
        .when(pl.col("archetype").is_in(LOOK_ALIKES))
        .then(pl.lit("look_alike"))
        .otherwise(pl.lit("other"))
        .alias("group")
    )


def tier_upgrade_rates(
    pql_scores: pl.DataFrame,
    upgrades: pl.DataFrame,
    window_days: int,
    every_days: int,
    warmup_days: int,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """Upgrade rate within `window_days` after a scored day, per PQL tier, with a Wilson CI.

    Each account's tier is sampled every `every_days` days from the first scored date plus
    `warmup_days`: a score read before its trailing windows hold any history is a cold start,
    not a measurement. An upgrade counts strictly after the sample (lib.outcomes); follow-up is
    cut at the end of the data, the same cut for every tier sampled on a date.
    """
    first = pql_scores["as_of_date"].min()
    days_in = (pl.col("as_of_date") - pl.lit(first)).dt.total_days()
    sampled = pql_scores.filter((days_in >= warmup_days) & (days_in % every_days == 0))
    label = f"upgraded_within_{window_days}d"
    rows = outcomes.upgraded_within(
        sampled.select("account_id", "as_of_date", "tier"), upgrades, window_days, "as_of_date"
    )
    counts = rows.group_by("tier").agg(
        pl.len().alias("samples"),
        pl.col("account_id").n_unique().alias("accounts"),
        pl.col(label).sum().cast(pl.Int64).alias("upgraded"),
    )
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    out = []
    for tier in TIERS:
        hit = counts.filter(pl.col("tier") == tier)
        n, x = (hit["samples"][0], hit["upgraded"][0]) if hit.height else (0, 0)
        low, high = signals.wilson(x, n, z) if n else (None, None)
        out.append(
            {
                "tier": tier,
                "samples": n,
                "accounts": hit["accounts"][0] if hit.height else 0,
                "upgraded": x,
                "upgrade_rate": x / n if n else None,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pl.DataFrame(
        out,
        schema={
            "tier": pl.String,
            "samples": pl.Int64,
            "accounts": pl.Int64,
            "upgraded": pl.Int64,
            "upgrade_rate": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
        },
    )


def is_monotone(rates: pl.DataFrame) -> bool:
    """low < medium < high upgrade rate (every tier sampled)."""
    by_tier = dict(zip(rates["tier"], rates["upgrade_rate"], strict=True))
    values = [by_tier.get(t) for t in TIERS]
    return None not in values and values[0] < values[1] < values[2]


def _plan_pitch(cfg: TriggersConfig) -> pl.Expr:
    """A trigger that pitches a plan: its rule names one and value-first did not replace it."""
    pitching = [r.name for r in cfg.rules if r.upsell_to is not None]
    return pl.col("trigger_type").is_in(pitching) & ~pl.col("value_first")


def archetype_trigger_rates(
    trigger_candidates: pl.DataFrame, archetypes: pl.DataFrame, cfg: TriggersConfig
) -> pl.DataFrame:
    """Triggers that were not suppressed (held-out ones included), per account of each archetype.

    `triggers` counts every response; `pitches` only plan pitches (not the seat-adoption nudge,
    not a value-first reroute), which is what a look-alike should not get.
    """
    live = trigger_candidates.filter(~pl.col("suppressed")).with_columns(
        _plan_pitch(cfg).alias("pitch")
    )
    per_account = live.group_by("account_id").agg(
        pl.len().alias("triggers"),
        pl.col("pitch").sum().alias("pitches"),
        pl.col("value_first").sum().alias("value_first"),
    )
    return (
        archetypes.join(per_account, on="account_id", how="left")
        .with_columns(pl.col("triggers", "pitches", "value_first").fill_null(0).cast(pl.Int64))
        .group_by("group", "archetype")
        .agg(
            pl.len().alias("accounts"),
            pl.col("triggers").mean().alias("triggers_per_account"),
            pl.col("pitches").mean().alias("pitches_per_account"),
            (pl.col("pitches") > 0).mean().alias("share_pitched"),
            pl.col("value_first").mean().alias("value_first_per_account"),
        )
        .sort("group", "archetype")
    )


def pitches_by_group(rates: pl.DataFrame) -> dict[str, float]:
    """Plan pitches per account of each group (archetype rates weighted by their accounts)."""
    weighted = rates.group_by("group").agg(
        (pl.col("pitches_per_account") * pl.col("accounts")).sum() / pl.col("accounts").sum()
    )
    return dict(weighted.rows())


def rule_group_pitches(
    trigger_candidates: pl.DataFrame, archetypes: pl.DataFrame, cfg: TriggersConfig
) -> pl.DataFrame:
    """Plan pitches per account by rule (rows) and archetype group (columns)."""
    sizes = archetypes.group_by("group").len("accounts")
    live = (
        trigger_candidates.filter(~pl.col("suppressed") & _plan_pitch(cfg))
        .join(archetypes, on="account_id", how="inner")
        .group_by("trigger_type", "group")
        .len("pitches")
        .join(sizes, on="group")
        .with_columns((pl.col("pitches") / pl.col("accounts")).alias("per_account"))
    )
    rules = pl.DataFrame({"trigger_type": [r.name for r in cfg.rules]})
    wide = live.pivot(on="group", index="trigger_type", values="per_account")
    groups = [g for g in ("expansion_ready", "look_alike", "other") if g in wide.columns]
    return rules.join(wide, on="trigger_type", how="left").select(
        "trigger_type", *(pl.col(g).fill_null(0.0) for g in groups)
    )


def calibration(
    marts: dict[str, pl.DataFrame],
    upgrades: pl.DataFrame,
    plans: PlanCatalog,
    config_dir: Path | None,
) -> tuple[pl.DataFrame, dict]:
    """Current vs suggested weights and both held-out AUCs, recomputed as the asset does.

    The asset keeps the summary (AUCs) in its metadata only, so it is recomputed here from the
    same marts with lib.scoring.calibrate_weights; raises InsufficientHistory as the asset skips.
    """
    cfg = scoring.load_scoring_config(config_dir)
    flags = signals.account_signals(
        marts["account_daily"], signals.load_signals_config(config_dir), plans
    )
    result = scoring.calibrate_weights(marts["pql_scores"], upgrades, cfg, flags)
    return result.weights, result.summary


def _show(title: str, frame: pl.DataFrame) -> None:
    print(f"\n== {title}")
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=160,
        float_precision=3,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_formatting="ASCII_MARKDOWN",
    ):
        print(frame)


def run_evaluate(args: argparse.Namespace) -> int:
    config_dir = Path(args.config) if args.config else None
    marts = read_marts(args.warehouse)
    archetypes = read_archetypes(args.raw)
    plans = load_plans(args.raw, config_dir)
    sig = signals.load_signals_config(config_dir)
    triggers = load_triggers(config_path("triggers.yaml", config_dir), plans=plans)
    ups = outcomes.upgrades(marts["billing_events"])

    _show("1. signal lift (marts.signal_lift)", marts["signal_lift"].drop("description"))

    rates = tier_upgrade_rates(
        marts["pql_scores"],
        ups,
        sig.outcome_window_days,
        sig.evaluation_every_days,
        args.warmup_days,
        sig.confidence,
    )
    monotone = is_monotone(rates)
    _show(
        f"2. PQL tier vs upgrade within {sig.outcome_window_days} days (weekly samples after "
        f"{args.warmup_days} warm-up days): monotone low < medium < high: "
        f"{'yes' if monotone else 'NO'}",
        rates,
    )

    _show("3a. rule backtest (marts.trigger_backtest)", marts["trigger_backtest"])
    _show("3b. threshold sensitivity (marts.trigger_sensitivity)", marts["trigger_sensitivity"])

    by_arch = archetype_trigger_rates(marts["trigger_candidates"], archetypes, triggers)
    pitch = pitches_by_group(by_arch)
    ready, alike = pitch.get("expansion_ready"), pitch.get("look_alike")
    separated = ready is not None and alike is not None and ready > alike
    share = f"{alike / ready:.0%}" if separated and ready else "n/a"
    _show(
        "4. triggers not suppressed, per account (pitches = plan pitches): expansion-ready "
        f"{ready or 0:.2f} vs look-alikes {alike or 0:.2f} pitches per account "
        f"(look-alikes at {share} of the expansion-ready rate)",
        by_arch,
    )
    _show(
        "4b. plan pitches per account by rule and group",
        rule_group_pitches(marts["trigger_candidates"], archetypes, triggers),
    )

    stored = marts["weight_calibration"].height
    try:
        weights, summary = calibration(marts, ups, plans, config_dir)
    except scoring.InsufficientHistory as exc:
        print(f"\n== 5. weight calibration: skipped ({exc})")
    else:
        _show(
            f"5. weight calibration (marts.weight_calibration: {stored} rows; recomputed): "
            f"AUC current {summary['auc_current']:.3f} vs suggested "
            f"{summary['auc_suggested']:.3f} on {summary['rows_evaluate']} held-out rows "
            f"from {summary['evaluate_from']} (fit before {summary['train_before']})",
            weights.filter(pl.col("kind") == "component").drop("kind"),
        )
    ok = monotone and separated
    return 0 if ok or not args.strict else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    ev = subparsers.add_parser(
        "evaluate", help="measure signals, PQL tiers and triggers against the demo's archetypes"
    )
    ev.add_argument(
        "--warehouse",
        default=os.environ.get("PLG_WAREHOUSE", "data/warehouse.duckdb"),
        help="DuckDB file a run wrote (env PLG_WAREHOUSE)",
    )
    ev.add_argument(
        "--raw",
        default=os.environ.get("PLG_RAW_DIR", "data/raw"),
        help="generated raw root with _truth/accounts.csv (env PLG_RAW_DIR)",
    )
    ev.add_argument("--config", help="config override folder (env PLG_CONFIG_DIR)")
    ev.add_argument(
        "--warmup-days",
        type=int,
        default=28,
        help="skip tier samples in the first days of data, before the score's 28-day windows fill",
    )
    ev.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless tiers are monotone and look-alikes get fewer pitches",
    )
    ev.set_defaults(func=run_evaluate)
    return ev
