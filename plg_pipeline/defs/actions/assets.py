"""Deliver eligible trigger candidates to their destinations through the outbox ledger."""

import dagster as dg
import polars as pl

from plg_pipeline.defs.actions.resources import DestinationsResource
from plg_pipeline.defs.common import RETRY, WAREHOUSE_POOL, marts, owners
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import delivery, ledger

TRIGGER_CANDIDATES = marts("trigger_candidates")
PREVIEW_COLUMNS = ("trigger_id", "destination", "status", "attempts", "last_error", "updated_at")


class ActionConfig(dg.Config):
    dry_run: bool = False
    """Write what would be sent into the ledger (status dry_run) and send nothing."""
    retry_dead_letters: bool = False
    """Put dead-lettered rows back to pending (same idempotency key) before delivering."""


def _preview(frame: pl.DataFrame, rows: int = 20) -> dg.TableMetadataValue:
    recent = frame.sort("updated_at", descending=True).head(rows).select(PREVIEW_COLUMNS)
    records = [
        dg.TableRecord({k: "" if v is None else str(v) for k, v in r.items()})
        for r in recent.iter_rows(named=True)
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in PREVIEW_COLUMNS])
    return dg.MetadataValue.table(records, schema=schema)


@dg.asset(
    key=marts("action_deliveries"),
    deps=[TRIGGER_CANDIDATES],
    group_name="actions",
    owners=owners("actions"),
    pool=WAREHOUSE_POOL,
    retry_policy=RETRY,
    kinds={"duckdb", "http"},
)
def action_deliveries(
    context: dg.AssetExecutionContext,
    config: ActionConfig,
    settings: PipelineSettings,
    destinations: DestinationsResource,
) -> dg.MaterializeResult:
    """Outbox ledger of in-app, CRM and Slack deliveries: one row per trigger x destination."""
    rules = delivery.load_destinations(settings.config)
    candidates = delivery.read_candidates(settings.lake, settings.warehouse_path)
    report = delivery.run_actions(
        settings.warehouse_path,
        candidates,
        rules,
        destinations.endpoint_map(),
        dry_run=config.dry_run,
        retry_dead_letters=config.retry_dead_letters,
    )
    with settings.warehouse() as con:
        table = ledger.read(con)
    by_status = dict(table.group_by("status").len().iter_rows())
    if by_status.get("dead_letter") or by_status.get("failed"):
        context.log.warning(f"undelivered rows in the ledger: {by_status}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": table.height,
            "enqueued": report.enqueued,
            "revived_dead_letters": report.revived,
            "rows_sent": report.rows_sent,
            "http_requests": report.requests,
            "outcomes_this_run": dg.MetadataValue.json(report.outcomes),
            "rows_by_status": dg.MetadataValue.json(by_status),
            "rows_by_destination_status": dg.MetadataValue.json(
                {f"{d}/{s}": n for d, s, n in ledger.counts(table).iter_rows()}
            ),
            "preview": _preview(table),
        }
    )
