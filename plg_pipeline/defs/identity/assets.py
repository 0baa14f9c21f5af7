"""Identity: who is who across devices and ids, which accounts they belong to, and consent."""

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts
from plg_pipeline.defs.ops.automation import stage_out
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import identity, lake
from plg_pipeline.lib.activity import load_activity_config

STATE_DIR = "identity_state"
SEEN = "events_seen"
"""Fingerprints of the event partitions already merged into the persisted identity graph."""


def identity_state_dir(settings: PipelineSettings):
    return settings.lake / STATE_DIR


@dg.multi_asset(
    outs={
        "identity_map": stage_out(
            "identity", "identity_map", "One row per known id with its canonical user id."
        ),
        "identity_overmerge_audit": stage_out(
            "identity",
            "identity_overmerge_audit",
            "Anonymous ids linked to too many users (shared devices, kiosks): not used to merge.",
        ),
        "account_memberships": stage_out(
            "identity", "account_memberships", "Users linked to accounts over time, with roles."
        ),
        "user_consent": stage_out(
            "identity", "user_consent", "Each user's latest analytics consent."
        ),
    },
    deps=[marts("events")],
    group_name="identity",
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
)
def identity_graph(context: dg.AssetExecutionContext, settings: PipelineSettings):
    """Merge new arrival days into the persisted identity graph and the per-id facts behind
    memberships and consent; rebuild both from all events only if history changed."""
    cfg = load_activity_config(settings.config).identity
    state_dir = identity_state_dir(settings)
    now = lake.fingerprints(settings.lake, "events")
    seen_path = lake.table_path(state_dir, SEEN)
    seen = pl.read_parquet(seen_path) if seen_path.exists() else now.clear()
    added, rewritten = lake.changed_files(seen, now)
    facts = identity.IdentityFacts.load(state_dir)
    if rewritten or not seen_path.exists():
        mode, files = "full", now["file"].to_list()
        state, facts = None, identity.IdentityFacts.empty()
    else:
        mode, files = "incremental", added
        state = identity.IdentityState.load(state_dir)
    events_dir = settings.lake / "events"
    new_events = pl.scan_parquet([events_dir / f for f in files]) if files else None
    if facts is None:  # discarded by an erasure: rebuilt from the cleaned events
        mode += ", facts rebuilt"
        facts = identity.IdentityFacts.of(lake.scan_partitions(settings.lake, "events", {}))
    elif new_events is not None:
        facts = facts.merge(identity.IdentityFacts.of(new_events))
    if new_events is not None:
        state, relabelled = identity.update_identity(state, new_events, cfg)
    else:
        state, relabelled = state or identity.IdentityState.empty(), pl.DataFrame()
    # merging the same day twice changes nothing, so a crash before `seen` is written is harmless
    state.save(state_dir)
    facts.save(state_dir)
    lake.write_parquet(now, seen_path)
    context.log.info(
        f"identity: {mode} over {len(files)} partition(s), {relabelled.height} relabelled"
    )

    members = facts.memberships(state.identity_map).collect()
    consent = facts.consent(state.identity_map).collect()
    meta = {"mode": mode, "partitions_merged": len(files), "relabelled_ids": relabelled.height}
    yield dg.Output(state.identity_map, "identity_map", metadata=meta)
    yield dg.Output(state.overmerge_audit, "identity_overmerge_audit")
    yield dg.Output(members, "account_memberships")
    yield dg.Output(
        consent,
        "user_consent",
        metadata={"opted_out": dg.MetadataValue.int(int((~consent["consent_analytics"]).sum()))},
    )
