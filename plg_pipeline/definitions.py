"""The code location: every stage's definitions plus the resources they share."""

import dagster as dg

from plg_pipeline.defs import (
    actions,
    activity,
    identity,
    ingest,
    metrics,
    ops,
    privacy,
    scoring,
    triggers,
)
from plg_pipeline.defs.io_manager import LakehouseIOManager
from plg_pipeline.defs.jobs import pipeline_job
from plg_pipeline.defs.resources import PipelineSettings

settings = PipelineSettings(
    raw_dir=dg.EnvVar("PLG_RAW_DIR"),
    warehouse_path=dg.EnvVar("PLG_WAREHOUSE"),
    hash_key=dg.EnvVar("PLG_HASH_KEY"),
)

defs = dg.Definitions.merge(
    *(
        stage.defs
        for stage in (ingest, identity, privacy, activity, metrics, scoring, triggers, actions, ops)
    ),
    dg.Definitions(
        jobs=[pipeline_job],
        # steps of a run share one process: most of them hold the warehouse pool anyway, and
        # a process per step costs ~3 s of imports each on two cores (event-to-action latency)
        executor=dg.in_process_executor,
        resources={"settings": settings, "io_manager": LakehouseIOManager(settings=settings)},
    ),
)
