"""The Pandera models reject what ingestion must never hand on."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime

import pandera.errors
import polars as pl
import pytest

from plg_pipeline.lib.schemas import EVENTS_SCHEMA, EventsValidated

HASH = hashlib.sha256(b"ada@example.com").hexdigest()


def _events(**column: list) -> pl.DataFrame:
    """Three valid events, with `column` in place of its default."""
    when = datetime(2026, 3, 2, 9, tzinfo=UTC)
    rows = {
        "event_id": ["m1", "m2", "m3"],
        "type": ["identify", "track", "track"],
        "anonymous_id": ["a1", "a1", "a2"],
        "event_time": [when] * 3,
        "event_date": [date(2026, 3, 2)] * 3,
        "arrival_date": [date(2026, 3, 2)] * 3,
        "source_file": ["events/dt=2026-03-02/a.jsonl"] * 3,
        "line": [1, 2, 3],
        "context_ip": ["10.0.0.0/24"] * 3,
        **column,
    }
    return (
        pl.DataFrame(rows)
        .with_columns(pl.lit(None).alias(c) for c in EVENTS_SCHEMA if c not in rows)
        .select(pl.col(c).cast(t) for c, t in EVENTS_SCHEMA.items())
    )


@pytest.mark.parametrize("column", ["email_hash", "invitee_hash"])
def test_hashed_emails_are_sha256_hex_or_null(column):
    EventsValidated.validate(_events(**{column: [HASH, None, None]}))
    for bad in (HASH.upper(), HASH[:-1], f"{HASH}0", "ada@example.com", f" {HASH}"):
        with pytest.raises(pandera.errors.SchemaError, match="is_sha256_hex"):
            EventsValidated.validate(_events(**{column: [None, HASH, bad]}))


def test_other_columns_are_not_held_to_a_hash():
    EventsValidated.validate(_events(invited_by=["ada@example.com", None, "x"]))
    with pytest.raises(pandera.errors.SchemaError, match="str_matches"):
        EventsValidated.validate(_events(context_ip=["10.0.0.1", None, "10.0.0.0/24"]))
