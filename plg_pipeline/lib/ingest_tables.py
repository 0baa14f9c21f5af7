"""Billing, CRM and privacy CSVs -> validated tables + quarantine (CONTRACT.md sections 3-5).

These files are small (one row per subscription change, account or request), so rows are split
with Python's csv module, which keeps exact line numbers and raw text even for quoted newlines;
the checks themselves are Polars expressions.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from plg_pipeline.lib.pii import hash_emails
from plg_pipeline.lib.schemas import (
    ACCOUNT_SEGMENTS,
    ACCOUNTS_SCHEMA,
    BILLING_CHANGES,
    BILLING_SCHEMA,
    BILLING_STATUSES,
    DELETION_REQUESTS_SCHEMA,
    Accounts,
    BillingEvents,
    DeletionRequests,
    Quarantine,
    parse_utc,
    quarantine_frame,
)

BILLING_FILE = "billing/subscription_events.csv"
ACCOUNTS_FILE = "crm/accounts.csv"
DELETION_FILE = "privacy/deletion_requests.csv"


@dataclass(frozen=True)
class TableIngest:
    frame: pl.DataFrame
    quarantine: pl.DataFrame
    stats: dict[str, int]


@dataclass
class _Rows:
    values: pl.DataFrame  # the columns as stripped text (null when blank), plus line and raw
    problems: list[tuple[int, str, str]]
    files: int


def _read_csv(path: Path, columns: tuple[str, ...]) -> _Rows:
    """Split a CSV into records; rows that are not records of `columns` become problems."""
    empty = pl.DataFrame(
        schema={**dict.fromkeys(columns, pl.String), "line": pl.Int64, "raw": pl.String}
    )
    if not path.exists():
        return _Rows(empty, [], 0)
    physical: list[str] = []
    problems: list[tuple[int, str, str]] = []
    for number, piece in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            physical.append(piece.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError as exc:
            physical.append("")
            problems.append(
                (number, f"invalid_utf8:{exc.reason}", piece.decode("utf-8", "replace"))
            )
    if physical and physical[-1] == "":
        physical.pop()
    if not any(line.strip() for line in physical):
        return _Rows(empty, problems or [(0, "empty_file", "")], 1)
    undecodable = {line for line, _, _ in problems}
    reader = csv.reader(line + "\n" for line in physical)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in columns if c not in header]
    records, start = [], reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            record, error = None, f"invalid_csv:{exc}"
        raw = "\n".join(physical[start - 1 : reader.line_num]).rstrip("\r")
        if record is None:
            problems.append((start, error, raw))
        elif not any(field.strip() for field in record):
            if start not in undecodable:
                problems.append((start, "blank_line", raw))
        elif missing:
            problems.append((start, f"missing_column:{','.join(missing)}", raw))
        elif len(record) != len(header):
            problems.append(
                (start, f"wrong_field_count:expected {len(header)}, got {len(record)}", raw)
            )
        else:
            row = dict(zip(header, record, strict=True))
            records.append([row[c].strip() or None for c in columns] + [start, raw])
        start = reader.line_num + 1
    values = pl.DataFrame(records, schema=empty.schema, orient="row") if records else empty
    return _Rows(values, problems, 1)


def _finish(
    rows: _Rows,
    rel: str,
    source: str,
    reason: pl.Expr,
    key: str,
    build: list[pl.Expr],
    sort: list[str],
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Split checked rows into accepted (first row per key wins) and quarantined."""
    checked = rows.values.with_columns(reason=reason)
    good = checked.filter(pl.col("reason").is_null())
    unique = good.filter(pl.col(key).is_first_distinct())
    frame = unique.select(build).sort(sort)
    problems = pl.DataFrame(
        rows.problems,
        schema={"line": pl.Int64, "reason": pl.String, "raw": pl.String},
        orient="row",
    )
    quarantine = quarantine_frame(
        pl.concat(
            [
                problems,
                checked.filter(pl.col("reason").is_not_null()).select("line", "reason", "raw"),
            ]
        )
        .with_columns(source_file=pl.lit(rel))
        .sort("line"),
        source=source,
    )
    stats = {
        "files": rows.files,
        "rows_in": rows.values.height + len(rows.problems),
        "accepted": frame.height,
        "quarantined": quarantine.height,
        "duplicates": good.height - unique.height,
    }
    return frame, Quarantine.validate(quarantine), stats


def _required(*names: str) -> list[tuple[pl.Expr, str]]:
    return [(pl.col(n).is_null(), f"missing_{n}") for n in names]


def _first_failure(checks: list[tuple[pl.Expr, pl.Expr | str]]) -> pl.Expr:
    expr = pl.when(checks[0][0]).then(
        pl.lit(checks[0][1]) if isinstance(checks[0][1], str) else checks[0][1]
    )
    for cond, reason in checks[1:]:
        expr = expr.when(cond).then(pl.lit(reason) if isinstance(reason, str) else reason)
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _timestamp_checks(name: str) -> list[tuple[pl.Expr, pl.Expr]]:
    bad = pl.col(name).is_not_null() & parse_utc(pl.col(name), allow_naive=True).is_null()
    return [(bad, pl.lit(f"unparseable_timestamp:{name}=") + pl.col(name).str.slice(0, 60))]


def _number_checks(name: str, dtype: type[pl.DataType]) -> list[tuple[pl.Expr, pl.Expr | str]]:
    value = pl.col(name).cast(dtype, strict=False)
    finite = value.cast(pl.Float64).is_finite()
    return [
        (
            pl.col(name).is_not_null() & (value.is_null() | ~finite).fill_null(True),
            pl.lit(f"invalid_number:{name}=") + pl.col(name).str.slice(0, 40),
        ),
        (value < 0, f"negative:{name}"),
    ]


def _enum_check(name: str, allowed: tuple[str, ...]) -> list[tuple[pl.Expr, pl.Expr]]:
    return [
        (~pl.col(name).is_in(allowed), pl.lit(f"unknown_{name}:") + pl.col(name).str.slice(0, 40))
    ]


def _ts(name: str) -> pl.Expr:
    return parse_utc(pl.col(name), allow_naive=True).alias(name)


def ingest_billing(raw_dir: Path | str) -> TableIngest:
    """Subscription change log: validated, one row per event_id, sorted by account and time.

    Rows may arrive late and out of order, so order comes from the sort, never the file. A blank
    overage_usd means no overage billed (0).
    """
    columns = tuple(BILLING_SCHEMA)
    rows = _read_csv(Path(raw_dir) / BILLING_FILE, columns)
    reason = _first_failure(
        _required(
            "event_id", "account_id", "occurred_at", "plan", "seats", "mrr", "status", "change"
        )
        + _timestamp_checks("occurred_at")
        + _number_checks("seats", pl.Int64)
        + _number_checks("mrr", pl.Float64)
        + _number_checks("overage_usd", pl.Float64)
        + _enum_check("status", BILLING_STATUSES)
        + _enum_check("change", BILLING_CHANGES)
    )
    build = [
        "event_id",
        "account_id",
        _ts("occurred_at"),
        "plan",
        pl.col("seats").cast(pl.Int64),
        pl.col("mrr").cast(pl.Float64),
        "status",
        "change",
        pl.col("overage_usd").cast(pl.Float64).fill_null(0.0),
    ]
    frame, quarantine, stats = _finish(
        rows,
        BILLING_FILE,
        "billing",
        reason,
        "event_id",
        build,
        ["account_id", "occurred_at", "event_id"],
    )
    return TableIngest(BillingEvents.validate(frame.cast(BILLING_SCHEMA)), quarantine, stats)


def ingest_accounts(raw_dir: Path | str, hash_key: str) -> TableIngest:
    """CRM accounts, one row per account_id; the owner's email is replaced by its keyed hash."""
    columns = ("account_id", "name", "domain", "segment", "owner_email", "industry", "created_at")
    rows = _read_csv(Path(raw_dir) / ACCOUNTS_FILE, columns)
    reason = _first_failure(
        _required("account_id", "segment", "created_at")
        + _enum_check("segment", ACCOUNT_SEGMENTS)
        + _timestamp_checks("created_at")
    )
    build = [
        "account_id",
        "name",
        "domain",
        "segment",
        hash_emails(pl.col("owner_email"), hash_key).alias("owner_hash"),
        "industry",
        _ts("created_at"),
    ]
    frame, quarantine, stats = _finish(
        rows, ACCOUNTS_FILE, "crm", reason, "account_id", build, ["account_id"]
    )
    return TableIngest(Accounts.validate(frame.cast(ACCOUNTS_SCHEMA)), quarantine, stats)


def ingest_deletion_requests(raw_dir: Path | str) -> TableIngest:
    """Right-to-erasure requests, one row per request_id."""
    columns = tuple(DELETION_REQUESTS_SCHEMA)
    rows = _read_csv(Path(raw_dir) / DELETION_FILE, columns)
    reason = _first_failure(
        _required("request_id", "user_id", "requested_at") + _timestamp_checks("requested_at")
    )
    build = ["request_id", "user_id", _ts("requested_at")]
    frame, quarantine, stats = _finish(
        rows, DELETION_FILE, "privacy", reason, "request_id", build, ["requested_at", "request_id"]
    )
    return TableIngest(
        DeletionRequests.validate(frame.cast(DELETION_REQUESTS_SCHEMA)), quarantine, stats
    )
