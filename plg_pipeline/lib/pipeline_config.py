"""Orchestration settings (partition start, owners) read from config/pipeline.yaml."""

from __future__ import annotations

from datetime import date
from functools import cache

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config


class PipelineConfig(StrictModel):
    partitions_start: date
    owners: dict[str, list[str]]


@cache
def pipeline_config() -> PipelineConfig:
    return load_config(config_path("pipeline.yaml"), PipelineConfig)
