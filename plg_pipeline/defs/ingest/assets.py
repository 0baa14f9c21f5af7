"""Ingestion: raw landing files -> validated, deduplicated, PII-safe events and reference tables."""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, lake_key, marts, owners
from plg_pipeline.defs.io_manager import frame_metadata
from plg_pipeline.defs.ops.automation import AFTER_ARRIVAL
from plg_pipeline.defs.ops.freshness import sla_freshness
from plg_pipeline.defs.partitions import arrival_days
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import ingest, lake, warehouse
from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.pii import scrub_raw_text

LOOKBACK_DAYS = ingest.load_ingest_config().dedup_lookback_days
ERASED_ID_HASHES = "erased_id_hashes"
"""Lake table of HMACs of every erased id: re-processing old raw files must not bring them back."""


def _scrub_quarantine(frame: pl.DataFrame, settings: PipelineSettings) -> pl.DataFrame:
    """Quarantine keeps rejected text, but never a person's email, name or full IP."""
    drop_keys = load_catalog(settings.config).drop_keys
    return frame.with_columns(raw=scrub_raw_text(frame["raw"], settings.hash_key, drop_keys))


def load_erased_id_hashes(settings: PipelineSettings) -> frozenset[str]:
    path = lake.table_path(settings.lake, ERASED_ID_HASHES)
    return frozenset(pl.read_parquet(path)["id_hash"].to_list()) if path.exists() else frozenset()


raw_sources = [
    dg.AssetSpec(
        ["raw", name],
        description=desc,
        group_name="raw",
        owners=owners("ingest"),
        kinds={"file"},
    )
    for name, desc in [
        ("events", "Product events as landed: events/dt=YYYY-MM-DD/*.jsonl|.jsonl.gz|.parquet."),
        ("billing", "Append-only subscription change log: billing/subscription_events.csv."),
        ("crm", "One row per account: crm/accounts.csv."),
        ("privacy", "Right-to-erasure requests: privacy/deletion_requests.csv."),
    ]
]


@dg.multi_asset(
    outs={
        "events_validated": dg.AssetOut(
            key=lake_key("events_validated"),
            description="One arrival day's events that passed the contract: PII hashed, in-day retries dropped.",
            owners=owners("ingest"),
        ),
        "event_quarantine": dg.AssetOut(
            key=lake_key("event_quarantine"),
            description="One arrival day's rejected event lines, each with its reason and raw text.",
            owners=owners("ingest"),
        ),
        "ingest_stats": dg.AssetOut(
            key=lake_key("ingest_stats"),
            description="Row accounting per arrival day: rows in, accepted, quarantined, duplicates.",
            owners=owners("ingest"),
        ),
    },
    deps=[dg.AssetKey(["raw", "events"])],
    partitions_def=arrival_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingest",
    retry_policy=RETRY,
)
def events_validated(context: dg.AssetExecutionContext, settings: PipelineSettings):
    """Parse and validate each arrival day; heavy but lock-free, so partitions run in parallel."""
    catalog = load_catalog(settings.config)
    cfg = ingest.load_ingest_config(settings.config)
    erased = load_erased_id_hashes(settings)
    events, quarantine, stats = {}, {}, {}
    keys = {date.fromisoformat(k): k for k in context.partition_keys}
    # Two days at a time: CPU per row is the limit, and the machine has two cores.
    for dt, day in ingest.ingest_arrival_days(
        settings.raw,
        keys,
        catalog=catalog,
        hash_key=settings.hash_key,
        config=cfg,
        erased_id_hashes=erased,
        workers=2,
    ):
        key = keys[dt]
        events[key], quarantine[key] = day.events, _scrub_quarantine(day.quarantine, settings)
        stats[key] = pl.DataFrame([{"arrival_date": dt, **day.stats}])
        context.log.info(f"{key}: {day.stats}")
    return events, quarantine, stats


@dg.asset(
    key=marts("events"),
    ins={
        "validated": dg.AssetIn(
            lake_key("events_validated"),
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-LOOKBACK_DAYS, allow_nonexistent_upstream_partitions=True
            ),
        ),
        "stats": dg.AssetIn(lake_key("ingest_stats")),
        "quarantine": dg.AssetIn(lake_key("event_quarantine")),
    },
    partitions_def=arrival_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
    group_name="ingest",
    owners=owners("ingest"),
    retry_policy=RETRY,
    freshness_policy=sla_freshness("events"),
    check_specs=[
        dg.AssetCheckSpec(
            "events_rows_are_accounted_for",
            asset=marts("events"),
            blocking=True,
            description="rows in = accepted + quarantined + duplicates (+ erased), per arrival day.",
        )
    ],
)
def events(
    context: dg.AssetExecutionContext,
    settings: PipelineSettings,
    validated: pl.LazyFrame,
    stats: pl.LazyFrame,
    quarantine: pl.LazyFrame,
):
    """Curated events: each messageId once across arrival days (the earliest arrival wins)."""
    validated = validated.collect()
    stats_df = stats.collect()
    quarantine_counts = quarantine.group_by("arrival_date").len().collect()
    frames, ledger = {}, []
    for key in context.partition_keys:
        day = date.fromisoformat(key)
        earlier = validated.lazy().filter(
            pl.col("arrival_date").is_between(
                day - timedelta(days=LOOKBACK_DAYS), day - timedelta(days=1)
            )
        )
        kept, cross_day = ingest.drop_seen(
            validated.filter(pl.col("arrival_date") == day), earlier.select("event_id")
        )
        frames[key] = kept
        row = stats_df.filter(pl.col("arrival_date") == day).to_dicts()
        row = (
            row[0] if row else {"rows_in": 0, "quarantined": 0, "duplicates_in_day": 0, "erased": 0}
        )
        quarantined = quarantine_counts.filter(pl.col("arrival_date") == day)["len"].sum()
        ledger.append(
            {
                "arrival_date": key,
                "rows_in": row["rows_in"],
                "accepted": kept.height,
                "quarantined": int(quarantined),
                "duplicates_in_day": row["duplicates_in_day"],
                "duplicates_cross_day": cross_day,
                "erased": row.get("erased", 0),
            }
        )
    repaired = _drop_retries_from_later_days(context, settings)
    table = pl.DataFrame(ledger)
    balanced = table.with_columns(
        ok=pl.col("rows_in")
        == pl.col("accepted")
        + pl.col("quarantined")
        + pl.col("duplicates_in_day")
        + pl.col("duplicates_cross_day")
        + pl.col("erased")
    )
    unbalanced = balanced.filter(~pl.col("ok"))["arrival_date"].to_list()
    totals = {c: int(table[c].sum()) for c in table.columns if c != "arrival_date"}
    yield dg.Output(
        frames,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "later_days_repaired": dg.MetadataValue.json(repaired),
        },
    )
    yield dg.AssetCheckResult(
        check_name="events_rows_are_accounted_for",
        passed=not unbalanced,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "unbalanced_days": dg.MetadataValue.json(unbalanced),
            "per_day": frame_metadata(table, preview_rows=31)["preview"],
        },
    )


def _drop_retries_from_later_days(
    context: dg.AssetExecutionContext, settings: PipelineSettings
) -> list[str]:
    """A later arrival day already published (by a run launched in parallel, or out of order)
    may hold a retry of a message that arrived on one of these days: drop it there too, so the
    earliest arrival wins whatever order the partitions ran in. Runs under the warehouse pool."""
    done = set(context.partition_keys)
    first = min(date.fromisoformat(k) for k in done)
    last = max(date.fromisoformat(k) for k in done)
    repaired = []
    for offset in range(1, (last - first).days + LOOKBACK_DAYS + 1):
        later = first + timedelta(days=offset)
        path = lake.partition_path(settings.lake, "events", later)
        if later.isoformat() in done or not path.exists():
            continue
        window = [later - timedelta(days=i) for i in range(1, LOOKBACK_DAYS + 1)]
        files = lake.partition_files(settings.lake, "events_validated", window)
        if not files:
            continue
        kept, dropped = ingest.drop_seen(pl.read_parquet(path), pl.scan_parquet(files))
        if dropped:
            lake.write_parquet(kept, path)
            with settings.warehouse() as con:
                warehouse.publish(con, "events", kept, replace_where=("arrival_date", later))
            repaired.append(later.isoformat())
            context.log.info(f"{later}: dropped {dropped} retries of messages that arrived earlier")
    return repaired


@dg.multi_asset(
    outs={
        "billing_events": dg.AssetOut(
            key=marts("billing_events"),
            description="Validated subscription change log, one row per event_id, in time order.",
            owners=owners("ingest"),
            freshness_policy=sla_freshness("billing_crm"),
        ),
        "accounts": dg.AssetOut(
            key=marts("accounts"),
            description="CRM accounts (owner email replaced by its keyed hash).",
            owners=owners("ingest"),
            freshness_policy=sla_freshness("billing_crm"),
        ),
        "deletion_requests": dg.AssetOut(
            key=lake_key("deletion_requests"),
            description="Right-to-erasure requests; kept out of the warehouse on purpose.",
            owners=owners("privacy"),
        ),
        "table_quarantine": dg.AssetOut(
            key=lake_key("table_quarantine"),
            description="Rejected billing, CRM and privacy rows with their reasons.",
            owners=owners("ingest"),
        ),
    },
    deps=[dg.AssetKey(["raw", n]) for n in ("billing", "crm", "privacy")],
    pool=WAREHOUSE_POOL,
    group_name="ingest",
    retry_policy=RETRY,
)
def reference_tables(context: dg.AssetExecutionContext, settings: PipelineSettings):
    """Billing, CRM and deletion requests: small files, re-read whole on every run."""
    billing = ingest.ingest_billing(settings.raw)
    crm = ingest.ingest_accounts(settings.raw, settings.hash_key)
    privacy = ingest.ingest_deletion_requests(settings.raw)
    for name, result in (("billing", billing), ("crm", crm), ("privacy", privacy)):
        context.log.info(f"{name}: {result.stats}")
    quarantine = pl.concat(
        [billing.quarantine, crm.quarantine, privacy.quarantine], how="diagonal_relaxed"
    )
    return billing.frame, crm.frame, privacy.frame, _scrub_quarantine(quarantine, settings)


@dg.asset(
    key=marts("quarantined_events"),
    ins={
        "event_quarantine": dg.AssetIn(lake_key("event_quarantine")),
        "table_quarantine": dg.AssetIn(lake_key("table_quarantine")),
    },
    pool=WAREHOUSE_POOL,
    group_name="ingest",
    owners=owners("ingest"),
    retry_policy=RETRY,
    automation_condition=AFTER_ARRIVAL,
)
def quarantined_events(event_quarantine: pl.LazyFrame, table_quarantine: pl.LazyFrame) -> dg.Output:
    """Every rejected input row with its reason, for the on-call engineer fixing a raw file."""
    frame = pl.concat(
        [event_quarantine.collect(), table_quarantine.collect()], how="diagonal_relaxed"
    )
    by_reason = (
        frame.with_columns(reason_code=pl.col("reason").str.split(":").list.first())
        .group_by("source", "reason_code")
        .len()
        .sort("len", descending=True)
    )
    return dg.Output(
        frame, metadata={"by_reason": frame_metadata(by_reason, preview_rows=40)["preview"]}
    )
