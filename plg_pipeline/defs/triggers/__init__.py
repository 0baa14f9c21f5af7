import dagster as dg

from plg_pipeline.defs.triggers import assets

defs = dg.Definitions(assets=[assets.trigger_candidates, assets.trigger_backtest])
