"""Orchestration settings (partition start, owners) read from config/pipeline.yaml."""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Annotated

from pydantic import Field, StringConstraints

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config

Owner = Annotated[str, StringConstraints(pattern=r"^(team:[\w.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")]
"""A Dagster owner: `team:<name>` or an email address."""
Team = Annotated[list[Owner], Field(min_length=1)]


class StageOwners(StrictModel):
    """Who is paged for each stage's assets: every stage has someone, so no asset is orphaned."""

    ingest: Team
    identity: Team
    privacy: Team
    activity: Team
    metrics: Team
    scoring: Team
    triggers: Team
    actions: Team


class PipelineConfig(StrictModel):
    partitions_start: date
    owners: StageOwners


@cache
def pipeline_config() -> PipelineConfig:
    return load_config(config_path("pipeline.yaml"), PipelineConfig)
