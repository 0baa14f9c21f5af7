"""Guardrails between a rule firing and anyone being contacted: suppression, routing, holdout.

Every suppressed trigger is kept with its reason, so a PM can see why an account heard
nothing; the holdout is recorded the same way, so its outcomes can be compared later.
"""

from __future__ import annotations

import hashlib

import polars as pl

from plg_pipeline.lib.trigger_conditions import greedy_keep
from plg_pipeline.lib.trigger_rules import Holdout, Routing, Suppression

# The suppression_reason vocabulary, in the order checked (a trigger records the first that
# applies); exported for the asset check on trigger_candidates.
REASONS = (
    "consent_opt_out",
    "account_upgraded",
    "already_on_plan",
    "interaction_cooldown",
    "rate_limited",
)
ROUTES = ("in_product", "sdr", "ae_cs")  # least to most human effort


def trigger_ids(
    rule: pl.Series, account: pl.Series, user: pl.Series, window: pl.Series
) -> pl.Series:
    """sha256 of rule|account|user|first day of its cooldown window: a rerun never makes a second."""
    return pl.Series(
        "trigger_id",
        [
            hashlib.sha256(f"{r}|{a}|{u or ''}|{w.isoformat()}".encode()).hexdigest()[:32]
            for r, a, u, w in zip(rule, account, user, window, strict=True)
        ],
        dtype=pl.String,
    )


def holdout_flags(frame: pl.DataFrame, cfg: Holdout) -> pl.Series:
    """True for accounts whose stable hash (salt|program|account) falls in the program's share.

    A hash rather than a random draw: the same account stays in or out across runs and
    machines, and per program, so one program's holdout does not starve another's.
    """
    pairs = frame.select("program", "account_id").unique()
    flags = [
        int(hashlib.sha256(f"{cfg.salt}|{p}|{a}".encode()).hexdigest()[:15], 16) / 16**15
        < cfg.share(p)
        for p, a in pairs.iter_rows()
    ]
    return (
        frame.select("program", "account_id")
        .join(
            pairs.with_columns(holdout=pl.Series(flags, dtype=pl.Boolean)),
            on=["program", "account_id"],
            how="left",
            maintain_order="left",
        )
        .get_column("holdout")
    )


def route_expr(cfg: Routing) -> pl.Expr:
    """Route by expansion MRR potential, raised to the PQL tier's floor, unless the rule pins one.

    Expects columns expansion_mrr_potential, tier, rule_route ("auto" or a route), value_first.
    """
    potential = pl.col("expansion_mrr_potential")
    by_mrr = (
        pl.when(potential.is_null() | (potential < cfg.in_product_below_usd))
        .then(0)
        .when(potential <= cfg.sdr_up_to_usd)
        .then(1)
        .otherwise(2)
    )
    floor = pl.col("tier").replace_strict(
        {t: ROUTES.index(r) for t, r in cfg.tier_floor.items()}, default=0, return_dtype=pl.Int64
    )
    auto = pl.max_horizontal(by_mrr, floor).replace_strict(
        dict(enumerate(ROUTES)), return_dtype=pl.String
    )
    return (
        pl.when(pl.col("value_first"))
        .then(pl.lit("in_product"))
        .when(pl.col("rule_route") == "auto")
        .then(auto)
        .otherwise(pl.col("rule_route"))
        .alias("route")
    )


def latest_consent(user_consent: pl.DataFrame, cfg: Suppression) -> pl.LazyFrame:
    """user_id, opted_out: from each user's latest consent record (the contract: latest wins)."""
    return (
        user_consent.lazy()
        .sort("as_of")
        .group_by("canonical_user_id")
        .agg(pl.col("consent_analytics").last())
        .select(
            pl.col("canonical_user_id").alias("user_id"),
            (~pl.col("consent_analytics").fill_null(cfg.consent_missing_allows)).alias("opted_out"),
        )
    )


def _last_before(
    frame: pl.LazyFrame, events: pl.LazyFrame, by: list[str], name: str
) -> pl.LazyFrame:
    """`frame` + `name`: the latest events.date on or before as_of_date for the same `by` keys."""
    right = events.select(*by, pl.col("date").alias(name)).unique().sort(name)
    return frame.sort("as_of_date").join_asof(
        right, left_on="as_of_date", right_on=name, by=by, check_sortedness=False
    )


def reason_expr(cfg: Suppression) -> pl.Expr:
    """The first suppression reason that applies (rate limiting is decided afterwards).

    Expects opted_out, audience_opted_out, last_upgrade, expansion_nudge, already_on_plan,
    last_interaction columns.
    """
    since = lambda col: (pl.col("as_of_date") - pl.col(col)).dt.total_days()  # noqa: E731
    return (
        pl.when(pl.col("opted_out").fill_null(False) | pl.col("audience_opted_out"))
        .then(pl.lit("consent_opt_out"))
        .when(
            pl.col("expansion_nudge")
            & (since("last_upgrade") < cfg.upgrade_window_days).fill_null(False)
        )
        .then(pl.lit("account_upgraded"))
        .when(pl.col("already_on_plan"))
        .then(pl.lit("already_on_plan"))
        .when((since("last_interaction") < cfg.interaction_cooldown_days).fill_null(False))
        .then(pl.lit("interaction_cooldown"))
        .otherwise(pl.lit(None, pl.String))
        .alias("suppression_reason")
    )


def with_history(
    candidates: pl.LazyFrame,
    upgrades: pl.DataFrame,
    account: pl.DataFrame,
    user: pl.DataFrame,
    cfg: Suppression,
) -> pl.LazyFrame:
    """Candidates + last_upgrade and last_interaction (the target's last prompt click/dismissal)."""
    touched = pl.sum_horizontal(cfg.interaction_metrics) > 0
    acct = _last_before(
        candidates.filter(pl.col("user_id").is_null()),
        account.lazy().filter(touched).select("account_id", "date"),
        ["account_id"],
        "last_interaction",
    )
    usr = _last_before(
        candidates.filter(pl.col("user_id").is_not_null()),
        user.lazy()
        .filter(touched)
        .select(pl.col("canonical_user_id").alias("user_id"), "account_id", "date"),
        ["user_id", "account_id"],
        "last_interaction",
    )
    ups = upgrades.lazy().select("account_id", pl.col("as_date").alias("date"))
    return _last_before(pl.concat([acct, usr]), ups, ["account_id"], "last_upgrade")


def rate_limit(frame: pl.DataFrame, cfg: Suppression) -> pl.Series:
    """Reason column with "rate_limited" where a kept trigger for the same target is too recent.

    Greedy in (date, priority, rule, trigger_id) order, so the earlier trigger wins and on the
    same day the higher-priority rule wins, identically on every run. Account-level triggers
    are limited per account, user-level ones per user; already-suppressed ones do not count.
    """
    order = frame.with_row_index("_row").sort("as_of_date", "priority", "rule", "trigger_id")
    open_ = order.filter(pl.col("suppression_reason").is_null())
    user = open_["user_id"].is_not_null()
    keys = zip(
        user, pl.select(pl.coalesce(open_["user_id"], open_["account_id"])).to_series(), strict=True
    )
    gaps = user.replace_strict({True: cfg.user_rate_limit_days, False: cfg.account_rate_limit_days})
    limited = open_.select("_row").with_columns(
        _limited=~greedy_keep(keys, open_["as_of_date"], gaps)
    )
    return (
        frame.with_row_index("_row")
        .join(limited, on="_row", how="left", maintain_order="left")
        .select(
            pl.when(pl.col("_limited").fill_null(False))
            .then(pl.lit("rate_limited"))
            .otherwise(pl.col("suppression_reason"))
            .alias("suppression_reason")
        )
        .to_series()
    )
