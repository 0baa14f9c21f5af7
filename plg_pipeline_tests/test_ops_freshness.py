"""SLAs: freshness policies from slas.yaml on the assets, and a breach upstream holding actions back."""

import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

# Internal: the freshness daemon itself, run one iteration at a time (no public test hook).
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from plg_pipeline.defs.actions.sensors import action_sensor
from plg_pipeline.defs.common import marts
from plg_pipeline.defs.ops.freshness import sla_freshness
from plg_pipeline.lib.configfile import PACKAGE_CONFIG_DIR, ConfigError
from plg_pipeline.lib.slas import CONFIG_FILE, load_slas, slas

REPO = Path(__file__).resolve().parent.parent
SLA_OF = {
    "events": "events",
    "billing_events": "billing_crm",
    "accounts": "billing_crm",
    "identity_map": "identity",
    "account_daily": "activity",
    "pql_scores": "scoring",
    "trigger_candidates": "triggers",
}


def test_assets_carry_the_policies_of_slas_yaml(dbt_manifest):
    from plg_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for table, sla in SLA_OF.items():
        policy = graph.get(marts(table)).freshness_policy
        window = slas().freshness[sla]
        assert policy is not None, f"marts/{table} has no freshness policy"
        assert policy.fail_window.to_timedelta() == timedelta(hours=window.fail_after_hours)
        assert policy.warn_window.to_timedelta() == timedelta(hours=window.warn_after_hours)
    assert slas().freshness["events"].fail_after_hours <= 25  # landed -> curated within the hour


def write_slas(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((PACKAGE_CONFIG_DIR / CONFIG_FILE).read_text())
    change(data)
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(data))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["freshness"]["events"].update(warn_after_hours=30), "freshness.events"),
        (
            lambda d: d["freshness"]["events"].update(fail_after_hours=0.01),
            "freshness.events.fail_after_hours",
        ),
        (lambda d: d["cadence"].update(every="5m"), "cadence.every"),
        (lambda d: d["cadence"].update(daily_refresh_cron="daily"), "cadence"),
    ],
)
def test_a_bad_slas_file_fails_naming_file_and_key(tmp_path, change, key):
    folder = write_slas(tmp_path, change)
    with pytest.raises(ConfigError) as err:
        load_slas(folder)
    assert err.value.key == key and err.value.path == str(folder / CONFIG_FILE)


def test_an_unknown_sla_name_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"freshness\.nightly"):
        sla_freshness("nightly")


@pytest.fixture
def workspace(dbt_manifest):
    target = ModuleTarget(
        module_name="plg_pipeline.definitions",
        attribute="defs",
        working_directory=str(REPO),
        location_name="plg_pipeline",
    )
    with (
        dg.instance_for_test() as instance,
        create_test_daemon_workspace_context(target, instance) as context,
    ):
        yield instance, context


def freshness_tick(context, at: float) -> None:
    with freeze_time(at):
        list(FreshnessDaemon().run_iteration(context))


def states(instance, keys) -> dict[str, str]:
    records = instance.get_freshness_state_records(keys)
    return {k.path[-1]: records[k].freshness_state.value for k in keys if k in records}


def action_tick(instance):
    from plg_pipeline.definitions import defs

    return action_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))


def test_daemon_turns_stale_events_warn_then_fail_and_actions_wait(workspace):
    """The real freshness daemon evaluates our policies; the action sensor reads its verdict."""
    instance, context = workspace
    events_sla = slas().freshness["events"]
    for key in (marts("events"), marts("trigger_candidates")):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(key, partition="2026-06-02" if key == marts("events") else None)
        )
    now = time.time()
    keys = [marts("events"), marts("trigger_candidates")]
    freshness_tick(context, now + 60)
    assert states(instance, keys) == {"events": "PASS", "trigger_candidates": "PASS"}
    assert len(action_tick(instance).run_requests) == 1

    freshness_tick(context, now + (events_sla.warn_after_hours * 3600 + 60))
    assert states(instance, keys)["events"] == "WARN"
    assert len(action_tick(instance).run_requests) == 1  # a warning does not stop delivery

    freshness_tick(context, now + events_sla.fail_after_hours * 3600 + 60)
    assert states(instance, keys)["events"] == "FAIL"
    held = action_tick(instance)
    assert held.run_requests == []
    assert "marts/events is stale (freshness FAIL)" in held.skip_message

    # the next arrival day is curated: fresh again, and the held materialization is delivered
    instance.report_runless_asset_event(
        dg.AssetMaterialization(marts("events"), partition="2026-06-03")
    )
    freshness_tick(context, time.time() + 60)
    assert states(instance, keys)["events"] == "PASS"
    assert len(action_tick(instance).run_requests) == 1
