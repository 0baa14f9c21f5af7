import dagster as dg

from plg_pipeline.defs.ingest import assets

defs = dg.Definitions(
    assets=[
        *assets.raw_sources,
        assets.events_validated,
        assets.events,
        assets.reference_tables,
        assets.quarantined_events,
    ],
)
