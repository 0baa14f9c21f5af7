"""The plan catalog (CONTRACT.md section 6): tiers, seat limits, metered limits, gated features."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from plg_pipeline.lib.configfile import StrictModel, config_path, load_config

LIMIT_NAMES = ("seats", "api_calls", "storage_gb", "exports")


class Plan(StrictModel):
    name: str
    tier: int = Field(ge=0)
    price_per_seat_usd: float = Field(ge=0)
    max_seats: int | None = Field(default=None, ge=1)
    limits: dict[str, float | None] = {}
    features: list[str] = []


class PlanCatalog(StrictModel):
    currency: str = "USD"
    plans: list[Plan] = Field(min_length=1)
    gated_features: dict[str, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> PlanCatalog:
        tiers = [p.tier for p in self.plans]
        if tiers != sorted(tiers) or len(set(tiers)) != len(tiers):
            raise ValueError("plans must be ordered by tier, lowest first, with distinct tiers")
        names = {p.name for p in self.plans}
        for feature, plan in self.gated_features.items():
            if plan not in names:
                raise ValueError(f"gated_features.{feature}: unknown plan {plan!r}")
        return self

    def plan(self, name: str) -> Plan:
        for p in self.plans:
            if p.name == name:
                return p
        raise KeyError(name)

    def tier_of(self, plan_name: str) -> int:
        return self.plan(plan_name).tier

    def feature_tier(self, feature: str) -> int:
        """Tier of the lowest plan that includes `feature` (0 when it is not gated)."""
        plan = self.gated_features.get(feature)
        return self.tier_of(plan) if plan else 0

    def next_plan(self, plan_name: str) -> Plan | None:
        tiers = [p.name for p in self.plans]
        i = tiers.index(plan_name)
        return self.plans[i + 1] if i + 1 < len(self.plans) else None


def load_plans(
    raw_dir: Path | str | None = None, config_dir: Path | str | None = None
) -> PlanCatalog:
    """The raw root's `config/plans.yaml` when present (the contract), else the packaged default."""
    if raw_dir is not None and (Path(raw_dir) / "config" / "plans.yaml").exists():
        return load_config(Path(raw_dir) / "config" / "plans.yaml", PlanCatalog)
    return load_config(config_path("plans.yaml", config_dir), PlanCatalog)
