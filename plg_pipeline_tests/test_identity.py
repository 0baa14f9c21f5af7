"""Identity stitching: components vs networkx, order independence, incremental == full, guard."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from polars.testing import assert_frame_equal

from plg_pipeline.lib.identity import (
    FACT_SCHEMAS,
    IdentityConfig,
    IdentityFacts,
    IdentityState,
    attribute_events,
    connected_labels,
    memberships,
    update_identity,
    user_consent,
)

TS = pl.Datetime("us", "UTC")
EVENT_SCHEMA = {
    "event_id": pl.String,
    "type": pl.String,
    "event_name": pl.String,
    "user_id": pl.String,
    "anonymous_id": pl.String,
    "previous_id": pl.String,
    "group_id": pl.String,
    "context_group_id": pl.String,
    "account_id": pl.String,
    "event_time": TS,
    "event_date": pl.Date,
    "received_at": TS,
    "arrival_date": pl.Date,
    "source_file": pl.String,
    "line": pl.Int64,
    "properties": pl.String,
    "traits": pl.String,
    "context_ip": pl.String,
    "email_hash": pl.String,
    "role": pl.String,
    "consent_analytics": pl.Boolean,
    "plan": pl.String,
    "feature": pl.String,
    "tier": pl.String,
    "required_plan": pl.String,
    "limit_name": pl.String,
    "used": pl.Float64,
    "allowed": pl.Float64,
    "quantity": pl.Float64,
    "integration": pl.String,
    "invitee_hash": pl.String,
    "invited_by": pl.String,
    "trigger_id": pl.String,
    "page": pl.String,
}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CFG = IdentityConfig()
# Hypothesis caches examples under the working directory, already while collecting: keep it in /tmp.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="plg-hypothesis-"))


def make_events(rows: list[dict]) -> pl.LazyFrame:
    """A curated events frame (ARCHITECTURE.md columns) from a few dicts; unset columns are null.

    event_time accepts a datetime (naive = UTC) or an ISO-8601 string with an offset; event_id
    defaults to the row position; event_date / arrival_date follow event_time.
    """
    filled = []
    for i, row in enumerate(rows):
        when = row.get("event_time", T0)
        if isinstance(when, str):
            when = datetime.fromisoformat(when)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        full = {col: None for col in EVENT_SCHEMA}
        full.update(event_id=f"m{i}", type="track", source_file="test.jsonl", line=i + 1)
        full.update(row)
        if full["type"] == "group" and "account_id" not in row:
            full["account_id"] = full["group_id"]
        full.update(
            event_time=when,
            event_date=when.date(),
            arrival_date=row.get("arrival_date", when.date()),
        )
        filled.append(full)
    return pl.DataFrame(filled, schema=EVENT_SCHEMA, orient="row").lazy()


def canon(state: IdentityState) -> dict[str, str]:
    return dict(state.identity_map.select("id", "canonical_user_id").iter_rows())


def test_anonymous_and_alias_links_merge_to_smallest_user_id():
    state, _ = update_identity(
        None,
        make_events(
            [
                {"anonymous_id": "a1"},
                {"type": "identify", "anonymous_id": "a1", "user_id": "u2"},
                {"type": "alias", "previous_id": "u2", "user_id": "u1"},
                {"anonymous_id": "a9"},
            ]
        ),
        CFG,
    )
    assert canon(state) == {"a1": "u1", "u1": "u1", "u2": "u1", "a9": "a9"}
    types = dict(state.identity_map.select("id", "id_type").iter_rows())
    assert types == {"a1": "anonymous", "u1": "user", "u2": "user", "a9": "anonymous"}


def test_overmerge_guard_keeps_users_apart_and_audits():
    rows = [{"anonymous_id": "kiosk", "user_id": f"u{i}"} for i in range(4)]
    rows.append({"anonymous_id": "a_ok", "user_id": "u0"})
    state, _ = update_identity(None, make_events(rows), CFG)
    mapping = canon(state)
    assert mapping["kiosk"] == "kiosk"
    assert {mapping[f"u{i}"] for i in range(4)} == {"u0", "u1", "u2", "u3"}
    assert mapping["a_ok"] == "u0"
    assert state.overmerge_audit.select("anonymous_id", "user_count").rows() == [("kiosk", 4)]
    # at the threshold (3 users) the id still merges
    state3, _ = update_identity(None, make_events(rows[:3]), CFG)
    assert set(canon(state3).values()) == {"u0"}
    assert state3.overmerge_audit.is_empty()


def test_guard_crossed_later_splits_component_and_reports_relabelled():
    first = make_events([{"anonymous_id": "k", "user_id": f"u{i}"} for i in (1, 2, 3)])
    state, _ = update_identity(None, first, CFG)
    assert set(canon(state).values()) == {"u1"}
    state, relabelled = update_identity(
        state, make_events([{"anonymous_id": "k", "user_id": "u4"}]), CFG
    )
    assert canon(state) == {"k": "k", "u1": "u1", "u2": "u2", "u3": "u3", "u4": "u4"}
    assert relabelled.sort("id").rows() == [
        ("k", "u1", "k"),
        ("u2", "u1", "u2"),
        ("u3", "u1", "u3"),
    ]


def test_anonymous_component_gets_real_user_when_identified_later():
    state, _ = update_identity(
        None, make_events([{"anonymous_id": "a2"}, {"anonymous_id": "a1"}]), CFG
    )
    state, relabelled = update_identity(
        state, make_events([{"type": "identify", "anonymous_id": "a2", "user_id": "u5"}]), CFG
    )
    assert canon(state) == {"a1": "a1", "a2": "u5", "u5": "u5"}
    assert relabelled.rows() == [("a2", "a2", "u5")]


def test_state_roundtrip(tmp_path: Path):
    state, _ = update_identity(
        None, make_events([{"anonymous_id": "a", "user_id": "u"}, {"anonymous_id": "b"}]), CFG
    )
    state.save(tmp_path / "identity")
    loaded = IdentityState.load(tmp_path / "identity")
    for a, b in zip(state._tables().values(), loaded._tables().values(), strict=True):
        assert_frame_equal(a, b)


@st.composite
def link_graphs(draw):
    """Random link events between a few users and anonymous ids, in chunks of arrival."""
    n_users, n_anon = draw(st.integers(1, 8)), draw(st.integers(0, 10))
    users = [f"u{i}" for i in range(n_users)]
    anons = [f"a{i}" for i in range(n_anon)]
    kinds = st.sampled_from(
        ["anon", "alias", "solo_user", "solo_anon"] if anons else ["alias", "solo_user"]
    )
    rows = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=30)):
        user = draw(st.sampled_from(users))
        if kind == "anon":
            rows.append({"anonymous_id": draw(st.sampled_from(anons)), "user_id": user})
        elif kind == "alias":
            rows.append(
                {
                    "type": "alias",
                    "previous_id": draw(st.sampled_from(users + anons)),
                    "user_id": user,
                }
            )
        elif kind == "solo_user":
            rows.append({"user_id": user})
        else:
            rows.append({"anonymous_id": draw(st.sampled_from(anons))})
    for i, row in enumerate(rows):
        row["event_time"] = T0 + timedelta(minutes=i)
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    return rows, cuts, draw(st.integers(1, 3))


def expected_canonical(rows: list[dict], max_users: int) -> dict[str, str]:
    """Reference answer with networkx: guard, components, smallest userId else smallest id."""
    pairs = set()
    for r in rows:
        if r.get("anonymous_id") and r.get("user_id"):
            pairs.add((r["anonymous_id"], r["user_id"]))
        if r.get("previous_id") and r["previous_id"] != r["user_id"]:
            pairs.add((r["previous_id"], r["user_id"]))
    users_of: dict[str, set[str]] = {}
    for a, u in pairs:
        users_of.setdefault(a, set()).add(u)
    graph = nx.Graph()
    user_ids = {r["user_id"] for r in rows if r.get("user_id")}
    for r in rows:
        graph.add_nodes_from(
            r.get(c) for c in ("user_id", "anonymous_id", "previous_id") if r.get(c)
        )
    graph.add_edges_from((a, u) for a, u in pairs if len(users_of[a]) <= max_users)
    result = {}
    for comp in nx.connected_components(graph):
        real = sorted(comp & user_ids)
        for node in comp:
            result[node] = real[0] if real else min(comp)
    return result


@settings(max_examples=60, deadline=None, database=None)
@given(link_graphs())
def test_matches_networkx_and_incremental_equals_full(case):
    rows, cuts, max_users = case
    cfg = IdentityConfig(max_users_per_anonymous_id=max_users)
    full, _ = update_identity(None, make_events(rows), cfg)
    assert canon(full) == expected_canonical(rows, max_users)

    shuffled = rows[:]
    random.Random(len(rows)).shuffle(shuffled)
    state = None
    for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True):
        if hi > lo:
            state, _ = update_identity(state, make_events(shuffled[lo:hi]), cfg)
    for a, b in zip(full._tables().values(), state._tables().values(), strict=True):
        assert_frame_equal(a, b)


def test_connected_labels_on_long_chain_and_random_graph():
    n = 2000
    chain = np.arange(n - 1)
    assert (connected_labels(n, chain[::-1], chain[::-1] + 1) == 0).all()
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    labels = connected_labels(n, a, b)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip(a.tolist(), b.tolist(), strict=True))
    for comp in nx.connected_components(graph):
        assert {int(labels[i]) for i in comp} == {min(comp)}


def test_memberships_attribution_and_consent():
    t = T0
    events = make_events(
        [
            {
                "type": "identify",
                "anonymous_id": "a1",
                "user_id": "u1",
                "role": "admin",
                "event_time": t,
            },
            {
                "anonymous_id": "a1",
                "event_name": "Feature Used",
                "event_time": t + timedelta(minutes=1),
            },
            {
                "type": "group",
                "user_id": "u1",
                "group_id": "acc1",
                "event_time": t + timedelta(minutes=2),
            },
            {"user_id": "u1", "event_name": "Feature Used", "event_time": t + timedelta(minutes=3)},
            {
                "user_id": "u1",
                "context_group_id": "acc2",
                "account_id": "acc2",
                "event_time": t + timedelta(hours=1),
            },
            {"user_id": "u1", "event_name": "Feature Used", "event_time": t + timedelta(hours=2)},
            {"type": "identify", "user_id": "u1", "consent_analytics": True, "event_time": t},
            {
                "type": "identify",
                "user_id": "u1",
                "consent_analytics": False,
                "event_time": t + timedelta(days=1),
            },
        ]
    )
    state, _ = update_identity(None, events, CFG)
    members = memberships(events, state.identity_map).collect().sort("account_id")
    assert members.select("canonical_user_id", "account_id", "role", "source").rows() == [
        ("u1", "acc1", "admin", "group"),
        ("u1", "acc2", "admin", "context"),
    ]
    assert members["valid_from"].to_list() == [t + timedelta(minutes=2), t + timedelta(hours=1)]
    attributed = attribute_events(events, state.identity_map, members).collect().sort("event_id")
    assert attributed.select(
        "event_id", "canonical_user_id", "account_id", "account_source"
    ).rows() == [
        ("m0", "u1", None, None),
        ("m1", "u1", None, None),
        ("m2", "u1", "acc1", "explicit"),
        ("m3", "u1", "acc1", "membership"),
        ("m4", "u1", "acc2", "explicit"),
        ("m5", "u1", "acc2", "membership"),
        ("m6", "u1", None, None),
        ("m7", "u1", "acc2", "membership"),
    ]
    consent = user_consent(events, state.identity_map).collect()
    assert consent.rows() == [("u1", False, t + timedelta(days=1))]


def test_memberships_starting_together_attribute_to_the_smallest_account():
    """Two links that start at the same instant: later events without an account count for
    the smallest account id, whichever link arrived first."""
    t = T0
    links = [
        {"type": "group", "user_id": "u1", "group_id": g, "event_time": t}
        for g in ("acc9", "acc10", "acc3")
    ]
    later = {"user_id": "u1", "event_name": "Feature Used", "event_time": t + timedelta(hours=1)}
    for order in (links, links[::-1]):
        events = make_events([*order, later])
        state, _ = update_identity(None, events, CFG)
        members = memberships(events, state.identity_map).collect()
        assert members["valid_from"].to_list() == [t, t, t]
        attributed = attribute_events(events, state.identity_map, members).collect()
        assert attributed.filter(pl.col("account_id").is_null()).is_empty()
        unlinked = attributed.filter(pl.col("account_source") == "membership")
        assert unlinked["account_id"].to_list() == ["acc10"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_excluded_users_lose_exactly_their_events(seed):
    """Excluding users inside the attribution (no consent) gives the attributed events minus
    theirs, whichever rule attributed them: explicit, latest or earlier membership, none."""
    rng = random.Random(seed)
    rows = []
    for _ in range(300):
        who = rng.choice(
            [
                {"user_id": f"u{rng.randrange(8)}"},
                {"anonymous_id": f"a{rng.randrange(12)}"},
                {"user_id": f"u{rng.randrange(8)}", "anonymous_id": f"a{rng.randrange(12)}"},
            ]
        )
        kind = rng.choice(["track", "track", "identify", "group"])
        account = rng.random() < 0.2 and kind == "track"
        rows.append(
            {
                **who,
                "type": kind,
                "event_name": "Feature Used" if kind == "track" else None,
                "event_time": T0 + timedelta(days=rng.randrange(10), minutes=rng.randrange(1440)),
                "group_id": f"acc{rng.randrange(4)}" if kind == "group" else None,
                "context_group_id": f"acc{rng.randrange(4)}" if account else None,
                "account_id": f"acc{rng.randrange(4)}" if account else None,
            }
        )
    events = make_events(rows)
    state, _ = update_identity(None, events, CFG)
    members = memberships(events, state.identity_map).collect()
    users = state.identity_map["canonical_user_id"].unique().sort().to_list()
    excluded = pl.DataFrame({"canonical_user_id": rng.sample(users, len(users) // 2)})
    every = attribute_events(events, state.identity_map, members).collect()
    assert every["account_source"].n_unique() == 3  # explicit, membership and unattributed
    expected = every.join(excluded, on="canonical_user_id", how="anti").sort("event_id")
    got = attribute_events(events, state.identity_map, members, excluded).collect()
    assert 0 < got.height < every.height
    assert_frame_equal(got.sort("event_id"), expected)


@pytest.mark.parametrize("bad", [0, -1, "x"])
def test_bad_config_rejected(bad):
    with pytest.raises(ValueError):
        IdentityConfig(max_users_per_anonymous_id=bad)


def test_update_with_no_new_events_changes_nothing(tmp_path: Path):
    state, _ = update_identity(None, make_events([{"anonymous_id": "a", "user_id": "u"}]), CFG)
    again, relabelled = update_identity(state, make_events([]), CFG)
    assert relabelled.is_empty()
    for a, b in zip(state._tables().values(), again._tables().values(), strict=True):
        assert_frame_equal(a, b)
    assert IdentityState.load(tmp_path / "nothing_yet").identity_map.is_empty()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_facts_merged_day_by_day_equal_the_facts_of_all_events(seed):
    """Each fact table of a run that merges one day at a time (in any order, a day twice) is
    that of all events at once: what lets a daily run read only its day."""
    rng = random.Random(seed)
    rows = []
    for i in range(400):
        who = rng.choice(
            [{"user_id": f"u{rng.randrange(15)}"}, {"anonymous_id": f"a{rng.randrange(25)}"}]
        )
        if rng.random() < 0.3:  # both ids: the dates belong to each
            who = {"user_id": f"u{rng.randrange(15)}", "anonymous_id": f"a{rng.randrange(25)}"}
        kind = rng.choice(["track", "identify", "group"])
        rows.append(
            {
                **who,
                "type": kind,
                "event_id": f"e{i}",
                "event_time": T0 + timedelta(days=rng.randrange(30), minutes=rng.randrange(1440)),
                "group_id": f"acc{rng.randrange(4)}" if kind == "group" else None,
                "account_id": f"acc{rng.randrange(4)}" if rng.random() < 0.5 else None,
                "role": rng.choice(["admin", "member", None]),
                "consent_analytics": rng.choice([True, False, None]),
            }
        )
    events = make_events(rows).collect()
    days = events.partition_by("arrival_date")
    rng.shuffle(days)
    merged = IdentityFacts.empty()
    for day in [*days, days[0]]:
        merged = merged.merge(IdentityFacts.of(day.lazy()))
    whole = IdentityFacts.of(events.lazy())
    assert set(merged.tables) == set(FACT_SCHEMAS)
    for name in FACT_SCHEMAS:
        assert_frame_equal(merged.tables[name], whole.tables[name], check_row_order=True)
    dates = whole.tables["dates"]
    u0 = events.filter((pl.col("user_id") == "u0") | (pl.col("anonymous_id") == "u0"))
    want = (u0["event_date"].min(), u0["event_date"].max())
    assert dates.filter(pl.col("id") == "u0").select("first_date", "last_date").row(0) == want
