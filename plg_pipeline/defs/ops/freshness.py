"""Freshness policies from config/slas.yaml, attached to the assets on-call watches.

Asset decorators call `sla_freshness("<sla name>")`; the windows live in YAML so they can be
tuned without touching the graph, and the UI shows each asset's policy and state.
"""

import dagster as dg

from plg_pipeline.lib.configfile import ConfigError, config_path
from plg_pipeline.lib.slas import CONFIG_FILE, slas


def sla_freshness(name: str) -> dg.FreshnessPolicy:
    """The time-window freshness policy of SLA `name` (a key of `freshness:` in slas.yaml)."""
    window = slas().freshness.get(name)
    if window is None:
        raise ConfigError(config_path(CONFIG_FILE), f"freshness.{name}", "no such SLA")
    return dg.FreshnessPolicy.time_window(
        fail_window=window.fail_window, warn_window=window.warn_window
    )
