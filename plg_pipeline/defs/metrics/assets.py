"""The dbt metrics layer as assets: models keyed by schema, dbt tests arriving as asset checks."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from plg_pipeline.defs.common import WAREHOUSE_POOL, owners
from plg_pipeline.defs.metrics.project import dbt_project
from plg_pipeline.defs.resources import PipelineSettings
from plg_pipeline.lib import warehouse
from plg_pipeline.lib.catalog import load_catalog


class MetricsTranslator(DagsterDbtTranslator):
    """Key each dbt model as <schema>/<model> (marts/mrr_movements), like the Polars tables,
    owned by the metrics owners of config/pipeline.yaml."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = self.get_resource_props(manifest, unique_id)
        if node["resource_type"] != "model":
            return spec
        return spec.replace_attributes(
            key=dg.AssetKey([node["schema"], node["name"]]),
            group_name="metrics",
            owners=owners("metrics"),
        )


def dbt_vars(settings: PipelineSettings) -> dict[str, Any]:
    """The run's dbt vars: where the warehouse is, and the event names of the event catalog.

    The catalog stays the single source of truth for event names; dbt_project.yml only holds
    defaults for a standalone `dbt build`.
    """
    catalog = load_catalog(settings.config)
    return {
        # absolute: dbt runs with the dbt project as its working directory
        "warehouse_path": str(Path(settings.warehouse_path).resolve()),
        "signup_event": catalog.event("signup"),
        "activation_event": catalog.event("activation"),
        "invite_sent_event": catalog.event("invite_sent"),
        "invite_accepted_event": catalog.event("invite_accepted"),
        "prompt_viewed_event": catalog.event("prompt_viewed"),
        "prompt_clicked_event": catalog.event("prompt_clicked"),
        "prompt_dismissed_event": catalog.event("prompt_dismissed"),
    }


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=MetricsTranslator(),
    pool=WAREHOUSE_POOL,
    # no step retry: a failed dbt test would fail again; a held file lock is retried by the
    # profile's connect_attempts instead
)
def metrics_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: PipelineSettings
):
    """dbt build of the metric marts (staging views, marts tables, tests and unit tests).

    Row counts are read here after dbt exits, from the run's own warehouse file: dagster-dbt's
    fetch_row_counts uses relation names from the parse-time manifest, whose catalog is named
    after whichever file was configured at parse time, and it would contend for the file lock.
    """
    args = ["build", "--vars", json.dumps(dbt_vars(settings))]
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    events = list(invocation.stream())
    with settings.warehouse() as con:
        for event in events:
            if isinstance(event, dg.Output | dg.AssetMaterialization):
                key = event.asset_key if isinstance(event, dg.AssetMaterialization) else None
                key = key or context.asset_key_for_output(event.output_name)
                if warehouse.table_exists(con, key.path[-1], key.path[0]):
                    rows = warehouse.row_count(con, key.path[-1], key.path[0])
                    event = event.with_metadata({**event.metadata, "dagster/row_count": rows})
            yield event
    if not invocation.is_successful():
        raise invocation.get_error()
