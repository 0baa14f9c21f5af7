import dagster as dg

from plg_pipeline.defs.scoring import assets

defs = dg.Definitions(
    assets=[
        assets.signal_lift,
        assets.pql_scores,
        assets.tier_transitions,
        assets.weight_calibration,
    ]
)
