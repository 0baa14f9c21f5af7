"""Trigger rules on hand-built accounts: each rule fires on its case and not on a near miss."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from plg_pipeline.lib.configfile import ConfigError, config_path
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.schemas import BILLING_SCHEMA
from plg_pipeline.lib.trigger_conditions import TriggerInputs
from plg_pipeline.lib.trigger_rules import ACCOUNT_METRICS, USER_METRICS, load_triggers
from plg_pipeline.lib.triggers import TRIGGER_SCHEMA, evaluate_triggers

START = date(2026, 1, 1)
PLANS = load_plans()
CONFIG = load_triggers(plans=PLANS)
ACCOUNT_INTS = sorted(
    ACCOUNT_METRICS
    - {"seat_utilisation", "max_limit_utilisation", "api_calls", "storage_gb", "session_seconds"}
    - {"overage_usd", "activated_share"}
)
USER_INTS = sorted(USER_METRICS - {"session_seconds"})


def day(n: int) -> date:
    return START + timedelta(days=n)


def ts(n: int) -> datetime:
    return datetime(day(n).year, day(n).month, day(n).day, 12, tzinfo=UTC)


@dataclass
class World:
    """A tiny world: dense account_daily over `days` days, sparse user_daily, billing, PQL."""

    days: int = 90
    accounts: dict[str, dict] = field(default_factory=dict)
    overrides: list[tuple[str, int, int, dict]] = field(default_factory=list)
    users: list[dict] = field(default_factory=list)
    members: list[dict] = field(default_factory=list)
    consents: list[dict] = field(default_factory=list)
    billing: list[dict] = field(default_factory=list)
    pql: list[dict] = field(default_factory=list)

    def account(
        self, aid: str, plan: str = "pro", seats: int = 10, mrr: float = 150.0, **daily
    ) -> World:
        self.accounts[aid] = {"plan": plan, "seats": seats, "mrr": mrr, **daily}
        return self

    def set(self, aid: str, first: int, last: int, **metrics) -> World:
        """Override account_daily metrics on days first..last (inclusive)."""
        self.overrides.append((aid, first, last, metrics))
        return self

    def user_day(self, user: str, aid: str, n: int, **metrics) -> World:
        self.users.append({"canonical_user_id": user, "account_id": aid, "date": day(n), **metrics})
        return self

    def member(self, user: str, aid: str, joined: int = 0, role: str = "member") -> World:
        self.members.append(
            {"canonical_user_id": user, "account_id": aid, "role": role, "valid_from": ts(joined)}
        )
        return self

    def consent(self, user: str, value: bool, n: int = 0) -> World:
        self.consents.append(
            {"canonical_user_id": user, "consent_analytics": value, "as_of": ts(n)}
        )
        return self

    def bill(
        self, aid: str, n: int, plan: str, seats: int, mrr: float, change: str, overage: float = 0.0
    ) -> World:
        self.billing.append(
            {
                "event_id": f"b{len(self.billing)}",
                "account_id": aid,
                "occurred_at": ts(n),
                "plan": plan,
                "seats": seats,
                "mrr": mrr,
                "status": "active",
                "change": change,
                "overage_usd": overage,
            }
        )
        return self

    def tier(self, aid: str, first: int, last: int, tier: str, score: float = 80.0) -> World:
        for n in range(first, last + 1):
            self.pql.append(
                {
                    "account_id": aid,
                    "as_of_date": day(n),
                    "score": score,
                    "tier": tier,
                    "explanation": f"score {score:g}",
                    "score_version": "v1",
                }
            )
        return self

    def _account_daily(self) -> pl.DataFrame:
        rows = []
        for aid, base in self.accounts.items():
            for n in range(self.days):
                row = {c: 0 for c in ACCOUNT_INTS} | {"mau": 5, "active_users": 5, "sessions": 2}
                row |= {"seat_utilisation": 1.0, "invites_sent": 1}  # a team in use and growing
                row |= {k: v for k, v in base.items() if k not in {"plan"}}
                row |= {
                    "account_id": aid,
                    "date": day(n),
                    "plan": base["plan"],
                    "plan_tier": PLANS.tier_of(base["plan"]),
                }
                for oid, first, last, metrics in self.overrides:
                    if oid == aid and first <= n <= last:
                        row |= metrics
                rows.append(row)
        return pl.DataFrame(rows).with_columns(
            pl.col("mrr").cast(pl.Float64),
            pl.lit(0.0).alias("session_seconds"),
            pl.col("seats").cast(pl.Int64),
        )

    def _user_daily(self) -> pl.DataFrame:
        base = {c: 0 for c in USER_INTS} | {
            "session_seconds": 0.0,
            "is_admin": False,
            "activated": False,
            "signed_up": False,
        }
        rows = [base | u for u in self.users]
        schema = {"canonical_user_id": pl.String, "account_id": pl.String, "date": pl.Date}
        schema |= {c: pl.Int64 for c in USER_INTS} | {"session_seconds": pl.Float64}
        schema |= {"is_admin": pl.Boolean, "activated": pl.Boolean, "signed_up": pl.Boolean}
        return pl.DataFrame(rows, schema=schema)

    def inputs(self) -> TriggerInputs:
        return TriggerInputs(
            account_daily=self._account_daily(),
            user_daily=self._user_daily(),
            account_memberships=pl.DataFrame(
                [m | {"last_seen": m["valid_from"], "source": "group"} for m in self.members],
                schema={
                    "canonical_user_id": pl.String,
                    "account_id": pl.String,
                    "role": pl.String,
                    "valid_from": pl.Datetime("us", "UTC"),
                    "last_seen": pl.Datetime("us", "UTC"),
                    "source": pl.String,
                },
            ),
            user_consent=pl.DataFrame(
                self.consents,
                schema={
                    "canonical_user_id": pl.String,
                    "consent_analytics": pl.Boolean,
                    "as_of": pl.Datetime("us", "UTC"),
                },
            ),
            billing_events=pl.DataFrame(
                self.billing,
                schema=BILLING_SCHEMA,
            ),
            accounts=pl.DataFrame(
                {"account_id": list(self.accounts), "segment": ["smb"] * len(self.accounts)},
                schema={"account_id": pl.String, "segment": pl.String},
            ),
            pql_scores=pl.DataFrame(
                self.pql,
                schema={
                    "account_id": pl.String,
                    "as_of_date": pl.Date,
                    "score": pl.Float64,
                    "tier": pl.String,
                    "explanation": pl.String,
                    "score_version": pl.String,
                },
            ),
            plans=PLANS,
        )


def only(cfg, *names):
    return cfg.model_copy(update={"rules": [r for r in cfg.rules if r.name in names]})


def fired(world: World, *rules: str, cfg=CONFIG) -> pl.DataFrame:
    return evaluate_triggers(world.inputs(), only(cfg, *rules))


def test_usage_threshold_needs_seven_days_above_150_percent_of_baseline():
    w = World().account("spike").account("short").account("flat")
    w.set("spike", 0, 59, active_users=4).set("spike", 60, 66, active_users=7)  # 7 > 1.5 x 4
    w.set("short", 0, 59, active_users=4).set("short", 60, 65, active_users=7)  # only 6 days
    w.set("flat", 0, 89, active_users=4).set(
        "flat", 60, 66, active_users=6
    )  # 6 = 1.5 x 4, not above
    out = fired(w, "usage_threshold")
    assert out.select("account_id", "as_of_date").rows() == [("spike", day(66))]
    assert out["signal_value"][0] == pytest.approx(7 / 4)


def test_feature_adoption_counts_power_users_of_advanced_features():
    w = World(days=90).account("team").account("two")
    for aid, n_users in (("team", 3), ("two", 2)):
        for u in range(n_users):
            for n in range(40, 47):  # 2 sessions a day for a week = 14 >= 10
                w.user_day(
                    f"{aid}-u{u}", aid, n, sessions=2, premium_features_used=1 if n == 45 else 0
                )
    out = fired(w, "feature_adoption")
    # A power day counts for 30 days (45..75); the 30-day rule cooldown lets it fire again on 75.
    assert out.select("account_id", "as_of_date").rows() == [("team", day(45)), ("team", day(75))]
    assert out["signal_value"].to_list() == [3, 3]


def test_multi_user_growth_needs_both_invites_and_activations_in_14_days():
    w = World().account("grow").account("no_admin")
    w.set("grow", 30, 30, admin_invites_sent=2).set("grow", 31, 35, activations=1)
    w.set("no_admin", 30, 30, admin_invites_sent=1).set("no_admin", 31, 35, activations=1)
    out = fired(w, "multi_user_growth")
    assert out.select("account_id", "as_of_date").rows() == [("grow", day(35))]


def test_billing_anomaly_fires_above_500_usd_overage_in_30_days():
    w = World().account("over").account("at_limit")
    w.bill("over", 10, "pro", 10, 150, "renewal", overage=300).bill(
        "over", 35, "pro", 10, 150, "renewal", overage=250
    )
    w.bill("at_limit", 10, "pro", 10, 150, "renewal", overage=500)
    out = fired(w, "billing_anomaly")
    assert out.select("account_id", "as_of_date").rows() == [("over", day(35))]
    assert out["signal_value"][0] == 550


def test_engagement_milestone_needs_export_growth_and_activated_team():
    w = World(days=70).account("grows").account("no_team").account("from_zero")
    for aid in ("grows", "no_team"):
        w.set(aid, 4, 13, exports=1).set(aid, 48, 59, exports=1)  # 10 exports, then 12
    w.set("from_zero", 48, 59, exports=1)  # growth from nothing is not growth
    for aid in ("grows", "no_team", "from_zero"):
        w.member(f"{aid}-a", aid).member(f"{aid}-b", aid).user_day(
            f"{aid}-a", aid, 1, activated=True
        )
    w.user_day("grows-b", "grows", 2, activated=True).user_day(
        "from_zero-b", "from_zero", 2, activated=True
    )
    out = fired(w, "engagement_milestone")
    assert out.select("account_id", "as_of_date").rows() == [("grows", day(59))]
    assert out["signal_value"][0] == pytest.approx(0.2)


def test_repeated_paywall_is_user_level_and_needs_two_distinct_days():
    w = World().account("acc")
    w.user_day("u1", "acc", 20, gated_feature_views=2).user_day(
        "u1", "acc", 25, gated_feature_views=1
    )
    w.user_day("u2", "acc", 20, gated_feature_views=5)  # one day only
    out = fired(w, "repeated_paywall")
    assert out.select("account_id", "user_id", "as_of_date", "route").rows() == [
        ("acc", "u1", day(25), "in_product")
    ]


def test_account_context_gates_user_level_rules():
    """repeated_paywall needs a growing team (account_also); usage_ceiling most seats active."""
    w = World().account("team").account("lone").set("lone", 0, 89, invites_sent=0)
    w.set("lone", 0, 89, seat_utilisation=0.4)
    for aid in ("team", "lone"):
        w.user_day(f"u_{aid}", aid, 20, gated_feature_views=2)
        w.user_day(f"u_{aid}", aid, 25, gated_feature_views=1)
        w.set(aid, 40, 40, limit_hits=2).set(aid, 45, 45, limit_hits=1)
    out = fired(w, "repeated_paywall", "usage_ceiling")
    assert out.select("account_id", "trigger_type").sort("trigger_type").rows() == [
        ("team", "repeated_paywall"),
        ("team", "usage_ceiling"),
    ]


def test_usage_ceiling_fires_on_repeated_limit_hits():
    w = World().account("capped").account("once")
    w.set("capped", 40, 40, limit_hits=2).set("capped", 45, 45, limit_hits=1)
    w.set("once", 40, 40, limit_hits=5)
    out = fired(w, "usage_ceiling")
    assert out.select("account_id", "as_of_date").rows() == [("capped", day(45))]


def test_seat_adoption_gap_nudges_only_non_adopting_members():
    w = World(days=40).account("gap").account("adopted")
    for aid in ("gap", "adopted"):
        for u in range(4):
            w.member(f"{aid}-{u}", aid, joined=0)
    w.user_day("gap-0", "gap", 3, activated=True)
    for u in range(3):
        w.user_day(f"adopted-{u}", "adopted", 3, activated=True)
    out = fired(w, "seat_adoption_gap")
    assert out.select("account_id", "user_id", "as_of_date").rows() == [
        ("gap", f"gap-{u}", day(14)) for u in (1, 2, 3)
    ]
    assert out["signal_value"].to_list() == [0.25] * 3


def test_stalled_pql_hands_to_cs_after_14_high_days_without_upgrade():
    w = World().account("stalled").account("upgraded").account("brief")
    w.tier("stalled", 10, 40, "high").tier("upgraded", 10, 40, "high").tier("brief", 10, 22, "high")
    w.bill("upgraded", 20, "business", 10, 350, "upgrade")
    out = fired(w, "stalled_pql")
    rows = out.select("account_id", "as_of_date", "route").rows()
    assert rows == [("stalled", day(23), "ae_cs"), ("upgraded", day(34), "ae_cs")]


def test_output_has_contract_columns_and_dtypes():
    w = World().account("capped").set("capped", 40, 41, limit_hits=2)
    out = fired(w, "usage_ceiling")
    assert out.schema == pl.Schema(TRIGGER_SCHEMA)
    row = out.row(0, named=True)
    assert row["due_at"] == datetime(2026, 2, 12, 1, tzinfo=UTC)  # day 41 ends + 1 h (in product)
    assert row["explanation"].startswith("usage_ceiling: sum(limit_hits) over 14d = 4.0")


def test_trigger_ids_are_stable_across_reruns_and_date_subsets():
    w = World().account("capped")
    for n in range(0, 90, 3):
        w.set("capped", n, n, limit_hits=2)
    full = fired(w, "usage_ceiling")
    again = fired(w, "usage_ceiling")
    assert full["trigger_id"].to_list() == again["trigger_id"].to_list()
    assert full["trigger_id"].n_unique() == full.height > 1
    one_day = evaluate_triggers(w.inputs(), only(CONFIG, "usage_ceiling"), [full["as_of_date"][2]])
    assert one_day.rows() == full.slice(2, 1).rows()


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(config_path("triggers.yaml").read_text())
    mutate(data)
    path = tmp_path / "triggers.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (
            lambda d: d["rules"][3]["condition"].update(threshold="lots"),
            "rules[3].condition.threshold",
            "billing_anomaly",
        ),
        (
            lambda d: d["rules"][0]["condition"].update(metric="dau"),
            "rules[0].condition.metric",
            "unknown metric 'dau'",
        ),
        (lambda d: d["rules"][2].pop("owner"), "rules[2].owner", "multi_user_growth"),
        (
            lambda d: d["rules"][2]["condition"]["also"][0].update(metric="admins"),
            "rules[2].condition.also",
            "unknown metric 'admins'",
        ),
        (lambda d: d["rules"][1].update(colour="red"), "rules[1].colour", "feature_adoption"),
        (
            lambda d: d["rules"][4]["condition"].update(kind="magic"),
            "rules[4].condition",
            "engagement_milestone",
        ),
        (lambda d: d["rules"][5].update(name="usage_threshold"), "rules[5].name", "duplicate"),
        (
            lambda d: d["rules"][6].update(upsell_to="platinum"),
            "rules[6].upsell_to",
            "unknown plan",
        ),
        (lambda d: d["sla_hours"].pop("sdr"), "sla_hours", "missing routes: sdr"),
        (lambda d: d["routing"].update(sdr_up_to_usd=-1), "routing.sdr_up_to_usd", "greater than"),
    ],
)
def test_bad_config_names_file_rule_and_key(tmp_path, mutate, key, words):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_triggers(path, plans=PLANS)
    assert err.value.key == key
    assert str(path) in str(err.value)
    assert words in str(err.value)
