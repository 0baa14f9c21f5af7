"""action_sensor against a real Dagster instance: one run per materialization, none while blocked."""

import time
from datetime import timedelta

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from plg_pipeline.defs.actions.assets import action_deliveries
from plg_pipeline.defs.actions.jobs import action_job
from plg_pipeline.defs.actions.resources import DestinationsResource, EndpointConfig
from plg_pipeline.defs.actions.sensors import action_sensor
from plg_pipeline.defs.resources import PipelineSettings

# Stand-ins for the upstream stages, with the keys and blocking checks the sensor looks at.
CHECKS_PASS = {"events": True, "trigger_candidates": True}


@dg.asset(
    key=["lake", "events"],
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=24)),
)
def events() -> None:
    return None


@dg.asset_check(asset=events, blocking=True)
def events_have_no_duplicate_message_ids() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=CHECKS_PASS["events"])


@dg.asset(key=["marts", "trigger_candidates"], deps=[events])
def trigger_candidates() -> None:
    return None


@dg.asset_check(asset=trigger_candidates, blocking=True)
def trigger_ids_are_unique() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=CHECKS_PASS["trigger_candidates"])


@dg.asset_check(asset=trigger_candidates, blocking=False)
def holdout_share_is_near_target() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)  # not blocking: must not stop delivery


DEFS = dg.Definitions(
    assets=[events, trigger_candidates, action_deliveries],
    asset_checks=[
        events_have_no_duplicate_message_ids,
        trigger_ids_are_unique,
        holdout_share_is_near_target,
    ],
    jobs=[action_job],
    sensors=[action_sensor],
    resources={
        "settings": PipelineSettings(),
        "destinations": DestinationsResource(
            endpoints={"inapp": EndpointConfig(url="http://127.0.0.1:9", secret="s")}
        ),
    },
)


@pytest.fixture
def instance():
    CHECKS_PASS.update(events=True, trigger_candidates=True)
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance: dg.DagsterInstance, cursor: str | None = None):
    return action_sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, definitions=DEFS)
    )


def materialize(instance: dg.DagsterInstance, *nodes) -> None:
    dg.materialize(list(nodes), instance=instance, raise_on_error=False)


def test_one_run_per_materialization_and_reevaluation_requests_none(instance):
    assert "not been materialized" in tick(instance).skip_message
    materialize(instance, trigger_candidates, trigger_ids_are_unique, holdout_share_is_near_target)
    first = tick(instance)
    assert len(first.run_requests) == 1
    run_key = first.run_requests[0].run_key
    storage_id = (
        instance.fetch_materializations(trigger_candidates.key, limit=1).records[0].storage_id
    )
    assert run_key == f"trigger_candidates:{storage_id}" and first.cursor == str(storage_id)
    # the same tick evaluated again (cursor not yet saved) asks for the same run key: one run
    assert [r.run_key for r in tick(instance).run_requests] == [run_key]
    again = tick(instance, cursor=first.cursor)
    assert again.run_requests == [] and "no materialization newer" in again.skip_message
    materialize(instance, trigger_candidates, trigger_ids_are_unique)
    second = tick(instance, cursor=first.cursor)
    assert len(second.run_requests) == 1 and second.run_requests[0].run_key != run_key


def test_failed_blocking_check_upstream_skips_until_it_passes(instance):
    CHECKS_PASS["events"] = False
    materialize(instance, events, events_have_no_duplicate_message_ids)
    materialize(instance, trigger_candidates, trigger_ids_are_unique)
    blocked = tick(instance)
    assert blocked.run_requests == []
    assert (
        blocked.skip_message
        == "not delivering: blocking check lake/events:events_have_no_duplicate_message_ids failed"
    )
    assert blocked.cursor is None  # not consumed: delivered once the data is trusted again
    CHECKS_PASS["events"] = True
    materialize(instance, events, events_have_no_duplicate_message_ids)
    assert len(tick(instance).run_requests) == 1


def test_failed_blocking_check_on_trigger_candidates_skips(instance):
    CHECKS_PASS["trigger_candidates"] = False
    materialize(instance, trigger_candidates, trigger_ids_are_unique)
    result = tick(instance)
    assert result.run_requests == []
    assert "marts/trigger_candidates:trigger_ids_are_unique failed" in result.skip_message


def report_freshness(instance: dg.DagsterInstance, state: FreshnessState) -> None:
    """What the freshness daemon records (there is no public API to write a state)."""
    change = FreshnessStateChange(
        key=events.key,
        new_state=state,
        previous_state=FreshnessState.UNKNOWN,
        state_change_timestamp=time.time(),
    )
    instance._report_runless_asset_event(asset_event=change)


def test_stale_upstream_skips_until_fresh(instance):
    materialize(instance, trigger_candidates, trigger_ids_are_unique)
    report_freshness(instance, FreshnessState.FAIL)
    result = tick(instance)
    assert (
        result.run_requests == []
        and result.skip_message == "not delivering: lake/events is stale (freshness FAIL)"
    )
    report_freshness(instance, FreshnessState.WARN)  # WARN does not hold actions back
    assert len(tick(instance).run_requests) == 1
