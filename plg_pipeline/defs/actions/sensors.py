"""Deliver once per new trigger_candidates materialization, unless upstream data is not trusted."""

from __future__ import annotations

import dagster as dg

from plg_pipeline.defs.actions.assets import TRIGGER_CANDIDATES
from plg_pipeline.defs.actions.jobs import action_job
from plg_pipeline.lib.slas import slas


def _check_blocks(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> str | None:
    """Why this blocking check's latest execution stops delivery, or None when it does not."""
    record = instance.get_latest_asset_check_evaluation_record(check_key)
    if record is None:
        return None
    name = f"{check_key.asset_key.to_user_string()}:{check_key.name}"
    status = record.status.value
    if status == "FAILED":
        evaluation = record.event.asset_check_evaluation if record.event else None
        if evaluation is None or evaluation.severity == dg.AssetCheckSeverity.ERROR:
            return f"blocking check {name} failed"
    if status == "PLANNED":
        run = instance.get_run_by_id(record.run_id)
        if run is not None and not run.is_finished:
            return f"blocking check {name} is still running (run {record.run_id})"
        if run is not None and run.is_failure_or_canceled:
            return f"blocking check {name} did not complete (run {record.run_id} failed)"
    return None


def blocking_reasons(
    instance: dg.DagsterInstance, asset_graph, key: dg.AssetKey = TRIGGER_CANDIDATES
) -> list[str]:
    """Failed (or unfinished) blocking checks and FAIL freshness on `key` and all its upstream."""
    keys = sorted(asset_graph.get_ancestor_asset_keys(key, include_self=True))
    reasons = [
        reason
        for k in keys
        for check_key in sorted(asset_graph.get(k).check_keys)
        if asset_graph.get_check_spec(check_key).blocking
        and (reason := _check_blocks(instance, check_key))
    ]
    with_policy = [k for k in keys if asset_graph.get(k).freshness_policy is not None]
    states = instance.get_freshness_state_records(with_policy) if with_policy else {}
    reasons += [
        f"{k.to_user_string()} is stale (freshness FAIL)"
        for k, state in sorted(states.items())
        if state.freshness_state == "FAIL"
    ]
    return reasons


@dg.sensor(
    job=action_job,
    minimum_interval_seconds=slas().cadence.action_sensor_seconds,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def action_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """One action_job run per new trigger_candidates materialization that passed its checks.

    The cursor only moves when a run is requested, so a materialization skipped for a failed
    check is delivered once the check passes; the run key is the materialization's storage id,
    so a tick evaluated twice still launches one run.
    """
    latest = context.instance.fetch_materializations(TRIGGER_CANDIDATES, limit=1).records
    if not latest:
        return dg.SkipReason(f"{TRIGGER_CANDIDATES.to_user_string()} has not been materialized yet")
    record = latest[0]
    if context.cursor and record.storage_id <= int(context.cursor):
        return dg.SkipReason(f"no materialization newer than storage id {context.cursor}")
    if context.repository_def is None:
        return dg.SkipReason("no definitions in the sensor context: cannot see upstream checks")
    if reasons := blocking_reasons(context.instance, context.repository_def.asset_graph):
        return dg.SkipReason("not delivering: " + "; ".join(reasons))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"trigger_candidates:{record.storage_id}",
                tags={"plg/trigger_candidates_run_id": record.run_id},
            )
        ],
        cursor=str(record.storage_id),
    )
