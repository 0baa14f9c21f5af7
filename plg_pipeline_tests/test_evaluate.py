"""plg-pipeline evaluate on a small generated world run through the whole graph.

The world's archetypes are the answer key: PQL tiers must order the measured upgrade rate, and
accounts that are really ready to expand must get plan pitches more often than the look-alikes.
Both compare rates measured on the run, so a scoring or trigger change can make them fail.
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from plg_pipeline.cli import main
from plg_pipeline.defs.common import marts
from plg_pipeline.evaluate import (
    TABLES,
    archetype_trigger_rates,
    is_monotone,
    pitches_by_group,
    read_archetypes,
    read_marts,
    tier_upgrade_rates,
)
from plg_pipeline.lib import outcomes
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.signals import load_signals_config
from plg_pipeline.lib.trigger_rules import load_triggers
from plg_pipeline_tests.e2e_fixtures import World, failures, make_world, run_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory, dbt_manifest) -> World:
    """100 accounts x 90 days (at 60, low vs medium can tie); the marts the report reads and
    everything upstream, run once (~30 s).

    The dbt metric marts and deliveries are left out: the report does not read them.
    """
    from plg_pipeline.definitions import defs

    w = make_world(tmp_path_factory.mktemp("evaluate"), accounts=100, days=90, seed=7, bad_rate=0)
    wanted = dg.AssetSelection.assets(*(marts(t) for t in TABLES)).upstream()
    wanted = wanted.required_multi_asset_neighbors()
    keys = wanted.resolve(defs.resolve_asset_graph())
    tags = {
        "dagster/asset_partition_range_start": w.days[0].isoformat(),
        "dagster/asset_partition_range_end": w.days[-1].isoformat(),
    }
    with run_env(w), dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("pipeline_job").execute_in_process(
            instance=instance, tags=tags, asset_selection=list(keys), raise_on_error=False
        )
    assert result.success, failures(result)
    return w


def test_pql_tiers_order_the_upgrade_rate(world):
    marts = read_marts(world.warehouse, ("pql_scores", "billing_events"))
    cfg = load_signals_config()
    rates = tier_upgrade_rates(
        marts["pql_scores"],
        outcomes.upgrades(marts["billing_events"]),
        cfg.outcome_window_days,
        cfg.evaluation_every_days,
        warmup_days=28,
    )
    assert rates["tier"].to_list() == ["low", "medium", "high"]
    assert rates["samples"].min() >= 20, rates  # every tier measured, not a handful of rows
    assert is_monotone(rates), rates


def test_look_alikes_get_fewer_plan_pitches_than_expansion_ready_accounts(world):
    marts = read_marts(world.warehouse, ("trigger_candidates",))
    triggers = load_triggers(plans=load_plans(world.raw))
    rates = archetype_trigger_rates(
        marts["trigger_candidates"], read_archetypes(world.raw), triggers
    )
    n = dict(rates.group_by("group").agg(pl.col("accounts").sum()).rows())
    assert n["expansion_ready"] >= 5 and n["look_alike"] >= 5, n
    pitch = pitches_by_group(rates)
    assert pitch["expansion_ready"] > 1.5 * pitch["look_alike"], rates


def test_report_prints_every_table_and_passes_its_own_checks(world, capsys):
    code = main(
        ["evaluate", "--warehouse", str(world.warehouse), "--raw", str(world.raw), "--strict"]
    )
    out = capsys.readouterr().out
    for heading in ("== 1.", "== 2.", "== 3a.", "== 3b.", "== 4.", "== 4b.", "== 5."):
        assert heading in out
    assert "monotone low < medium < high: yes" in out
    assert code == 0
