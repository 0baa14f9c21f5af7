"""Event-to-action latency with the real daemon: a new arrival day lands, the receiver gets it.

Starts `dagster dev` (webserver + daemon) on a throwaway DAGSTER_HOME and takes a few minutes,
so it only runs when PLG_LATENCY_TEST=1. `python -m plg_pipeline.latency` prints the same
figures for the demo-sized world.
"""

import os

import pytest

from plg_pipeline.latency import measure
from plg_pipeline.lib.slas import slas

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("PLG_LATENCY_TEST") != "1",
        reason="starts dagster dev and takes minutes: set PLG_LATENCY_TEST=1 to run it",
    ),
]


def test_a_landed_day_is_delivered_within_the_sla(dbt_manifest, tmp_path):
    figures = measure(
        tmp_path, accounts=30, days=14, timeout_s=slas().event_to_action_seconds, held_days=3
    )
    print(figures)
    jobs = [run["job"] for run in figures["runs"]]
    # the chain: ingestion of the landed days, automation downstream, then delivery
    assert jobs[0] == "ingest_day_job" and "__ASSET_JOB" in jobs and jobs[-1] == "action_job"
    assert all(run["status"] == "SUCCESS" for run in figures["runs"])
    assert figures["new_deliveries"] > 0
    assert figures["first_delivery_s"] < slas().event_to_action_seconds
