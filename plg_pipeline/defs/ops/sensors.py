"""raw_arrival_sensor: a new or rewritten arrival-day folder launches that day's ingestion."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from plg_pipeline.defs.ops.jobs import CURATED_EVENTS, ingest_day_job
from plg_pipeline.defs.partitions import arrival_days
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib.ingest import arrival_days as raw_arrival_days
from plg_pipeline.lib.ingest import load_ingest_config
from plg_pipeline.lib.slas import slas

LOOKBACK_DAYS = load_ingest_config().dedup_lookback_days
"""Curated day D drops messageIds already seen in the LOOKBACK_DAYS arrival days before it."""


@dataclass(frozen=True)
class FolderState:
    fingerprint: str
    """Digest of the folder's file names, sizes and mtimes: any rewrite changes it."""
    newest_mtime: float


def folder_states(raw_dir: Path) -> dict[str, FolderState]:
    """Arrival day -> state of its `events/dt=` folder; hidden and `_` files (writers' temp files) do not count."""
    states = {}
    for day in raw_arrival_days(raw_dir):
        folder = Path(raw_dir) / "events" / f"dt={day}"
        digest, newest = hashlib.sha256(), 0.0
        try:
            files = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))
            for path in files:
                stat = path.stat()
                digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                newest = max(newest, stat.st_mtime)
        except FileNotFoundError:
            continue  # renamed or removed while we looked: the next tick sees the settled folder
        if files:
            states[day.isoformat()] = FolderState(digest.hexdigest()[:16], newest)
    return states


def curated_since(instance: dg.DagsterInstance, day: str, mtime: float) -> bool:
    """Whether the day's curated events were materialized after its files were last written."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CURATED_EVENTS, asset_partitions=[day]), limit=1
    ).records
    return bool(records) and records[0].timestamp >= mtime


def days_to_ingest(changed: list[str], existing: list[str], lookback_days: int) -> list[str]:
    """The changed days plus every existing later day whose cross-day dedup looks back at one."""
    if not changed:
        return []
    first = date.fromisoformat(min(changed))
    reach = max(date.fromisoformat(d) for d in changed) + timedelta(days=lookback_days)
    return [d for d in existing if first <= date.fromisoformat(d) <= reach]


def ingest_request(days: list[str], fingerprints: dict[str, str]) -> dg.RunRequest:
    """One run for `days` (a range run when more than one: partitions are processed in order)."""
    digest = hashlib.sha256(json.dumps([[d, fingerprints[d]] for d in days]).encode())
    key = f"{days[0]}..{days[-1]}:{digest.hexdigest()[:16]}"
    tags = {"plg/raw_fingerprint": digest.hexdigest()[:16]}
    if len(days) == 1:
        return dg.RunRequest(run_key=key, partition_key=days[0], tags=tags)
    range_tags = {
        "dagster/asset_partition_range_start": days[0],
        "dagster/asset_partition_range_end": days[-1],
    }
    return dg.RunRequest(run_key=key, tags={**tags, **range_tags})


@dg.sensor(
    job=ingest_day_job,
    minimum_interval_seconds=slas().cadence.raw_arrival_sensor_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def raw_arrival_sensor(
    context: dg.SensorEvaluationContext, settings: PipelineSettings
) -> dg.SensorResult:
    """Ingest the arrival days whose folder is new or changed since the last tick.

    The cursor holds each folder's fingerprint; the run key is the days + their fingerprints,
    so a rewritten file relaunches its day once and a tick evaluated twice launches nothing
    new. A new latest day is one run of exactly that partition. Several changed days, or a
    rewritten day followed by curated ones, make one range run up to the last day whose
    cross-day deduplication looks back at them, so days are deduplicated in arrival order.
    On its very first tick (no cursor: a new deployment after a CLI backfill) the sensor skips
    folders curated after their last write instead of redoing every day; after that, any
    folder it has not seen is a new arrival, whatever its files' mtimes (copies keep old ones).
    """
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    changed, cursor, outside = [], {}, []
    for day, state in folder_states(settings.raw).items():
        if not arrival_days.has_partition_key(day):
            outside.append(day)  # not in the cursor: launched once the partition exists
            continue
        cursor[day] = state.fingerprint
        if seen.get(day) == state.fingerprint:
            continue
        if not seen and curated_since(context.instance, day, state.newest_mtime):
            continue
        changed.append(day)
    if outside:
        context.log.warning(f"folders outside the arrival_days partitions: {outside}")
    days = days_to_ingest(changed, sorted(cursor), LOOKBACK_DAYS)
    return dg.SensorResult(
        run_requests=[ingest_request(days, cursor)] if days else [],
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if days else "no new or changed arrival-day folder",
    )
