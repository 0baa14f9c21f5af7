"""The delivery outbox: `marts.action_deliveries`, one row per trigger x destination.

The ledger is written before anything is sent (pending rows) and updated right after each
response, in short transactions, so a delivery killed at any point can be re-run: rows already
delivered are never sent again, the rest are sent with the same Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import polars as pl

TABLE = "marts.action_deliveries"
STATUSES = ("pending", "delivered", "failed", "dead_letter", "dry_run")
OUTBOX_COLUMNS = ("trigger_id", "destination", "account_id", "route", "idempotency_key", "payload")

_DDL = f"""
create table if not exists {TABLE} (
    trigger_id varchar not null,
    destination varchar not null,
    account_id varchar,
    route varchar,
    status varchar not null,
    attempts integer not null,
    last_error varchar,
    http_status integer,
    delivered_at timestamptz,
    idempotency_key varchar not null,
    payload varchar not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    primary key (trigger_id, destination)
)
"""


@dataclass(frozen=True)
class PendingRow:
    trigger_id: str
    destination: str
    idempotency_key: str
    payload: str
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """The outcome of one HTTP attempt, as it is written to the ledger."""

    trigger_id: str
    destination: str
    status: str
    attempts: int
    last_error: str | None
    http_status: int | None
    at: datetime


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists marts").fetchall()
    con.execute(_DDL).fetchall()


def _count(con: duckdb.DuckDBPyConnection, where: str = "true") -> int:
    return con.execute(f"select count(*) from {TABLE} where {where}").fetchall()[0][0]


def enqueue(
    con: duckdb.DuckDBPyConnection,
    outbox: pl.DataFrame,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> int:
    """Insert outbox rows not yet in the ledger, in one transaction; returns how many were new.

    Existing rows are never re-inserted nor overwritten (their payload and key stay as first
    written). A real run turns earlier `dry_run` rows into `pending`, so a dry run never hides
    a trigger from the delivery that follows it.
    """
    now = now or datetime.now(UTC)
    ensure_table(con)
    frame = outbox.select(OUTBOX_COLUMNS)
    con.register("_outbox", frame.to_arrow())
    con.execute("begin transaction").fetchall()
    try:
        before = _count(con)
        con.execute(
            f"""insert into {TABLE} (trigger_id, destination, account_id, route, status, attempts,
                    idempotency_key, payload, created_at, updated_at)
                select trigger_id, destination, account_id, route, ?, 0, idempotency_key, payload, ?, ?
                from _outbox
                on conflict do nothing""",
            ["dry_run" if dry_run else "pending", now, now],
        ).fetchall()
        inserted = _count(con) - before
        if not dry_run:
            con.execute(
                f"update {TABLE} set status = 'pending', updated_at = ? where status = 'dry_run'",
                [now],
            ).fetchall()
        con.execute("commit").fetchall()
    except Exception:
        con.execute("rollback").fetchall()
        raise
    finally:
        con.unregister("_outbox")
    return inserted


def pending(con: duckdb.DuckDBPyConnection) -> list[PendingRow]:
    """Rows still to send, oldest first."""
    ensure_table(con)
    rows = con.execute(
        f"""select trigger_id, destination, idempotency_key, payload, attempts from {TABLE}
            where status = 'pending' order by created_at, trigger_id, destination"""
    ).fetchall()
    return [PendingRow(*row) for row in rows]


def record(con: duckdb.DuckDBPyConnection, attempts: Iterable[Attempt]) -> None:
    """Write attempt outcomes in one short transaction; a delivered row is never downgraded."""
    batch = list(attempts)
    if not batch:
        return
    con.execute("begin transaction").fetchall()
    try:
        for a in batch:
            con.execute(
                f"""update {TABLE} set status = ?, attempts = ?, last_error = ?, http_status = ?,
                        delivered_at = case when ? = 'delivered' then ? else delivered_at end,
                        updated_at = ?
                    where trigger_id = ? and destination = ? and status <> 'delivered'""",
                [
                    a.status,
                    a.attempts,
                    a.last_error,
                    a.http_status,
                    a.status,
                    a.at,
                    a.at,
                    a.trigger_id,
                    a.destination,
                ],
            ).fetchall()
        con.execute("commit").fetchall()
    except Exception:
        con.execute("rollback").fetchall()
        raise


def retry_dead_letters(
    con: duckdb.DuckDBPyConnection,
    trigger_ids: Iterable[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Put dead-lettered rows (all, or those of `trigger_ids`) back to pending with a fresh budget.

    The idempotency key is kept, so a destination that did apply an earlier attempt dedups it.
    """
    now = now or datetime.now(UTC)
    ensure_table(con)
    ids = None if trigger_ids is None else list(trigger_ids)
    where = "status = 'dead_letter'" + ("" if ids is None else " and list_contains(?, trigger_id)")
    params = [] if ids is None else [ids]
    count = con.execute(f"select count(*) from {TABLE} where {where}", params).fetchall()[0][0]
    con.execute(
        f"update {TABLE} set status = 'pending', attempts = 0, updated_at = ? where {where}",
        [now, *params],
    ).fetchall()
    return count


def read(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    ensure_table(con)
    return pl.from_arrow(
        con.sql(f"select * from {TABLE} order by trigger_id, destination").to_arrow_table()
    )


def counts(ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows per destination x status: the figure an operator looks at first."""
    return ledger.group_by("destination", "status").len("rows").sort("destination", "status")
