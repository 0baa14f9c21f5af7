"""Right to erasure: remove every trace of a person from the lake and the warehouse, and log it."""

from datetime import UTC, datetime

import dagster as dg
import polars as pl

from plg_pipeline.defs.activity.assets import CANDIDATES
from plg_pipeline.defs.activity.assets import STATE_DIR as ACTIVITY_STATE_DIR
from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, lake_key, marts, owners
from plg_pipeline.defs.identity.assets import SEEN, identity_state_dir
from plg_pipeline.defs.ingest.assets import ERASED_ID_HASHES
from plg_pipeline.defs.io_manager import frame_metadata
from plg_pipeline.defs.ops.automation import AFTER_ARRIVAL
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import lake, privacy, warehouse
from plg_pipeline.lib.activity import load_activity_config
from plg_pipeline.lib.identity import IdentityFacts, IdentityState

EVENT_IDS = ("user_id", "anonymous_id", "previous_id")
PARTITIONED = {  # lake table -> (id columns, raw-text columns); marts copy republished if any
    "events_validated": (EVENT_IDS, ()),
    "events": (EVENT_IDS, ()),
    "event_quarantine": ((), ("raw",)),
}
WHOLE = {  # lake + marts tables rewritten whole
    "account_memberships": (("canonical_user_id",), ()),
    "user_consent": (("canonical_user_id",), ()),
    "table_quarantine": ((), ("raw",)),
}


def _erase_partitions(settings, table, spec, targets, log_parts, erased_at) -> list[str]:
    """Rewrite only the partition files that hold a target; returns the rewritten dates."""
    ids, texts = spec
    rewritten = []
    for path in lake.partition_files(settings.lake, table):
        kept, log = privacy.erase_tables(
            {table: privacy.Erasable(pl.scan_parquet(path), ids, texts)}, targets, erased_at
        )
        if log["rows_removed"].sum():
            lake.write_parquet(kept[table], path)
            rewritten.append(path.stem.removeprefix("dt="))
            log_parts.append(log)
    return rewritten


@dg.asset(
    key=marts("erasure_log"),
    ins={
        "requests": dg.AssetIn(lake_key("deletion_requests")),
        "identity_map": dg.AssetIn(marts("identity_map")),
    },
    deps=[marts("account_memberships"), marts("user_consent"), marts("quarantined_events")],
    group_name="privacy",
    owners=owners("privacy"),
    automation_condition=AFTER_ARRIVAL,
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
)
def erasure_log(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    requests: pl.LazyFrame,
    identity_map: pl.LazyFrame,
) -> dg.Output:
    """One row per request and table with the rows removed; never the person's ids."""
    targets = privacy.erasure_targets(requests.collect(), identity_map.collect())
    erased_at = datetime.now(UTC)
    previous_path = lake.table_path(settings.lake, "erasure_log")
    previous = (
        pl.read_parquet(previous_path)
        if previous_path.exists()
        else pl.DataFrame(schema=privacy.ERASURE_LOG_SCHEMA)
    )
    if targets.is_empty():
        return dg.Output(previous, metadata={"new_requests": 0})

    hashes_path = lake.table_path(settings.lake, ERASED_ID_HASHES)
    hashes = privacy.erased_id_hashes(targets, settings.hash_key)
    if hashes_path.exists():
        hashes = pl.concat([pl.read_parquet(hashes_path), hashes]).unique().sort("id_hash")
    lake.write_parquet(hashes, hashes_path)

    parts: list[pl.DataFrame] = []
    rewritten = {
        t: _erase_partitions(settings, t, spec, targets, parts, erased_at)
        for t, spec in PARTITIONED.items()
    }
    state_dir = identity_state_dir(settings)
    if rewritten["events"]:
        # per-id summaries of events hold raw ids and are stale now: the next identity and
        # activity runs rebuild them in full from the cleaned events
        IdentityFacts.discard(state_dir)
        lake.table_path(settings.lake / ACTIVITY_STATE_DIR, CANDIDATES).unlink(missing_ok=True)
    state = IdentityState.load(state_dir)
    cleaned = privacy.erase_identity_state(
        state, targets, load_activity_config(settings.config).identity
    )
    whole = {
        name: privacy.Erasable(pl.scan_parquet(lake.table_path(settings.lake, name)), *spec)
        for name, spec in WHOLE.items()
    }
    whole["identity_map"] = privacy.Erasable(state.identity_map, ("id",))
    whole["identity_overmerge_audit"] = privacy.Erasable(state.overmerge_audit, ("anonymous_id",))
    kept, log = privacy.erase_tables(whole, targets, erased_at)
    parts.append(log)
    # the graph may re-split once a person is gone: take the maps from the cleaned state
    kept["identity_map"] = cleaned.identity_map
    kept["identity_overmerge_audit"] = cleaned.overmerge_audit
    with settings.warehouse() as con:
        ledger = (
            warehouse.read_table(con, "action_deliveries")
            if warehouse.table_exists(con, "action_deliveries")
            else pl.DataFrame(
                {"trigger_id": [], "payload": []},
                schema={"trigger_id": pl.String, "payload": pl.String},
            )
        )
        kept_ledger, ledger_log = privacy.erase_tables(
            {"action_deliveries": privacy.Erasable(ledger, (), ("payload",))}, targets, erased_at
        )
        parts.append(ledger_log)
        gone = ledger.join(kept_ledger["action_deliveries"], on="trigger_id", how="anti")
        con.execute("begin transaction")
        for trigger_id in gone["trigger_id"].unique().to_list():
            con.execute("delete from marts.action_deliveries where trigger_id = ?", [trigger_id])
        con.execute("commit")
        for name, frame in kept.items():
            if name != "table_quarantine":
                warehouse.publish(con, name, frame)
        for dt in rewritten["events"]:
            frame = pl.read_parquet(lake.partition_path(settings.lake, "events", dt))
            warehouse.publish(
                con,
                "events",
                frame,
                replace_where=("arrival_date", frame["arrival_date"][0] if frame.height else dt),
            )
        quarantine = pl.concat(
            [
                lake.scan_partitions(settings.lake, "event_quarantine", {}).collect(),
                kept["table_quarantine"],
            ],
            how="diagonal_relaxed",
        )
        warehouse.publish(con, "quarantined_events", quarantine)
    for name, frame in kept.items():
        lake.write_parquet(frame, lake.table_path(settings.lake, name))
    cleaned.save(state_dir)
    lake.write_parquet(lake.fingerprints(settings.lake, "events"), lake.table_path(state_dir, SEEN))
    new = pl.concat(parts).filter(
        (pl.col("rows_removed") > 0) | ~pl.col("request_id").is_in(previous["request_id"].implode())
    )
    log = pl.concat([previous, new]).sort("request_id", "table", "erased_at")
    context.log.info(
        f"erasure: {new['rows_removed'].sum()} rows removed for {new['request_id'].n_unique()} request(s)"
    )
    summary = new.group_by("table").agg(pl.col("rows_removed").sum()).sort("table")
    return dg.Output(
        log,
        metadata={
            "new_requests": new["request_id"].n_unique(),
            "rows_removed": int(new["rows_removed"].sum()),
            "removed_by_table": frame_metadata(summary, 30)["preview"],
        },
    )
