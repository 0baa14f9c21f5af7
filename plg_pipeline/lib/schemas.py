"""Shapes of the frames ingestion hands on (ARCHITECTURE.md), as Polars schemas and Pandera models.

Validation runs on collected frames, where Pandera checks values and not only dtypes; a failure
here is a bug in ingestion (bad input is quarantined before it), so it raises.
"""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

UTC_TS = pl.Datetime("us", "UTC")
TS = Annotated[pl.Datetime, "us", "UTC"]

EVENT_TYPES = ("track", "identify", "group", "page", "screen", "alias")
QUARANTINE_SOURCES = ("events", "billing", "crm", "privacy")
# CONTRACT.md sections 3 and 4: the values the contract allows.
BILLING_STATUSES = ("trialing", "active", "past_due", "canceled")
BILLING_CHANGES = (
    "new",
    "upgrade",
    "downgrade",
    "seat_add",
    "seat_remove",
    "renewal",
    "churn",
    "reactivation",
)
ACCOUNT_SEGMENTS = ("smb", "mid_market", "enterprise")

EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "type": pl.String(),
    "event_name": pl.String(),
    "user_id": pl.String(),
    "anonymous_id": pl.String(),
    "previous_id": pl.String(),
    "group_id": pl.String(),
    "context_group_id": pl.String(),
    "account_id": pl.String(),
    "event_time": UTC_TS,
    "event_date": pl.Date(),
    "received_at": UTC_TS,
    "arrival_date": pl.Date(),
    "source_file": pl.String(),
    "line": pl.Int64(),
    "properties": pl.String(),
    "traits": pl.String(),
    "context_ip": pl.String(),
    "email_hash": pl.String(),
    "role": pl.String(),
    "consent_analytics": pl.Boolean(),
    "plan": pl.String(),
    "feature": pl.String(),
    "tier": pl.String(),
    "required_plan": pl.String(),
    "limit_name": pl.String(),
    "used": pl.Float64(),
    "allowed": pl.Float64(),
    "quantity": pl.Float64(),
    "integration": pl.String(),
    "invitee_hash": pl.String(),
    "invited_by": pl.String(),
    "trigger_id": pl.String(),
    "page": pl.String(),
}

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),
    "raw": pl.String(),
    "arrival_date": pl.Date(),
    "source": pl.String(),
}

BILLING_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "account_id": pl.String(),
    "occurred_at": UTC_TS,
    "plan": pl.String(),
    "seats": pl.Int64(),
    "mrr": pl.Float64(),
    "status": pl.String(),
    "change": pl.String(),
    "overage_usd": pl.Float64(),
}

ACCOUNTS_SCHEMA: dict[str, pl.DataType] = {
    "account_id": pl.String(),
    "name": pl.String(),
    "domain": pl.String(),
    "segment": pl.String(),
    "owner_hash": pl.String(),
    "industry": pl.String(),
    "created_at": UTC_TS,
}

DELETION_REQUESTS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "user_id": pl.String(),
    "requested_at": UTC_TS,
}


def quarantine_frame(rows: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """Quarantine rows in the shared shape from a frame with source_file, line, reason, raw and,
    for files of an arrival day, arrival_date (else null)."""
    return rows.select(
        pl.col("source_file").cast(pl.String),
        pl.col("line").cast(pl.Int64),
        pl.col("reason").cast(pl.String),
        pl.col("raw").cast(pl.String),
        pl.col("arrival_date").cast(pl.Date)
        if "arrival_date" in rows.columns
        else pl.lit(None, dtype=pl.Date).alias("arrival_date"),
        pl.lit(source, dtype=pl.String).alias("source"),
    )


def _iso_utc(expr: pl.Expr, formats: tuple[str, ...], naive: bool) -> pl.Expr:
    parsed = [
        # No cache: timestamps are nearly all distinct, so memoising them only costs a hash each.
        expr.str.to_datetime(
            fmt, time_unit="us", time_zone=None if naive else "UTC", strict=False, cache=False
        )
        for fmt in formats
    ]
    out = pl.coalesce(parsed)
    return out.dt.replace_time_zone("UTC") if naive else out


def parse_utc(expr: pl.Expr, *, allow_naive: bool = False) -> pl.Expr:
    """ISO-8601 text with seconds and an offset (`Z`, `+02:00`) -> UTC; null when it does not parse.

    With `allow_naive`, text without an offset is read as UTC (CSV exports often drop it).
    """
    strict = _iso_utc(expr, ("%+",), naive=False)
    if not allow_naive:
        return strict
    naive = _iso_utc(
        expr.str.strip_chars(),
        ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d"),
        naive=True,
    )
    return pl.coalesce(strict, naive)


SHA256_HEX = r"^[0-9a-f]{64}$"


def matches(column: str, pattern: str) -> pl.Expr:
    """Whether each value matches `pattern`, null where the value is (Pandera passes those).

    For mostly-null columns instead of `str_matches`, whose `str.contains` runs the pattern on
    null slots too: on a column read back from Parquet they cost as much as 64-character values
    (a 10M day, 235k rows of which 130 hold an email hash: 24 ms, the same column rebuilt from
    a list 1.4 ms); `str.find` under a null test skips them (1 ms).
    """
    value = pl.col(column)
    return pl.when(value.is_not_null()).then(value.str.find(pattern).is_not_null())


class EventsValidated(pa.DataFrameModel):
    """events_validated / events: one row per accepted event."""

    event_id: str = pa.Field(str_length={"min_value": 1})
    type: str = pa.Field(isin=list(EVENT_TYPES))
    event_name: str = pa.Field(nullable=True)
    user_id: str = pa.Field(nullable=True)
    anonymous_id: str = pa.Field(nullable=True)
    previous_id: str = pa.Field(nullable=True)
    group_id: str = pa.Field(nullable=True)
    context_group_id: str = pa.Field(nullable=True)
    account_id: str = pa.Field(nullable=True)
    event_time: TS
    event_date: pl.Date
    received_at: TS = pa.Field(nullable=True)
    arrival_date: pl.Date
    source_file: str
    line: pl.Int64 = pa.Field(ge=1)
    properties: str = pa.Field(nullable=True)
    traits: str = pa.Field(nullable=True)
    context_ip: str = pa.Field(nullable=True, str_matches=r"^[0-9a-f.:]+/(24|48)$")
    email_hash: str = pa.Field(nullable=True)
    role: str = pa.Field(nullable=True)
    consent_analytics: pl.Boolean = pa.Field(nullable=True)
    plan: str = pa.Field(nullable=True)
    feature: str = pa.Field(nullable=True)
    tier: str = pa.Field(nullable=True)
    required_plan: str = pa.Field(nullable=True)
    limit_name: str = pa.Field(nullable=True)
    used: pl.Float64 = pa.Field(nullable=True)
    allowed: pl.Float64 = pa.Field(nullable=True)
    quantity: pl.Float64 = pa.Field(nullable=True)
    integration: str = pa.Field(nullable=True)
    invitee_hash: str = pa.Field(nullable=True)
    invited_by: str = pa.Field(nullable=True)
    trigger_id: str = pa.Field(nullable=True)
    page: str = pa.Field(nullable=True)

    class Config:
        strict = True
        ordered = True
        # unique within an arrival day: several days are validated at once, and a client's
        # retry arriving on a later day is dropped only when that day meets the lake's ids
        unique = ["arrival_date", "event_id"]

    @pa.dataframe_check
    def has_an_id(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("user_id").is_not_null() | pl.col("anonymous_id").is_not_null()
        )

    @pa.dataframe_check
    def event_date_is_utc_date(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("event_time").dt.date() == pl.col("event_date"))

    @pa.check("email_hash", "invitee_hash")
    def is_sha256_hex(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(matches(data.key, SHA256_HEX))


class Quarantine(pa.DataFrameModel):
    source_file: str
    line: pl.Int64 = pa.Field(ge=0)
    reason: str = pa.Field(str_matches=r"^[a-z0-9_]+(:|$)")
    raw: str
    arrival_date: pl.Date = pa.Field(nullable=True)
    source: str = pa.Field(isin=list(QUARANTINE_SOURCES))

    class Config:
        strict = True
        ordered = True


class BillingEvents(pa.DataFrameModel):
    event_id: str = pa.Field(unique=True)
    account_id: str
    occurred_at: TS
    plan: str
    seats: pl.Int64 = pa.Field(ge=0)
    mrr: pl.Float64 = pa.Field(ge=0)
    status: str = pa.Field(isin=list(BILLING_STATUSES))
    change: str = pa.Field(isin=list(BILLING_CHANGES))
    overage_usd: pl.Float64 = pa.Field(ge=0)

    class Config:
        strict = True
        ordered = True


class Accounts(pa.DataFrameModel):
    account_id: str = pa.Field(unique=True)
    name: str = pa.Field(nullable=True)
    domain: str = pa.Field(nullable=True)
    segment: str = pa.Field(isin=list(ACCOUNT_SEGMENTS))
    owner_hash: str = pa.Field(nullable=True, str_matches=SHA256_HEX)
    industry: str = pa.Field(nullable=True)
    created_at: TS

    class Config:
        strict = True
        ordered = True


class DeletionRequests(pa.DataFrameModel):
    request_id: str = pa.Field(unique=True)
    user_id: str
    requested_at: TS

    class Config:
        strict = True
        ordered = True


class IngestStats(pa.DataFrameModel):
    """ingest_stats: the row accounting of one arrival day."""

    arrival_date: pl.Date
    files: pl.Int64 = pa.Field(ge=0)
    rows_in: pl.Int64 = pa.Field(ge=0)
    accepted: pl.Int64 = pa.Field(ge=0)
    quarantined: pl.Int64 = pa.Field(ge=0)
    duplicates_in_day: pl.Int64 = pa.Field(ge=0)
    erased: pl.Int64 = pa.Field(ge=0)

    @pa.dataframe_check
    def rows_are_accounted_for(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("rows_in")
            == pl.col("accepted")
            + pl.col("quarantined")
            + pl.col("duplicates_in_day")
            + pl.col("erased")
        )
