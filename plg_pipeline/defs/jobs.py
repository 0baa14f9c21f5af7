"""Jobs over the whole graph; each stage may add its own."""

import dagster as dg

from plg_pipeline.defs.partitions import arrival_days

pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=arrival_days,
    description="Every asset, for one arrival day or a range of them (single-run backfill).",
)
