"""Activity: sessions and the user-day and account-day tables every later stage reads."""

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts, owners
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import activity, identity, lake, quality
from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.sessions import sessionize

CHECKED = marts("account_daily")
CHECKS = {
    "events_are_complete": "Share of activity events with a user, an account, a time and properties.",
    "events_have_no_duplicate_message_ids": "No messageId appears twice in the curated events.",
    "events_are_attributed_to_users_and_accounts": "Share of activity events with a canonical user and an account.",
}


def _out(name: str, description: str) -> dg.AssetOut:
    return dg.AssetOut(key=marts(name), description=description, owners=owners("activity"))


@dg.multi_asset(
    outs={
        "sessions": _out("sessions", "Sessions per canonical user (inactivity gap from config)."),
        "user_daily": _out("user_daily", "One row per user x account x day with any activity."),
        "account_daily": _out(
            "account_daily", "One row per account x day: usage, limits, seats, WAU/MAU."
        ),
    },
    ins={
        "identity_map": dg.AssetIn(marts("identity_map")),
        "memberships": dg.AssetIn(marts("account_memberships")),
        "consent": dg.AssetIn(marts("user_consent")),
        "billing": dg.AssetIn(marts("billing_events")),
    },
    deps=[marts("events"), marts("erasure_log")],
    check_specs=[
        dg.AssetCheckSpec(name, asset=CHECKED, blocking=True, description=desc)
        for name, desc in CHECKS.items()
    ],
    group_name="activity",
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
)
def activity_tables(
    settings: PipelineSettings,
    identity_map: pl.LazyFrame,
    memberships: pl.LazyFrame,
    consent: pl.LazyFrame,
    billing: pl.LazyFrame,
):
    """Attribute events to users and accounts, drop users without analytics consent, aggregate.

    The data-quality checks are blocking: a failing one stops scoring, triggers and actions.
    """
    cfg = activity.load_activity_config(settings.config)
    qcfg = quality.load_quality_config(settings.config)
    catalog = load_catalog(settings.config)
    plans = load_plans(settings.raw, settings.config)
    events = lake.scan_partitions(settings.lake, "events", schema={})
    members = memberships.collect()
    attributed = identity.attribute_events(events, identity_map.collect(), members).collect()
    opted_out = consent.filter(~pl.col("consent_analytics")).select("canonical_user_id").collect()
    consenting = attributed.lazy().join(opted_out.lazy(), on="canonical_user_id", how="anti")
    sessions = sessionize(consenting, cfg.sessions).collect()
    user_daily = activity.user_daily(
        consenting, sessions.lazy(), members.lazy(), catalog, plans, cfg
    ).collect()
    account_daily = activity.account_daily(
        consenting, sessions.lazy(), members.lazy(), billing, catalog, plans, cfg
    )
    yield dg.Output(sessions, "sessions")
    yield dg.Output(user_daily, "user_daily")
    yield dg.Output(
        account_daily,
        "account_daily",
        metadata={
            "accounts": dg.MetadataValue.int(account_daily["account_id"].n_unique()),
            "days": dg.MetadataValue.int(account_daily["date"].n_unique()),
            "opted_out_users_excluded": dg.MetadataValue.int(opted_out.height),
        },
    )
    measured = (
        quality.event_completeness(attributed.lazy(), qcfg),
        quality.duplicate_message_ids(events, qcfg),
        quality.identity_match_rate(attributed.lazy(), qcfg),
    )
    for check_name, m in zip(CHECKS, measured, strict=True):
        yield dg.AssetCheckResult(
            asset_key=CHECKED,
            check_name=check_name,
            passed=m.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "value": dg.MetadataValue.float(float(m.value)),
                "threshold": dg.MetadataValue.float(float(m.threshold)),
                "rows": dg.MetadataValue.int(m.rows),
                **{k: dg.MetadataValue.float(float(v)) for k, v in m.details.items()},
            },
        )
