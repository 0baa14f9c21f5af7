import dagster as dg
from dagster_dbt import DbtCliResource

from plg_pipeline.defs.metrics.assets import metrics_dbt_models
from plg_pipeline.defs.metrics.project import DBT_EXECUTABLE, dbt_project

defs = dg.Definitions(
    assets=[metrics_dbt_models],
    resources={"dbt": DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)},
)
