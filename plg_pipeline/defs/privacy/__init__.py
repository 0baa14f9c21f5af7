import dagster as dg

from plg_pipeline.defs.privacy import assets

defs = dg.Definitions(assets=[assets.erasure_log])
