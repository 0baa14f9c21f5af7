"""Activity: sessions and the user-day and account-day tables every later stage reads."""

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts
from plg_pipeline.defs.identity.assets import identity_state_dir
from plg_pipeline.defs.ops.automation import stage_out
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import activity, identity, lake, quality
from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.plans import load_plans

STATE_DIR = "activity_state"
CANDIDATES = "activation_candidates"
TABLES = ("sessions", "user_daily", "account_daily")
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

    Incremental when new arrival days or billing rows came in: the dates they touch (plus
    those of identities merged or consent changed since, for those users and their accounts)
    are rebuilt, and the IO manager replaces just those date files; rewritten event partitions
    or a config change rebuild in full.
    The data-quality checks are blocking: a failing one stops scoring, triggers and actions.
    """
    cfg = activity.load_activity_config(settings.config)
    qcfg = quality.load_quality_config(settings.config)
    catalog = load_catalog(settings.config)
    plans = load_plans(settings.raw, settings.config)
    events = lake.scan_partitions(settings.lake, "events", schema={})
    members = memberships.collect()
    ids = identity_map.collect()
    opted_out = consent.filter(~pl.col("consent_analytics")).select("canonical_user_id").collect()

    def consenting(frame: pl.LazyFrame) -> pl.LazyFrame:
        """`frame`'s events attributed, without users who withheld analytics consent."""
        return identity.attribute_events(frame, ids, members, opted_out)

    state = ActivityState.read(settings.lake / STATE_DIR)
    now = ActivityState(
        events_seen=lake.fingerprints(settings.lake, "events"),
        identity=ids.select("id", "canonical_user_id"),
        opted_out=opted_out.sort("canonical_user_id"),
        config_digest=_digest(cfg, catalog, plans),
        billing=billing.collect(),
        activation_candidates=pl.DataFrame(),
    )
    added, rewritten = (
        lake.changed_files(state.events_seen, now.events_seen) if state else ([], True)
    )
    id_dates = identity.IdentityFacts.path(identity_state_dir(settings), "dates")
    why_full = [
        why
        for why, applies in (
            ("no stored state", state is None),
            ("stored tables missing", not _has_outputs(settings)),
            ("event partitions rewritten", state is not None and rewritten),
            ("config changed", state is not None and state.config_digest != now.config_digest),
            ("identity facts missing", not id_dates.exists()),
        )
        if applies
    ]
    incremental = not why_full
    new_events = pl.scan_parquet([settings.lake / "events" / f for f in added]) if added else None
    if incremental:
        seen = [state.activation_candidates.lazy()]
        if added:
            seen.append(new_events.select(activity.ACTIVATION_COLUMNS))
        candidates = activity.activation_candidates(pl.concat(seen), catalog).collect()
    else:
        candidates = activity.activation_candidates(events, catalog).collect()
    now = replace(now, activation_candidates=candidates)
    activations = activity.first_activations(consenting(candidates.lazy()), catalog)
    args = (members.lazy(), billing, catalog, plans, cfg, activations)
    if incremental:
        changed_ids, changed_users = state.changed_users(now)
        stored = activity.ActivityTables(*(lake.scan_dates(settings.lake, t) for t in TABLES))
        arrived, reached, dates = None, None, []
        if added:
            arrived = consenting(new_events)
            reached = activity.changes_from(arrived, stored.sessions, cfg.sessions)
            dates = activity.affected_dates(
                new_events, changed_ids, pl.scan_parquet(id_dates), reached,
                sessions=stored.sessions, users=changed_users,
            )  # fmt: skip
        # attribute only the events the update reads
        since = activity.first_date_read(dates) if dates else None
        recent = events.filter(pl.col("event_date") >= since) if dates else events
        billing_from = activity.billing_changed_from(state.billing, now.billing)
        tables = activity.activity_tables(
            consenting(recent), *args, stored, dates, billing_from,
            arrived=arrived, changed_users=changed_users, identity_map=ids, reached=reached,
        )  # fmt: skip
        days_rebuilt = tables.account_daily.frame["date"].n_unique()
        note = activity.rebuild_note(tables.account_daily.frame, changed_users)
        mode = f"incremental: {len(added)} new day(s), {note}"
        if billing_from is not None:
            mode += f", billing changed from {billing_from}"
        # the checks measure the new events' dates, at a cost that does not grow with history
        first = new_events.select(pl.col("event_date").min()).collect().item() if added else None
        checked = events.filter(pl.col("event_date") >= first) if first else events.clear()
        scope = f"events dated {first} or later" if first else "no new events"
    else:
        tables = activity.activity_tables(consenting(events), *args)
        days_rebuilt = tables.account_daily.frame["date"].n_unique()
        mode = f"full: {why_full[0]}"
        checked, scope = events, "all events"
    sessions, user_daily, account_daily = tables
    context.log.info(f"activity: {mode}")
    yield dg.Output(sessions, "sessions")
    yield dg.Output(user_daily, "user_daily")
    yield dg.Output(
        account_daily,
        "account_daily",
        metadata={
            "accounts_rebuilt": dg.MetadataValue.int(account_daily.frame["account_id"].n_unique()),
            "days_rebuilt": dg.MetadataValue.int(days_rebuilt),
            "opted_out_users_excluded": dg.MetadataValue.int(opted_out.height),
            "mode": mode,
        },
    )
    # a retried message keeps its timestamp, so its copies share an event date: duplicates of
    # the new events are among the dates rebuilt
    attributed = identity.attribute_events(checked, ids, members).select(_CHECKED_COLUMNS)
    if incremental:  # a few days: attributed once for the three checks
        attributed = attributed.collect().lazy()
    measured = (
        quality.event_completeness(attributed, qcfg),
        quality.duplicate_message_ids(attributed, qcfg),
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
                "scope": dg.MetadataValue.text(scope),
                **{k: dg.MetadataValue.float(float(v)) for k, v in m.details.items()},
            },
        )
    # outputs are stored by now: only then may the next run build on them
    now.write(settings.lake / STATE_DIR)


_CHECKED_COLUMNS = (
    "event_id", "type", "user_id", "anonymous_id", "account_id", "event_time", "properties",
    "canonical_user_id",
)  # fmt: skip
"""What the data-quality checks read of the attributed events."""


def _has_outputs(settings: PipelineSettings) -> bool:
    return all(lake.schema_path(settings.lake, t).exists() for t in TABLES)


def _digest(*models) -> str:
    """What every row depends on: a change of config rebuilds the tables whole."""
    digest = hashlib.sha256()
    for model in models:
        digest.update(model.model_dump_json().encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ActivityState:
    """What the stored activity tables were built from, to tell whether new days can be spliced."""

    events_seen: pl.DataFrame
    identity: pl.DataFrame
    opted_out: pl.DataFrame
    config_digest: str
    billing: pl.DataFrame
    """The billing rows the stored account_daily was priced with: a change re-prices from the
    earliest date it touches."""
    activation_candidates: pl.DataFrame
    """activity.activation_candidates of the events seen: first activations without history."""

    def changed_users(self, now: "ActivityState") -> tuple[pl.DataFrame, pl.Series]:
        return activity.changed_users(self.identity, now.identity, self.opted_out, now.opted_out)

    def write(self, directory: Path) -> None:
        for name in FRAMES:
            lake.write_parquet(getattr(self, name), lake.table_path(directory, name))
        (directory / "config.sha256").write_text(self.config_digest)

    @classmethod
    def read(cls, directory: Path) -> "ActivityState | None":
        files = {name: lake.table_path(directory, name) for name in FRAMES}
        marker = directory / "config.sha256"
        if not marker.exists() or not all(f.exists() for f in files.values()):
            return None
        frames = {name: pl.read_parquet(f) for name, f in files.items()}
        return cls(config_digest=marker.read_text(), **frames)


FRAMES = ("events_seen", "identity", "opted_out", "billing", CANDIDATES)
