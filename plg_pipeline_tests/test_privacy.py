"""Erasure: the whole identity component goes, from every table, and the log holds no ids."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import polars as pl
from polars.testing import assert_frame_equal

from plg_pipeline.lib.identity import IdentityConfig, update_identity
from plg_pipeline.lib.privacy import (
    Erasable,
    erase_identity_state,
    erase_tables,
    erased_id_hashes,
    erasure_targets,
)
from plg_pipeline_tests.test_identity import make_events

CFG = IdentityConfig()
NOW = datetime(2026, 3, 10, tzinfo=UTC)
ROWS = [
    {"anonymous_id": "a1"},
    {"type": "identify", "anonymous_id": "a1", "user_id": "u1"},
    {"type": "alias", "previous_id": "old1", "user_id": "u1"},
    {"user_id": "u2", "anonymous_id": "a2"},
    {"user_id": "u3"},
]


def requests(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"request_id": pl.String, "user_id": pl.String}, orient="row")


def test_targets_follow_the_identity_graph():
    state, _ = update_identity(None, make_events(ROWS), CFG)
    targets = erasure_targets(requests(("r1", "u1"), ("r2", "ghost")), state.identity_map)
    assert targets.rows() == [("r1", "a1"), ("r1", "old1"), ("r1", "u1"), ("r2", "ghost")]


def test_erase_tables_removes_rows_and_logs_counts_without_ids():
    state, _ = update_identity(None, make_events(ROWS), CFG)
    targets = erasure_targets(requests(("r1", "u1"), ("r2", "u3")), state.identity_map)
    events = make_events(ROWS).collect()
    quarantine = pl.DataFrame(
        {
            "raw": [
                '{"userId":"u1","x":1}',
                '{"anonymousId":"a10"}',
                "not json u3",
                '{"userId":"u3"}',
            ],
            "line": [1, 2, 3, 4],
        }
    )
    scores = pl.DataFrame({"canonical_user_id": ["u1", "u2"], "score": [1.0, 2.0]})
    kept, log = erase_tables(
        {
            "events": Erasable(events, ["user_id", "anonymous_id", "previous_id"]),
            "quarantined_events": Erasable(quarantine, text_columns=["raw"]),
            "user_scores": Erasable(scores.lazy(), ["canonical_user_id"]),
        },
        targets,
        NOW,
    )
    assert kept["events"]["event_id"].to_list() == ["m3"]
    assert kept["quarantined_events"]["line"].to_list() == [
        2,
        3,
    ]  # "a10" is not "a1"; bare text is no id
    assert kept["user_scores"]["canonical_user_id"].to_list() == ["u2"]
    assert log.sort("table", "request_id").rows() == [
        ("r1", NOW, "events", 3),
        ("r2", NOW, "events", 1),
        ("r1", NOW, "quarantined_events", 1),
        ("r2", NOW, "quarantined_events", 1),
        ("r1", NOW, "user_scores", 1),
        ("r2", NOW, "user_scores", 0),
    ]
    assert log.columns == ["request_id", "erased_at", "table", "rows_removed"]
    logged = set().union(*(log[c].cast(pl.String).to_list() for c in log.columns))
    assert not logged & set(targets["id"])


def test_erased_id_hashes_are_hmac_of_each_id():
    targets = pl.DataFrame({"request_id": ["r1", "r1"], "id": ["u1", "a1"]})
    hashes = erased_id_hashes(targets, "k")["id_hash"].to_list()
    assert hashes == [hmac.new(b"k", v.encode(), "sha256").hexdigest() for v in ("a1", "u1")]


def test_erasing_identity_state_equals_rebuild_without_the_person():
    # u1..u4 share a kiosk id: guarded. Erasing u4 brings it back to 3 users, which merge.
    kiosk = [{"anonymous_id": "k", "user_id": f"u{i}"} for i in range(1, 5)]
    rows = [
        *kiosk,
        {"anonymous_id": "a4", "user_id": "u4"},
        {"anonymous_id": "a2", "user_id": "u2"},
    ]
    rows.append({"user_id": "u9"})
    state, _ = update_identity(None, make_events(rows), CFG)
    assert state.overmerge_audit["anonymous_id"].to_list() == ["k"]
    targets = erasure_targets(requests(("r1", "u4")), state.identity_map)
    erased = erase_identity_state(state, targets, CFG)
    remaining = [r for r in rows if not {r.get("user_id"), r.get("anonymous_id")} & {"u4", "a4"}]
    rebuilt, _ = update_identity(None, make_events(remaining), CFG)
    assert_frame_equal(erased.identity_map, rebuilt.identity_map)
    assert_frame_equal(erased.links, rebuilt.links)
    assert_frame_equal(erased.overmerge_audit, rebuilt.overmerge_audit)
    assert set(erased.identity_map["canonical_user_id"]) == {"u1", "u9"}
