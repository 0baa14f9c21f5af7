"""Right to erasure end to end (issue 3): after a run no id of an erased person is left in any
warehouse table or lake file, and re-processing their old raw files does not bring them back.

The ids to erase are computed here independently of the pipeline, from the raw events with
networkx: every id connected to the requested user by an identify-style event (userId and
anonymousId together) or an alias, leaving out anonymous ids shared by too many users.
"""

from __future__ import annotations

import json
from collections import defaultdict

import networkx as nx
import polars as pl
import pytest

from plg_pipeline.lib.activity import load_activity_config
from plg_pipeline_tests.e2e_fixtures import (
    World,
    all_frames,
    failures,
    ids_in_text,
    make_world,
    materialize,
    read_warehouse,
)

pytestmark = pytest.mark.slow

REQUEST_RECORDS = {"lake:deletion_requests.parquet"}
"""The request itself names the user: it is the input erasure keeps re-applying, like the raw file."""


def raw_links(world: World) -> tuple[list[tuple[str, str]], dict[str, set[str]]]:
    """(id, id) links of the well-formed raw events, and user ids seen per anonymous id."""
    bad = pl.read_csv(world.raw / "_truth" / "bad_lines.csv")
    bad_lines = {(f, n) for f, n in bad.select("file", "line").iter_rows() if n is not None}
    links, users_of_anon = [], defaultdict(set)
    for path in sorted((world.raw / "events").rglob("*.jsonl")):
        rel = path.relative_to(world.raw).as_posix()
        for n, text in enumerate(path.read_text().splitlines(), 1):
            if (rel, n) in bad_lines:
                continue
            try:
                event = json.loads(text)
            except ValueError:
                continue
            user, anon = event.get("userId"), event.get("anonymousId")
            if isinstance(user, str) and isinstance(anon, str):
                links.append((user, anon))
                users_of_anon[anon].add(user)
            previous = event.get("previousId")
            if event.get("type") == "alias" and isinstance(previous, str) and isinstance(user, str):
                links.append((previous, user))
    return links, users_of_anon


def expected_erased_ids(world: World) -> dict[str, set[str]]:
    """request_id -> every id of the requested person's identity component."""
    limit = load_activity_config().identity.max_users_per_anonymous_id
    links, users_of_anon = raw_links(world)
    shared = {a for a, users in users_of_anon.items() if len(users) > limit}
    graph = nx.Graph()
    graph.add_edges_from((a, b) for a, b in links if a not in shared and b not in shared)
    requests = pl.read_csv(world.raw / "privacy" / "deletion_requests.csv")
    out = {}
    for request_id, user_id in requests.select("request_id", "user_id").iter_rows():
        out[request_id] = (
            nx.node_connected_component(graph, user_id) if user_id in graph else {user_id}
        )
    return out


def leaks(world: World, ids: list[str]) -> dict[str, dict[str, list[str]]]:
    found = {}
    for where, frame in all_frames(world):
        if where in REQUEST_RECORDS:
            continue
        hits = ids_in_text(frame, ids)
        if hits:
            found[where] = {c: v[:3] for c, v in hits.items()}
    return found


@pytest.fixture(scope="session")
def erased(tmp_path_factory, dbt_manifest):
    world = make_world(tmp_path_factory.mktemp("privacy"), accounts=30, days=20, seed=5)
    expected = expected_erased_ids(world)
    ids = sorted(set().union(*expected.values()))
    raw_text = "\n".join(p.read_text() for p in (world.raw / "events").rglob("*.jsonl"))
    assert any(f'"{i}"' in raw_text for i in ids), "the erased person has no raw events"
    result = materialize(world)
    assert result.success, failures(result)
    return world, expected, ids


def test_erased_ids_appear_nowhere_after_a_run(erased):
    world, expected, ids = erased
    assert len(ids) > len(expected)  # a user id plus at least one linked anonymous id
    assert not leaks(world, ids)


def test_the_erasure_log_has_a_row_per_request_and_table(erased):
    world, expected, _ = erased
    log = read_warehouse(world.warehouse)["erasure_log"]
    assert set(log["request_id"].unique().to_list()) == set(expected)
    for request_id in expected:
        mine = log.filter(pl.col("request_id") == request_id)
        tables = set(mine["table"].to_list())
        assert {"events", "identity_map"} <= tables, tables
        removed = mine.group_by("table").agg(pl.col("rows_removed").sum())
        by_table = dict(removed.iter_rows())
        assert by_table["events"] > 0 and by_table["identity_map"] > 0, by_table


def test_reprocessing_old_raw_files_does_not_bring_them_back(erased):
    world, _, ids = erased
    # the arrival days whose raw files hold one of the erased ids
    days = [
        d
        for d in world.days
        if any(
            any(f'"{i}"' in p.read_text() for i in ids)
            for p in (world.raw / "events" / f"dt={d}").glob("*.jsonl")
        )
    ]
    assert days
    result = materialize(world, days[0], days[0])
    assert result.success, failures(result)
    assert not leaks(world, ids)
    stats = pl.read_parquet(world.lake / "ingest_stats" / f"dt={days[0]}.parquet")
    assert stats["erased"][0] > 0
