"""The event catalog: this product's event names for the roles the pipeline understands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config

Role = Literal[
    "signup",
    "activation",
    "invite_sent",
    "invite_accepted",
    "feature_used",
    "gated_feature_viewed",
    "limit_reached",
    "usage_reported",
    "integration_connected",
    "report_exported",
    "report_shared",
    "admin_page_viewed",
    "pricing_page_viewed",
    "prompt_viewed",
    "prompt_clicked",
    "prompt_dismissed",
]


class EventCatalog(StrictModel):
    roles: dict[Role, str]
    email_keys: list[str] = ["email", "invitee_email"]
    drop_keys: list[str] = ["name", "first_name", "last_name", "phone"]

    @field_validator("roles")
    @classmethod
    def _all_roles(cls, roles: dict[str, str]) -> dict[str, str]:
        missing = sorted(set(Role.__args__) - set(roles))
        if missing:
            raise ValueError(f"missing roles: {', '.join(missing)}")
        return roles

    def event(self, role: Role) -> str:
        return self.roles[role]


def load_catalog(config_dir: Path | str | None = None) -> EventCatalog:
    return load_config(config_path("event_catalog.yaml", config_dir), EventCatalog)
