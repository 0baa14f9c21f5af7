"""Every payload published in Segment's spec pages is accepted or quarantined with its exact reason."""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.ingest import IngestConfig, ingest_arrival_day

SPEC = Path(__file__).resolve().parents[2] / "shared" / "segment-spec-examples"
DAY = date(2026, 1, 10)

pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="segment-spec-examples not present")


def _expected(row: dict[str, str], seen: set[str], message_id: str | None) -> str:
    """The reason the contract gives, in the documented order of checks, from index.csv."""
    if row["has_messageId"] != "true":
        return "missing_message_id"
    if row["has_timestamp"] != "true":
        return "missing_timestamp"
    if row["has_userId"] != "true" and row["has_anonymousId"] != "true":
        return "missing_user_and_anonymous_id"
    if message_id in seen:
        return "duplicate"
    seen.add(message_id)
    return "accepted"


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    folder = root / "events" / f"dt={DAY}"
    folder.mkdir(parents=True)
    (folder / "examples.jsonl").write_text((SPEC / "examples.jsonl").read_text())
    # Published blocks span several lines; one payload per line, still invalid JSON.
    payloads = [
        json.loads(line)["raw"] for line in (SPEC / "unparseable.jsonl").read_text().splitlines()
    ]
    (folder / "unparseable.jsonl").write_text(
        "".join(p.replace("\n", " ") + "\n" for p in payloads)
    )
    return ingest_arrival_day(
        root, DAY, catalog=load_catalog(), hash_key="conformance", config=IngestConfig()
    )


def _outcomes(day) -> dict[tuple[str, int], str]:
    out = {(f, n): "accepted" for f, n in day.events.select("source_file", "line").iter_rows()}
    for f, n, reason in day.quarantine.select("source_file", "line", "reason").iter_rows():
        assert (f, n) not in out
        out[(f, n)] = reason.split(":")[0]
    return out


def test_every_example_has_its_expected_outcome(day):
    index = list(csv.DictReader((SPEC / "index.csv").open()))
    lines = (SPEC / "examples.jsonl").read_text().splitlines()
    assert len(index) == len(lines) == 76
    outcomes = _outcomes(day)
    seen: set[str] = set()
    for row in index:
        n = int(row["line"])
        expected = _expected(row, seen, json.loads(lines[n - 1]).get("messageId"))
        got = outcomes.get(("events/dt=2026-01-10/examples.jsonl", n), "duplicate")
        assert got == expected, (n, row["source_path"], got)


def test_unparseable_payloads_are_invalid_json(day):
    rows = day.quarantine.filter(day.quarantine["source_file"].str.ends_with("unparseable.jsonl"))
    assert rows["line"].to_list() == [1, 2, 3, 4, 5]
    assert all(r.startswith("invalid_json:") for r in rows["reason"])


def test_nothing_is_lost(day):
    s = day.stats
    assert s["rows_in"] == 76 + 5
    assert s["rows_in"] == s["accepted"] + s["quarantined"] + s["duplicates_in_day"] + s["erased"]
    # 8 examples carry messageId + timestamp; they share 2 messageIds (README).
    assert (s["accepted"], s["duplicates_in_day"]) == (2, 6)


def test_legacy_action_examples_are_typed_as_track(day):
    index = list(csv.DictReader((SPEC / "index.csv").open()))
    legacy = {int(r["line"]) for r in index if r["type_key"] == "action"}
    assert len(legacy) == 39
    # None has messageId, so none is accepted, but none fails for lack of a type either.
    reasons = dict(
        day.quarantine.filter(
            pl.col("line").is_in(sorted(legacy)),
            pl.col("source_file").str.ends_with("examples.jsonl"),
        )
        .select("line", "reason")
        .iter_rows()
    )
    assert set(reasons) == legacy
    assert not any(r.startswith(("missing_type", "unknown_type")) for r in reasons.values())
