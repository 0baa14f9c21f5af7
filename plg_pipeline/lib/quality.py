"""Data-quality measurements on curated and attributed events, as figures plus a verdict.

Pure measurements: the Dagster layer turns each `Measurement` into an asset check result
with the figure in its metadata, so a threshold change is a YAML edit, not a code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from pydantic import Field

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config


class QualityConfig(StrictModel):
    activity_types: list[str] = Field(default=["track", "page", "screen"], min_length=1)
    min_event_completeness: float = Field(default=0.95, ge=0, le=1)
    max_duplicate_message_ids: int = Field(default=0, ge=0)
    min_identity_match_rate: float = Field(default=0.90, ge=0, le=1)


def load_quality_config(config_dir: Path | str | None = None) -> QualityConfig:
    return load_config(config_path("quality.yaml", config_dir), QualityConfig)


@dataclass(frozen=True)
class Measurement:
    """A measured figure, the threshold it was held to, and the detail behind it."""

    name: str
    value: float
    threshold: float
    passed: bool
    rows: int
    details: dict[str, float]


def _activity(events: pl.LazyFrame, cfg: QualityConfig) -> pl.LazyFrame:
    return events.filter(pl.col("type").is_in(cfg.activity_types))


def _share(mask: pl.Expr) -> pl.Expr:
    return mask.cast(pl.Float64).mean().fill_null(1.0)


def event_completeness(events: pl.LazyFrame, cfg: QualityConfig) -> Measurement:
    """Share of activity events with a user, an explicit account, a time and properties.

    An empty day has nothing incomplete, so it scores 1.0.
    """
    parts = {
        "user": pl.col("user_id").is_not_null() | pl.col("anonymous_id").is_not_null(),
        "account": pl.col("account_id").is_not_null(),
        "time": pl.col("event_time").is_not_null(),
        "properties": pl.col("properties").is_not_null() & (pl.col("properties") != "{}"),
    }
    figures = (
        _activity(events, cfg)
        .select(
            rows=pl.len(),
            complete=_share(pl.all_horizontal(parts.values())),
            **{f"with_{k}": _share(v) for k, v in parts.items()},
        )
        .collect()
        .row(0, named=True)
    )
    value = figures.pop("complete")
    rows = figures.pop("rows")
    threshold = cfg.min_event_completeness
    return Measurement("event_completeness", value, threshold, value >= threshold, rows, figures)


def duplicate_message_ids(events: pl.LazyFrame, cfg: QualityConfig) -> Measurement:
    """Rows whose message id another row of the curated events already has."""
    figures = (
        events.select(rows=pl.len(), distinct=pl.col("event_id").n_unique())
        .collect()
        .row(0, named=True)
    )
    extra = figures["rows"] - figures["distinct"]
    limit = cfg.max_duplicate_message_ids
    return Measurement(
        "duplicate_message_ids", float(extra), float(limit), extra <= limit, figures["rows"], {}
    )


def identity_match_rate(attributed: pl.LazyFrame, cfg: QualityConfig) -> Measurement:
    """Share of activity events (identity.attribute_events) with both a canonical user and an account."""
    figures = (
        _activity(attributed, cfg)
        .select(
            rows=pl.len(),
            matched=_share(
                pl.col("canonical_user_id").is_not_null() & pl.col("account_id").is_not_null()
            ),
            with_user=_share(pl.col("canonical_user_id").is_not_null()),
            with_account=_share(pl.col("account_id").is_not_null()),
        )
        .collect()
        .row(0, named=True)
    )
    value, rows = figures.pop("matched"), figures.pop("rows")
    threshold = cfg.min_identity_match_rate
    return Measurement("identity_match_rate", value, threshold, value >= threshold, rows, figures)
