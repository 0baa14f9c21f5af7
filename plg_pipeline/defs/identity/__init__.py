import dagster as dg

from plg_pipeline.defs.identity import assets

defs = dg.Definitions(assets=[assets.identity_graph])
