"""The lake: Parquet files that Polars steps share without any lock.

Writes go to a temp file in the same folder and are renamed into place, so a reader (or a
step killed with SIGKILL) only ever sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import filecmp
import os
import uuid
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import polars as pl

COMPRESSION = "lz4"
"""The lake is a working store on local disk: lz4 writes twice as fast as zstd and reads faster,
for files about 1.4x larger (measured on a day of events and the sessions table)."""


def partition_path(lake_dir: Path | str, table: str, dt: date | str) -> Path:
    return Path(lake_dir) / table / f"dt={dt}.parquet"


def table_path(lake_dir: Path | str, table: str) -> Path:
    return Path(lake_dir) / f"{table}.parquet"


def write_parquet(frame: pl.DataFrame | pl.LazyFrame, path: Path | str) -> Path:
    """Atomically write `frame` to `path` (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(tmp, compression=COMPRESSION)
        else:
            frame.write_parquet(tmp, compression=COMPRESSION)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if path.exists() and filecmp.cmp(tmp, path, shallow=False):
            return path  # same bytes: keep the old file, so its mtime still says "unchanged"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def partition_files(
    lake_dir: Path | str, table: str, dates: Iterable[date | str] | None = None
) -> list[Path]:
    """Existing partition files of `table`, all of them or those of `dates`, in date order."""
    folder = Path(lake_dir) / table
    if dates is None:
        return sorted(folder.glob("dt=*.parquet"))
    return [
        p
        for p in (partition_path(lake_dir, table, d) for d in sorted(map(str, dates)))
        if p.exists()
    ]


def scan_partitions(
    lake_dir: Path | str,
    table: str,
    schema: dict[str, pl.DataType],
    dates: Iterable[date | str] | None = None,
) -> pl.LazyFrame:
    """Lazy scan over partition files; an empty frame with `schema` when there are none."""
    files = partition_files(lake_dir, table, dates)
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(files)


def scan_table(lake_dir: Path | str, table: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    path = table_path(lake_dir, table)
    return pl.scan_parquet(path) if path.exists() else pl.LazyFrame(schema=schema)


def fingerprints(lake_dir: Path | str, table: str) -> pl.DataFrame:
    """(file, mtime_ns, size) of each partition file: what an incremental step compares to last time."""
    rows = [
        {"file": p.name, "mtime_ns": p.stat().st_mtime_ns, "size": p.stat().st_size}
        for p in partition_files(lake_dir, table)
    ]
    return pl.DataFrame(rows, schema={"file": pl.String, "mtime_ns": pl.Int64, "size": pl.Int64})


def changed_files(before: pl.DataFrame, now: pl.DataFrame) -> tuple[list[str], bool]:
    """(files new since `before`, whether any earlier file was rewritten or removed)."""
    added = now.join(before, on="file", how="anti")["file"].to_list()
    rewritten = before.join(now, on=["file", "mtime_ns", "size"], how="anti").height > 0
    return added, rewritten
