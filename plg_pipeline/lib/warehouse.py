"""The DuckDB warehouse: one writer at a time, and every publish is one transaction.

DuckDB takes an exclusive file lock per process. Dagster pools serialise our own steps, but a
run started from another process (the CLI while the UI runs, a sensor run) can still meet a
held lock, so `connect` retries with backoff instead of failing the step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

SCHEMA = "marts"


@contextmanager
def connect(
    path: Path | str, *, read_only: bool = False, timeout_s: float = 600.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting (with jittered backoff) while another process holds it."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
    try:
        yield con
    finally:
        con.close()


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def publish(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pl.DataFrame,
    *,
    replace_where: tuple[str, object] | None = None,
    replace_between: tuple[str, object, object] | None = None,
    schema: str = SCHEMA,
) -> int:
    """Write `frame` to `schema.table` in one transaction; returns the table's row count.

    Without `replace_where` or `replace_between` the table is replaced whole. With
    `(column, value)` only the rows whose column equals value are replaced (one partition), with
    `(column, first, last)` those from first to last, so re-running a step never duplicates rows.
    """
    target = f"{_ident(schema)}.{_ident(table)}"
    con.register("_publish_frame", frame.to_arrow())
    con.execute("begin transaction")
    try:
        con.execute(f"create schema if not exists {_ident(schema)}")
        if replace_where is None and replace_between is None:
            con.execute(f"create or replace table {target} as select * from _publish_frame")
        else:
            con.execute(
                f"create table if not exists {target} as select * from _publish_frame limit 0"
            )
            if replace_where is not None:
                column, value = replace_where
                con.execute(f"delete from {target} where {_ident(column)} = ?", [value])
            if replace_between is not None:
                column, first, last = replace_between
                con.execute(
                    f"delete from {target} where {_ident(column)} between ? and ?", [first, last]
                )
            con.execute(f"insert into {target} by name select * from _publish_frame")
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_publish_frame")
    return row_count(con, table, schema)


def read_table(con: duckdb.DuckDBPyConnection, table: str, schema: str = SCHEMA) -> pl.DataFrame:
    return pl.from_arrow(
        con.sql(f"select * from {_ident(schema)}.{_ident(table)}").to_arrow_table()
    )


def row_count(con: duckdb.DuckDBPyConnection, table: str, schema: str = SCHEMA) -> int:
    return con.execute(f"select count(*) from {_ident(schema)}.{_ident(table)}").fetchall()[0][0]


def table_exists(con: duckdb.DuckDBPyConnection, table: str, schema: str = SCHEMA) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()[0]
    return bool(row and row[0])
