"""Trigger rules as data: the YAML model and the conditions that make a rule fire.

Each rule (seed 002) names the account signal, the surface, the product response, the
guardrail, the owner and the program. The signal is a typed condition over account_daily,
user_daily, memberships or pql_scores windows with one main `threshold`, so the backtest can
scale it into conservative / aggressive variants without knowing what it measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from plg_pipeline.lib.configfile import ConfigError, StrictModel, config_path, load_config
from plg_pipeline.lib.plans import PlanCatalog

Route = Literal["in_product", "sdr", "ae_cs"]
Tier = Literal["low", "medium", "high"]

# account_daily columns (ARCHITECTURE.md) plus the two this module derives: overage_usd (billing
# overage charged that day) and activated_share (activated members / members).
ACCOUNT_METRICS = frozenset(
    [
        "active_users",
        "wau",
        "mau",
        "members",
        "events",
        "sessions",
        "session_seconds",
        "seat_utilisation",
        "distinct_features",
        "premium_features",
        "features_tier_0",
        "features_tier_1",
        "features_tier_2",
        "features_tier_3",
        "gated_feature_views",
        "limit_hits",
        "limit_hits_seats",
        "limit_hits_api_calls",
        "limit_hits_storage_gb",
        "limit_hits_exports",
        "max_limit_utilisation",
        "api_calls",
        "storage_gb",
        "invites_sent",
        "invites_accepted",
        "admin_invites_sent",
        "activations",
        "integrations_connected",
        "exports",
        "shares",
        "admin_page_views",
        "pricing_page_views",
        "prompt_views",
        "prompt_clicks",
        "prompt_dismissals",
        "overage_usd",
        "activated_share",
    ]
)
USER_METRICS = frozenset(
    [
        "events",
        "sessions",
        "session_seconds",
        "features_used",
        "premium_features_used",
        "gated_feature_views",
        "limit_hits",
        "invites_sent",
        "invites_accepted",
        "exports",
        "shares",
        "integrations_connected",
        "admin_page_views",
        "pricing_page_views",
        "prompt_views",
        "prompt_clicks",
        "prompt_dismissals",
    ]
)


class Bound(StrictModel):
    """An extra requirement on the same window: agg(metric) >= min."""

    metric: str
    agg: Literal["sum", "max", "mean", "last"] = "sum"
    min: float


def _check_metric(name: str, known: frozenset[str]) -> str:
    if name not in known:
        raise ValueError(f"unknown metric {name!r}")
    return name


class _Condition(StrictModel):
    # The main threshold is "at least" unless a condition says otherwise; the backtest
    # multiplies it by a variant factor (> 1 = stricter) or divides for "at most" thresholds.
    higher_is_stricter: ClassVar[bool] = True

    def scaled(self, factor: float) -> _Condition:
        t = self.threshold * factor if self.higher_is_stricter else self.threshold / factor
        return self.model_copy(update={"threshold": t})


class WindowCondition(_Condition):
    """agg(metric) over the trailing `window_days` reaches `threshold` on `min_days` distinct days.

    source=user evaluates per user x account on the user's active days (user-level trigger);
    source=account evaluates on account_daily, which is dense per account.
    """

    kind: Literal["window"]
    source: Literal["account", "user"] = "account"
    metric: str
    agg: Literal["sum", "max", "mean"] = "sum"
    window_days: int = Field(ge=1)
    threshold: float = Field(gt=0)
    strict: bool = False  # ">" instead of ">="
    min_days: int = Field(default=1, ge=1)
    also: list[Bound] = []
    # source=user only: bounds on the user's account over the same window, so a user-level
    # prompt can require account context (real team adoption, not one user's persistence).
    account_also: list[Bound] = []

    @field_validator("metric")
    @classmethod
    def _metric(cls, name: str, info: ValidationInfo) -> str:
        user = info.data.get("source") == "user"
        return _check_metric(name, USER_METRICS if user else ACCOUNT_METRICS)

    @field_validator("also")
    @classmethod
    def _also(cls, bounds: list[Bound], info: ValidationInfo) -> list[Bound]:
        user = info.data.get("source") == "user"
        for b in bounds:
            _check_metric(b.metric, USER_METRICS if user else ACCOUNT_METRICS)
        return bounds

    @field_validator("account_also")
    @classmethod
    def _account_also(cls, bounds: list[Bound], info: ValidationInfo) -> list[Bound]:
        if bounds and info.data.get("source") != "user":
            raise ValueError("account_also applies to source: user only (use also)")
        for b in bounds:
            _check_metric(b.metric, ACCOUNT_METRICS)
        return bounds

    def describe(self) -> str:
        return f"{self.agg}({self.metric}) over {self.window_days}d"


class SustainedRatioCondition(_Condition):
    """metric > threshold x baseline on each of `consecutive_days` days.

    Baseline = median of the metric over the `baseline_days` before the window (floored at
    `min_baseline`), so "150% of normal" is judged against the account's own recent normal.
    """

    kind: Literal["sustained_ratio"]
    metric: str = "active_users"
    consecutive_days: int = Field(default=7, ge=1)
    baseline_days: int = Field(default=28, ge=1)
    min_baseline: float = Field(default=2.0, gt=0)
    threshold: float = Field(gt=0)

    _metric = field_validator("metric")(lambda name: _check_metric(name, ACCOUNT_METRICS))

    def describe(self) -> str:
        return f"min {self.metric} over {self.consecutive_days}d / its {self.baseline_days}d median before"


class GrowthCondition(_Condition):
    """sum(metric) over the last window grew by >= threshold (fraction) over the window before."""

    kind: Literal["growth"]
    metric: str
    window_days: int = Field(default=28, ge=1)
    threshold: float = Field(gt=0)
    min_current: float = Field(default=1.0, ge=0)
    min_previous: float = Field(default=1.0, gt=0)  # growth from nothing is not growth
    also: list[Bound] = []

    _metric = field_validator("metric")(lambda name: _check_metric(name, ACCOUNT_METRICS))

    @field_validator("also")
    @classmethod
    def _also(cls, bounds: list[Bound]) -> list[Bound]:
        for b in bounds:
            _check_metric(b.metric, ACCOUNT_METRICS)
        return bounds

    def describe(self) -> str:
        return f"growth of {self.metric} over {self.window_days}d vs the {self.window_days}d before"


class PowerUsersCondition(_Condition):
    """At least `threshold` users were power users on some day of the trailing window.

    A power user has >= min_weekly_sessions sessions in a trailing 7 days during which they
    also used `feature_metric` (advanced features).
    """

    kind: Literal["power_users"]
    window_days: int = Field(default=30, ge=1)
    min_weekly_sessions: float = Field(default=10, gt=0)
    feature_metric: str = "premium_features_used"

    _feature = field_validator("feature_metric")(lambda name: _check_metric(name, USER_METRICS))
    threshold: float = Field(gt=0)

    def describe(self) -> str:
        return (
            f"users with >= {self.min_weekly_sessions:g} sessions/7d using {self.feature_metric}"
            f" in {self.window_days}d"
        )


class SeatAdoptionGapCondition(_Condition):
    """activated share of members (joined >= grace_days ago) below threshold; targets non-adopters."""

    kind: Literal["seat_adoption_gap"]
    higher_is_stricter: ClassVar[bool] = False
    threshold: float = Field(gt=0, le=1)
    min_members: int = Field(default=4, ge=1)
    grace_days: int = Field(default=14, ge=0)

    def describe(self) -> str:
        return f"activated share of members older than {self.grace_days}d (at most)"


class StalledPqlCondition(_Condition):
    """PQL tier held for threshold..max_days consecutive days with no upgrade since it began."""

    kind: Literal["stalled_pql"]
    tier: Tier = "high"
    threshold: float = Field(gt=0)
    max_days: int = Field(ge=1)

    def describe(self) -> str:
        return f"days at PQL tier {self.tier} without an upgrade"


CONDITION_KINDS = frozenset(
    {"window", "sustained_ratio", "growth", "power_users", "seat_adoption_gap", "stalled_pql"}
)
Condition = Annotated[
    WindowCondition
    | SustainedRatioCondition
    | GrowthCondition
    | PowerUsersCondition
    | SeatAdoptionGapCondition
    | StalledPqlCondition,
    Field(discriminator="kind"),
]


class Rule(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    program: str
    priority: int = 100  # lower wins a rate-limit tie on the same day
    condition: Condition
    surface: str
    response: str
    guardrail: str
    owner: str
    cooldown_days: int = Field(default=14, ge=1)  # min days between this rule's triggers per target
    route: Literal["auto", "in_product", "sdr", "ae_cs"] = "auto"
    upsell_to: str | None = "next"  # "next", a plan name, or null (no plan pitch)
    expansion_nudge: bool = True  # stops for a while after the account upgrades
    value_first_guard: bool = True

    @property
    def level(self) -> Literal["account", "user"]:
        c = self.condition
        user = isinstance(c, SeatAdoptionGapCondition) or (
            isinstance(c, WindowCondition) and c.source == "user"
        )
        return "user" if user else "account"


class Routing(StrictModel):
    in_product_below_usd: float = Field(default=500, ge=0)
    sdr_up_to_usd: float = Field(default=2000, ge=0)
    tier_floor: dict[Tier, Route] = {}  # a PQL tier routes at least this high


class Holdout(StrictModel):
    default_share: float = Field(default=0.10, ge=0, le=1)
    salt: str = "plg-holdout-v1"
    programs: dict[str, float] = {}

    def share(self, program: str) -> float:
        return self.programs.get(program, self.default_share)


class Suppression(StrictModel):
    upgrade_window_days: int = Field(default=30, ge=0)
    interaction_cooldown_days: int = Field(default=14, ge=0)
    interaction_metrics: list[Literal["prompt_clicks", "prompt_dismissals", "prompt_views"]] = [
        "prompt_clicks",
        "prompt_dismissals",
    ]
    user_rate_limit_days: int = Field(default=30, ge=1)
    account_rate_limit_days: int = Field(default=7, ge=1)
    consent_missing_allows: bool = True


class ValueFirst(StrictModel):
    """Heavy usage with weak outcome: show the path to value instead of an upsell."""

    window_days: int = Field(default=28, ge=1)
    min_sessions_per_active_user: float = Field(default=12, gt=0)
    outcome_metrics: list[str] = ["exports", "shares", "integrations_connected"]
    # per monthly active user: a team's outcomes grow with its size, a weak outcome does not
    max_outcomes_per_active_user: float = Field(default=2, ge=0)
    response: str

    @field_validator("outcome_metrics")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in ACCOUNT_METRICS:
                raise ValueError(f"unknown metric {name!r}")
        return names


class Backtest(StrictModel):
    horizon_days: int = Field(default=60, ge=1)
    variants: dict[str, float] = {"conservative": 1.33, "balanced": 1.0, "aggressive": 0.8}

    @field_validator("variants")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for name, factor in v.items():
            if factor <= 0:
                raise ValueError(f"variant {name!r}: factor must be > 0")
        return v


class _Settings(StrictModel):
    sla_hours: dict[Route, float] = {"in_product": 1, "sdr": 48, "ae_cs": 24}

    @field_validator("sla_hours")
    @classmethod
    def _every_route(cls, hours: dict[str, float]) -> dict[str, float]:
        missing = sorted(set(Route.__args__) - set(hours))
        if missing:
            raise ValueError(f"missing routes: {', '.join(missing)}")
        return hours

    routing: Routing = Routing()
    holdout: Holdout = Holdout()
    suppression: Suppression = Suppression()
    value_first: ValueFirst
    backtest: Backtest = Backtest()


class _TriggersFile(_Settings):
    rules: list[dict[str, Any]] = Field(min_length=1)


class TriggersConfig(_Settings):
    rules: list[Rule]


def _rule_key(index: int, loc: tuple) -> str:
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "condition" and parts[1] in CONDITION_KINDS:
        del parts[1]  # the discriminator tag pydantic inserts; not a key in the file
    key = f"rules[{index}]"
    for p in parts:
        key += f"[{p}]" if isinstance(p, int) else f".{p}"
    return key


def load_triggers(path: Path | str | None = None, *, plans: PlanCatalog) -> TriggersConfig:
    """Load triggers.yaml; a bad rule fails naming the file, the rule and the key.

    `plans` is the catalog the rules will run against, so a rule upselling to a plan it does
    not have fails here rather than at evaluation.
    """
    path = Path(path) if path else config_path("triggers.yaml")
    raw = load_config(path, _TriggersFile)
    rules: list[Rule] = []
    for i, data in enumerate(raw.rules):
        name = data.get("name", f"#{i}") if isinstance(data, dict) else f"#{i}"
        try:
            rule = Rule.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(
                path, _rule_key(i, first["loc"]), f"rule {name!r}: {first['msg']}"
            ) from exc
        if rule.name in {r.name for r in rules}:
            raise ConfigError(path, f"rules[{i}].name", f"rule {name!r}: duplicate rule name")
        if rule.upsell_to not in (None, "next", *(p.name for p in plans.plans)):
            raise ConfigError(
                path, f"rules[{i}].upsell_to", f"rule {name!r}: unknown plan {rule.upsell_to!r}"
            )
        rules.append(rule)
    return TriggersConfig(**raw.model_dump(exclude={"rules"}), rules=rules)
