"""Quality measurements: completeness, duplicate message ids, identity match rate."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from plg_pipeline.lib.configfile import ConfigError
from plg_pipeline.lib.identity import IdentityConfig, attribute_events, memberships, update_identity
from plg_pipeline.lib.quality import (
    QualityConfig,
    duplicate_message_ids,
    event_completeness,
    identity_match_rate,
    load_quality_config,
)
from plg_pipeline_tests.test_identity import make_events

CFG = QualityConfig()
PROPS = '{"feature":"sso"}'


def test_completeness_counts_only_activity_events_and_each_part():
    events = make_events(
        [
            {"user_id": "u1", "account_id": "a", "properties": PROPS},
            {"anonymous_id": "x", "account_id": "a", "properties": PROPS, "type": "page"},
            {"user_id": "u1", "properties": PROPS},  # no account
            {"user_id": "u1", "account_id": "a", "properties": "{}"},  # empty properties
            {"user_id": "u1", "type": "identify"},  # not activity: not measured
        ]
    )
    m = event_completeness(events, CFG)
    assert (m.value, m.rows, m.passed, m.threshold) == (0.5, 4, False, 0.95)
    assert m.details == {
        "with_user": 1.0,
        "with_account": 0.75,
        "with_time": 1.0,
        "with_properties": 0.75,
    }
    lenient = event_completeness(events, QualityConfig(min_event_completeness=0.5))
    assert lenient.passed


def test_duplicate_message_ids():
    unique = make_events([{"user_id": "u"}, {"user_id": "v"}])
    assert duplicate_message_ids(unique, CFG).passed
    dup = make_events(
        [{"user_id": "u", "event_id": "m"}, {"user_id": "v", "event_id": "m"}, {"event_id": "m"}]
    )
    m = duplicate_message_ids(dup, CFG)
    assert (m.value, m.passed, m.rows) == (2.0, False, 3)


def test_identity_match_rate_on_attributed_events():
    events = make_events(
        [
            {"type": "group", "user_id": "u1", "group_id": "acc"},
            {"user_id": "u1"},  # attributed through the membership
            {"anonymous_id": "stranger"},  # a user, but no account
            {"user_id": "u1", "account_id": "acc"},
        ]
    )
    state, _ = update_identity(None, events, IdentityConfig())
    attributed = attribute_events(
        events, state.identity_map, memberships(events, state.identity_map)
    )
    m = identity_match_rate(attributed, CFG)
    assert (m.value, m.rows, m.passed) == (pytest.approx(2 / 3), 3, False)
    assert m.details == {"with_user": 1.0, "with_account": pytest.approx(2 / 3)}


def test_empty_input_passes():
    empty = make_events([])
    assert (
        event_completeness(empty, CFG).passed
        and identity_match_rate(empty.with_columns(canonical_user_id=pl.col("user_id")), CFG).passed
    )


def test_bad_threshold_names_file_and_key(tmp_path: Path):
    (tmp_path / "quality.yaml").write_text("min_identity_match_rate: 1.5\n")
    with pytest.raises(ConfigError, match=r"quality\.yaml: min_identity_match_rate"):
        load_quality_config(tmp_path)
