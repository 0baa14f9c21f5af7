"""Service levels (config/slas.yaml): freshness windows per asset group and the sensor cadences.

Kept in YAML so that on-call and the growth team can tighten a window without a code change;
a bad value fails at load naming the file and key.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from pathlib import Path

from pydantic import Field, model_validator

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config

CONFIG_FILE = "slas.yaml"


class FreshnessWindow(StrictModel):
    description: str
    warn_after_hours: float | None = Field(default=None, gt=0)
    fail_after_hours: float = Field(ge=1 / 60)  # Dagster refuses fail windows under a minute

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessWindow:
        if self.warn_after_hours is not None and self.warn_after_hours >= self.fail_after_hours:
            raise ValueError("warn_after_hours must be below fail_after_hours")
        return self

    @property
    def fail_window(self) -> timedelta:
        return timedelta(hours=self.fail_after_hours)

    @property
    def warn_window(self) -> timedelta | None:
        return None if self.warn_after_hours is None else timedelta(hours=self.warn_after_hours)


class Cadence(StrictModel):
    raw_arrival_sensor_seconds: int = Field(ge=1)
    automation_sensor_seconds: int = Field(ge=1)
    action_sensor_seconds: int = Field(ge=1)
    daily_refresh_cron: str

    @model_validator(mode="after")
    def _cron_has_five_fields(self) -> Cadence:
        if len(self.daily_refresh_cron.split()) != 5:
            raise ValueError("daily_refresh_cron must be a five-field cron string")
        return self


class SlaConfig(StrictModel):
    event_to_action_seconds: float = Field(gt=0)
    event_to_action_goal_seconds: float = Field(gt=0)
    freshness: dict[str, FreshnessWindow]
    cadence: Cadence


def load_slas(config_dir: Path | str | None = None) -> SlaConfig:
    return load_config(config_path(CONFIG_FILE, config_dir), SlaConfig)


@cache
def slas() -> SlaConfig:
    """The SLAs the definitions are built with (read once per process, like pipeline.yaml)."""
    return load_slas()
