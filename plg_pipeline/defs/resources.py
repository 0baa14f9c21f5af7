"""Resources shared by every stage: where the data lives and the secrets it needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from plg_pipeline.lib import warehouse

DEV_HASH_KEY = "plg-dev-hash-key-not-secret"
"""Documented development default for PLG_HASH_KEY: fine for demo data, never for real users."""


class PipelineSettings(dg.ConfigurableResource):
    """Paths and the PII hash key. Every field can come from the environment (see .env.example)."""

    raw_dir: str = "data/raw"
    warehouse_path: str = "data/warehouse.duckdb"
    lake_dir: str = ""
    config_dir: str = ""
    hash_key: str = DEV_HASH_KEY

    @property
    def lake(self) -> Path:
        return Path(self.lake_dir) if self.lake_dir else Path(self.warehouse_path).parent / "lake"

    @property
    def raw(self) -> Path:
        return Path(self.raw_dir)

    @property
    def config(self) -> Path | None:
        return Path(self.config_dir) if self.config_dir else None

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(self.warehouse_path, read_only=read_only) as con:
            yield con
