"""The `destinations` resource: each destination's URL and signing secret, from the environment."""

from __future__ import annotations

import dagster as dg

from plg_pipeline.lib.configfile import PACKAGE_CONFIG_DIR, load_config
from plg_pipeline.lib.delivery import CONFIG_FILE, DestinationsConfig, Endpoint


class EndpointConfig(dg.Config):
    url: str
    secret: str


class DestinationsResource(dg.ConfigurableResource):
    """Where to send and how to sign, per destination name of destinations.yaml."""

    endpoints: dict[str, EndpointConfig]

    def endpoint_map(self) -> dict[str, Endpoint]:
        return {name: Endpoint(e.url, e.secret) for name, e in self.endpoints.items()}


def destinations_from_env() -> DestinationsResource:
    """One EnvVar pair per destination of the packaged config, read when a run starts, not now."""
    config = load_config(PACKAGE_CONFIG_DIR / CONFIG_FILE, DestinationsConfig)
    return DestinationsResource(
        endpoints={
            name: EndpointConfig(url=dg.EnvVar(d.url_env), secret=dg.EnvVar(d.secret_env))
            for name, d in config.destinations.items()
        }
    )
