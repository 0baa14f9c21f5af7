import dagster as dg

from plg_pipeline.defs.activity import assets

defs = dg.Definitions(assets=[assets.activity_tables])
