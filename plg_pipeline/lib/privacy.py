"""Right to erasure (CONTRACT.md section 5): find every id of a person, remove their rows, log it.

A person is their whole identity component: the requested userId plus every anonymousId,
alias and userId stitched to it, so nothing recorded under an earlier id survives. The log
records how many rows each request removed from each table, never the ids themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from plg_pipeline.lib.identity import IdentityConfig, IdentityState, rebuild_components
from plg_pipeline.lib.pii import hmac_hex

ERASURE_LOG_SCHEMA = {
    "request_id": pl.String,
    "erased_at": pl.Datetime("us", "UTC"),
    "table": pl.String,
    "rows_removed": pl.Int64,
}


def erasure_targets(
    deletion_requests: pl.DataFrame | pl.LazyFrame, identity_map: pl.DataFrame | pl.LazyFrame
) -> pl.DataFrame:
    """(request_id, id): every id in the requested user's component, the user id itself always."""
    requests = deletion_requests.lazy().select("request_id", "user_id")
    ids = identity_map.lazy().select("id", "canonical_user_id")
    component = (
        requests.join(ids, left_on="user_id", right_on="id")
        .join(ids, on="canonical_user_id")
        .select("request_id", "id")
    )
    return (
        pl.concat([requests.select("request_id", id="user_id"), component])
        .unique()
        .sort("request_id", "id")
        .collect()
    )


def erased_id_hashes(targets: pl.DataFrame, hash_key: str) -> pl.DataFrame:
    """id_hash: HMAC of each erased id, so ingestion can drop them when raw files are re-read."""
    return pl.DataFrame({"id_hash": hmac_hex(targets["id"].unique().sort(), hash_key)})


@dataclass(frozen=True)
class Erasable:
    """A table and where people's ids sit in it: id columns, and text columns (raw JSON) that
    mention ids as quoted strings."""

    frame: pl.DataFrame | pl.LazyFrame
    id_columns: Sequence[str] = ()
    text_columns: Sequence[str] = ()


def _request_of_row(targets: pl.DataFrame, table: Erasable) -> pl.Expr:
    """The request a row belongs to (smallest request id if several), null if none."""
    by_id = targets.group_by("id").agg(pl.col("request_id").min()).sort("id")
    ids, requests = by_id["id"], by_id["request_id"]
    quoted = ('"' + ids + '"').to_list()
    found = [pl.col(c).replace_strict(ids, requests, default=None) for c in table.id_columns]
    for column in table.text_columns:
        first = (
            pl.col(column).str.extract_many(quoted).list.first().str.slice(1).str.strip_suffix('"')
        )
        found.append(first.replace_strict(ids, requests, default=None))
    return pl.coalesce(found) if found else pl.lit(None, pl.String)


def erase_rows(table: Erasable, targets: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept rows, removed counts per request_id) for one table."""
    frame = table.frame.lazy().collect()
    if targets.is_empty() or frame.is_empty():
        return frame, pl.DataFrame(schema={"request_id": pl.String, "rows_removed": pl.Int64})
    tagged = frame.with_columns(_request=_request_of_row(targets, table))
    removed = (
        tagged.filter(pl.col("_request").is_not_null())
        .group_by(request_id="_request")
        .agg(rows_removed=pl.len().cast(pl.Int64))
    )
    return tagged.filter(pl.col("_request").is_null()).drop("_request"), removed


def erase_tables(
    tables: Mapping[str, Erasable], targets: pl.DataFrame, erased_at: datetime
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Each table without the targets' rows, and the erasure log: one row per request x table."""
    requests = targets.select("request_id").unique().sort("request_id")
    kept, log = {}, []
    for name, table in tables.items():
        kept[name], removed = erase_rows(table, targets)
        log.append(
            requests.join(removed, on="request_id", how="left").select(
                "request_id",
                erased_at=pl.lit(erased_at, ERASURE_LOG_SCHEMA["erased_at"]),
                table=pl.lit(name),
                rows_removed=pl.col("rows_removed").fill_null(0),
            )
        )
    return kept, pl.concat(log) if log else pl.DataFrame(schema=ERASURE_LOG_SCHEMA)


def erase_identity_state(
    state: IdentityState, targets: pl.DataFrame, cfg: IdentityConfig
) -> IdentityState:
    """The identity state without the targets' ids, as a rebuild from the remaining events would be.

    Erasing a user lowers the user count of any over-merge-guarded anonymous id they shared,
    which can bring it back under the limit: those ids' components are recomputed.
    """
    gone = targets["id"].unique().implode()
    hit = pl.col("id").is_in(gone) | pl.col("user_id").is_in(gone)
    survivors = state.links.filter(hit).select(
        pl.when(pl.col("id").is_in(gone)).then("user_id").otherwise("id").alias("id")
    )
    seeds = survivors.filter(~pl.col("id").is_in(gone))["id"].unique()
    remaining = state.identity_map.filter(~pl.col("id").is_in(gone))
    new_state, _ = rebuild_components(
        state.links.filter(~hit),
        remaining.drop("canonical_user_id"),
        state.overmerge_audit.filter(~pl.col("anonymous_id").is_in(gone)),
        remaining,
        seeds,
        cfg.max_users_per_anonymous_id,
    )
    return new_state
