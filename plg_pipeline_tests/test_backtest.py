"""Backtest precision, recall, false-positive rate, lead time and sensitivity, hand-computed."""

from __future__ import annotations

import polars as pl
import pytest

from plg_pipeline.lib.backtest import PER_RULE_SCHEMA, SENSITIVITY_SCHEMA, backtest
from plg_pipeline.lib.outcomes import upgrades
from plg_pipeline_tests.test_triggers import CONFIG, World, only


def hits(w: World, aid: str, first: int, a: int = 2, b: int = 1) -> World:
    """limit_hits a then b on two consecutive days: usage_ceiling fires on first + 1 if a + b >= 3."""
    return w.set(aid, first, first, limit_hits=a).set(aid, first + 1, first + 1, limit_hits=b)


def world() -> World:
    w = World(days=90)
    for aid in "ABCDEF":
        w.account(aid)
    hits(hits(w, "A", 40), "A", 55)  # fires 41 and 56, upgrade 60: true positive, lead 19
    w.bill("A", 60, "business", 10, 350, "upgrade")
    hits(w, "B", 10)  # fires 11, upgrade 85 is 74 days later: false positive, upgrade missed
    w.bill("B", 85, "business", 10, 350, "upgrade")
    hits(w, "C", 40, 2, 2)  # fires 41, never upgrades: false positive among non-upgraders
    w.bill("D", 50, "business", 10, 350, "upgrade")  # upgrade with no fire: missed
    hits(w, "F", 30, 1, 1)  # 2 hits: fires only under a threshold below 2, upgrade 70
    w.bill("F", 70, "business", 10, 350, "upgrade")
    return w  # E: no fire, no upgrade


def test_per_rule_metrics_match_the_hand_count():
    w = world()
    inputs = w.inputs()
    per_rule, _ = backtest(
        inputs, only(CONFIG, "usage_ceiling"), upgrades(inputs.billing_events), {}
    )
    assert per_rule.schema == pl.Schema(PER_RULE_SCHEMA)
    row = per_rule.row(0, named=True)
    assert row == {
        "rule": "usage_ceiling",
        "fires": 4,  # A twice, B, C
        "accounts": 3,
        "precision": pytest.approx(1 / 3),  # A of A, B, C
        "recall": pytest.approx(1 / 4),  # A's of the upgrades of A, B, D, F
        "false_positive_rate": pytest.approx(1 / 2),  # C of C, E
        "median_lead_days": 19.0,  # first fire 41 -> upgrade 60
    }


def test_sensitivity_scales_the_main_threshold_per_variant():
    w = world()
    inputs = w.inputs()
    variants = {"conservative": 1.33, "balanced": 1.0, "aggressive": 0.6}
    _, grid = backtest(
        inputs, only(CONFIG, "usage_ceiling"), upgrades(inputs.billing_events), variants
    )
    assert grid.schema == pl.Schema(SENSITIVITY_SCHEMA)
    rows = {r["variant"]: r for r in grid.iter_rows(named=True)}
    # 3.99: only C's 4 hits; 3: A, A, B, C; 1.8: F's 2 hits join (F upgrades 40 days later).
    assert rows["conservative"] == {
        "rule": "usage_ceiling",
        "variant": "conservative",
        "threshold": pytest.approx(3.99),
        "fires": 1,
        "precision": 0.0,
        "recall": 0.0,
    }
    assert (
        rows["balanced"]["fires"],
        rows["balanced"]["precision"],
        rows["balanced"]["recall"],
    ) == (4, pytest.approx(1 / 3), pytest.approx(1 / 4))
    assert rows["aggressive"]["threshold"] == pytest.approx(1.8)
    assert (
        rows["aggressive"]["fires"],
        rows["aggressive"]["precision"],
        rows["aggressive"]["recall"],
    ) == (5, pytest.approx(2 / 4), pytest.approx(2 / 4))


def test_at_most_thresholds_tighten_by_division():
    rule = next(r for r in CONFIG.rules if r.name == "seat_adoption_gap")
    assert rule.condition.scaled(1.25).threshold == pytest.approx(rule.condition.threshold / 1.25)
    usage = next(r for r in CONFIG.rules if r.name == "usage_threshold")
    assert usage.condition.scaled(1.33).threshold == pytest.approx(1.5 * 1.33)


def test_default_variants_come_from_config_and_every_rule_is_reported():
    w = world()
    inputs = w.inputs()
    per_rule, grid = backtest(inputs, CONFIG, upgrades(inputs.billing_events))
    assert per_rule["rule"].to_list() == [r.name for r in CONFIG.rules]
    assert grid.height == len(CONFIG.rules) * len(CONFIG.backtest.variants)
    assert set(grid["variant"]) == set(CONFIG.backtest.variants)
