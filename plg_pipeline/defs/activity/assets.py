"""Activity: sessions and the user-day and account-day tables every later stage reads."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts
from plg_pipeline.defs.ops.automation import stage_out
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import activity, identity, lake, quality
from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.sessions import sessionize

STATE_DIR = "activity_state"
CHECKED = marts("account_daily")
CHECKS = {
    "events_are_complete": "Share of activity events with a user, an account, a time and properties.",
    "events_have_no_duplicate_message_ids": "No messageId appears twice in the curated events.",
    "events_are_attributed_to_users_and_accounts": "Share of activity events with a canonical user and an account.",
}


@dg.multi_asset(
    outs={
        "sessions": stage_out(
            "activity", "sessions", "Sessions per canonical user (inactivity gap from config)."
        ),
        "user_daily": stage_out(
            "activity", "user_daily", "One row per user x account x day with any activity."
        ),
        "account_daily": stage_out(
            "activity", "account_daily", "One row per account x day: usage, limits, seats, WAU/MAU."
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
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    identity_map: pl.LazyFrame,
    memberships: pl.LazyFrame,
    consent: pl.LazyFrame,
    billing: pl.LazyFrame,
):
    """Attribute events to users and accounts, drop users without analytics consent, aggregate.

    Incremental when only new arrival days came in: the dates they touch (plus those of
    identities merged since) are rebuilt and spliced in; anything else rebuilds in full.
    The data-quality checks are blocking: a failing one stops scoring, triggers and actions.
    """
    cfg = activity.load_activity_config(settings.config)
    qcfg = quality.load_quality_config(settings.config)
    catalog = load_catalog(settings.config)
    plans = load_plans(settings.raw, settings.config)
    events = lake.scan_partitions(settings.lake, "events", schema={})
    members = memberships.collect()
    ids = identity_map.collect()
    attributed = identity.attribute_events(events, ids, members)
    opted_out = consent.filter(~pl.col("consent_analytics")).select("canonical_user_id").collect()
    consenting = attributed.join(opted_out.lazy(), on="canonical_user_id", how="anti")

    state = ActivityState.read(settings.lake / STATE_DIR)
    now = ActivityState(
        events_seen=lake.fingerprints(settings.lake, "events"),
        identity=ids.select("id", "canonical_user_id"),
        opted_out=opted_out.sort("canonical_user_id"),
        inputs=_fingerprint(cfg, catalog, plans, billing=billing),
    )
    added, rewritten = (
        lake.changed_files(state.events_seen, now.events_seen) if state else ([], True)
    )
    # billing rows are re-applied to every row when dates are spliced; alone, they need a rebuild
    billing_only = state is not None and not added and state.inputs[1] != now.inputs[1]
    incremental = (
        state is not None
        and not rewritten
        and not billing_only
        and state.same_basis(now)
        and _has_outputs(settings)
    )
    if incremental:
        relabelled = state.identity.join(now.identity, on="id", suffix="_now").filter(
            pl.col("canonical_user_id") != pl.col("canonical_user_id_now")
        )
        new_events = (
            pl.scan_parquet([settings.lake / "events" / f for f in added]) if added else None
        )
        dates = activity.affected_dates(new_events, relabelled, events) if added else []
        sessions, user_daily, account_daily = _update(
            settings, dates, consenting, members, billing, catalog, plans, cfg
        )
        mode = f"incremental: {len(added)} new day(s), {len(dates)} date(s) rebuilt"
    else:
        sessions = sessionize(consenting, cfg.sessions).collect()
        user_daily = activity.user_daily(
            consenting, sessions.lazy(), members.lazy(), catalog, plans, cfg
        ).collect()
        account_daily = activity.account_daily(
            consenting, sessions.lazy(), members.lazy(), billing, catalog, plans, cfg
        )
        mode = "full"
    context.log.info(f"activity: {mode}")
    yield dg.Output(sessions, "sessions")
    yield dg.Output(user_daily, "user_daily")
    yield dg.Output(
        account_daily,
        "account_daily",
        metadata={
            "accounts": dg.MetadataValue.int(account_daily["account_id"].n_unique()),
            "days": dg.MetadataValue.int(account_daily["date"].n_unique()),
            "opted_out_users_excluded": dg.MetadataValue.int(opted_out.height),
            "mode": mode,
        },
    )
    measured = (
        quality.event_completeness(attributed, qcfg),
        quality.duplicate_message_ids(events, qcfg),
        quality.identity_match_rate(attributed, qcfg),
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
    # outputs are stored by now: only then may the next run build on them
    now.write(settings.lake / STATE_DIR)


def _has_outputs(settings: PipelineSettings) -> bool:
    return all(
        lake.table_path(settings.lake, t).exists()
        for t in ("sessions", "user_daily", "account_daily")
    )


def _fingerprint(*models, billing: pl.LazyFrame) -> tuple[str, str]:
    """(config digest, billing digest): config changes every row; billing is refreshed on splice."""
    digest = hashlib.sha256()
    for model in models:
        digest.update(model.model_dump_json().encode())
    billing_digest = hashlib.sha256(billing.collect().hash_rows(seed=0).sort().to_numpy().tobytes())
    return digest.hexdigest(), billing_digest.hexdigest()


def _update(settings, dates, consenting, members, billing, catalog, plans, cfg):
    """Rebuild the affected date span of each table and splice it into the stored one."""
    stored = {
        t: pl.read_parquet(lake.table_path(settings.lake, t))
        for t in ("sessions", "user_daily", "account_daily")
    }
    span = activity.recompute_range(stored["account_daily"], dates, consenting, members.lazy(), cfg)
    if span is None:
        return stored["sessions"], stored["user_daily"], stored["account_daily"]
    fresh_sessions = sessionize(consenting, cfg.sessions, span).collect()
    fresh_user_daily = activity.user_daily(
        consenting, fresh_sessions.lazy(), members.lazy(), catalog, plans, cfg, span
    ).collect()
    account_daily = activity.update_account_daily(
        stored["account_daily"], dates, consenting, members.lazy(), billing, catalog, plans, cfg
    )
    return (
        activity.splice(stored["sessions"], fresh_sessions, "session_date", span),
        activity.splice(stored["user_daily"], fresh_user_daily, "date", span),
        account_daily,
    )


@dataclass(frozen=True)
class ActivityState:
    """What the stored activity tables were built from, to tell whether new days can be spliced."""

    events_seen: pl.DataFrame
    identity: pl.DataFrame
    opted_out: pl.DataFrame
    inputs: tuple[str, str]  # (config digest, billing digest)

    def same_basis(self, other: "ActivityState") -> bool:
        return self.inputs[0] == other.inputs[0] and self.opted_out.equals(other.opted_out)

    def write(self, directory: Path) -> None:
        lake.write_parquet(self.events_seen, lake.table_path(directory, "events_seen"))
        lake.write_parquet(self.identity, lake.table_path(directory, "identity"))
        lake.write_parquet(self.opted_out, lake.table_path(directory, "opted_out"))
        (directory / "inputs.sha256").write_text("\n".join(self.inputs))

    @classmethod
    def read(cls, directory: Path) -> "ActivityState | None":
        files = [lake.table_path(directory, n) for n in ("events_seen", "identity", "opted_out")]
        marker = directory / "inputs.sha256"
        if not marker.exists() or not all(f.exists() for f in files):
            return None
        config_digest, billing_digest = marker.read_text().split("\n")
        return cls(*(pl.read_parquet(f) for f in files), (config_digest, billing_digest))
