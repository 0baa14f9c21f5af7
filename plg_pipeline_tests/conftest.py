"""Shared fixtures: the dbt manifest, prepared once per session, and an isolated environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from plg_pipeline.manifest import ensure_dbt_manifest


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    """The definitions import @dbt_assets, which need a parsed project: parse it once."""
    return ensure_dbt_manifest()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's .env or config overrides by accident."""
    for name in ("PLG_RAW_DIR", "PLG_WAREHOUSE", "PLG_LAKE_DIR", "PLG_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLG_HASH_KEY", "test-hash-key")
