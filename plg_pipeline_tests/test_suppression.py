"""Suppression reasons, value-first guard, routing, holdout and rate limiting on built cases."""

from __future__ import annotations

import polars as pl
import pytest

from plg_pipeline.lib.suppression import holdout_flags, route_expr
from plg_pipeline.lib.trigger_rules import Holdout, Routing
from plg_pipeline.lib.triggers import evaluate_triggers
from plg_pipeline_tests.test_triggers import CONFIG, World, day, fired, only


def capped(w: World, aid: str, first: int = 40, **account) -> World:
    """An account whose usage_ceiling rule fires on day first + 1."""
    return (
        w.account(aid, **account)
        .set(aid, first, first, limit_hits=2)
        .set(aid, first + 1, first + 1, limit_hits=1)
    )


def paywall(w: World, user: str, aid: str, first: int = 40) -> World:
    """A user whose repeated_paywall rule fires on day first + 1."""
    return w.user_day(user, aid, first, gated_feature_views=2).user_day(
        user, aid, first + 1, gated_feature_views=1
    )


def reasons(out: pl.DataFrame) -> dict:
    return {
        (r["account_id"], r["user_id"], r["trigger_type"]): r["suppression_reason"]
        for r in out.iter_rows(named=True)
    }


def test_consent_opt_out_suppresses_the_user_and_its_latest_record_wins():
    w = World().account("acc")
    for u in ("out", "out_later", "back_in", "unknown"):
        paywall(w, u, "acc")
    w.consent("out", False).consent("out_later", True, 0).consent("out_later", False, 50)
    w.consent("back_in", False, 0).consent("back_in", True, 5)
    out = fired(w, "repeated_paywall")
    assert reasons(out) == {
        ("acc", "out", "repeated_paywall"): "consent_opt_out",
        ("acc", "out_later", "repeated_paywall"): "consent_opt_out",
        ("acc", "back_in", "repeated_paywall"): None,
        ("acc", "unknown", "repeated_paywall"): None,
    }
    assert out.filter(pl.col("user_id") == "out")["audience"].to_list() == [[]]
    assert out["suppressed"].to_list() == [r is not None for r in out["suppression_reason"]]


def test_account_level_triggers_never_target_opted_out_members():
    w = World()
    capped(w, "mixed").member("yes", "mixed").member("no", "mixed").consent("no", False)
    capped(w, "all_out").member("no2", "all_out").consent("no2", False)
    out = fired(w, "usage_ceiling")
    mixed = out.filter(pl.col("account_id") == "mixed").row(0, named=True)
    assert (mixed["audience"], mixed["suppression_reason"]) == (["yes"], None)
    all_out = out.filter(pl.col("account_id") == "all_out").row(0, named=True)
    assert (all_out["audience"], all_out["suppression_reason"]) == ([], "consent_opt_out")


def test_upgrade_stops_every_nudge_of_the_account_for_the_window():
    w = World()
    capped(w, "recent").bill("recent", 5, "pro", 10, 150, "new").bill(
        "recent", 20, "pro", 12, 180, "seat_add"
    )
    paywall(w, "u1", "recent")
    capped(w, "long_ago").bill("long_ago", 5, "pro", 10, 150, "new")  # 36 days before day 41
    out = fired(w, "usage_ceiling", "repeated_paywall")
    assert reasons(out) == {
        ("recent", None, "usage_ceiling"): "account_upgraded",
        ("recent", "u1", "repeated_paywall"): "account_upgraded",
        ("long_ago", None, "usage_ceiling"): None,
    }


def test_already_on_the_plan_that_includes_it():
    w = World()
    capped(w, "top", plan="enterprise")  # no next plan to offer
    capped(w, "mid", plan="business")
    cfg = CONFIG.model_copy(
        update={
            "rules": [
                r.model_copy(update={"upsell_to": "business"}) if r.name == "usage_ceiling" else r
                for r in CONFIG.rules
            ]
        }
    )
    named = evaluate_triggers(w.inputs(), only(cfg, "usage_ceiling"))
    assert reasons(named) == {
        ("top", None, "usage_ceiling"): "already_on_plan",
        ("mid", None, "usage_ceiling"): "already_on_plan",
    }
    nxt = fired(w, "usage_ceiling")
    assert reasons(nxt) == {
        ("top", None, "usage_ceiling"): "already_on_plan",
        ("mid", None, "usage_ceiling"): None,
    }


def test_prompt_click_or_dismissal_starts_a_cooldown():
    w = World()
    capped(w, "dismissed").set("dismissed", 30, 30, prompt_dismissals=1)  # 11 days before
    capped(w, "clicked_long_ago").set("clicked_long_ago", 27, 27, prompt_clicks=1)  # 14 days
    capped(w, "viewed").set("viewed", 35, 35, prompt_views=3)  # a view is not an interaction
    w.account("users")
    paywall(w, "clicker", "users").user_day("clicker", "users", 38, prompt_clicks=1)
    paywall(w, "other", "users")
    out = fired(w, "usage_ceiling", "repeated_paywall")
    assert reasons(out) == {
        ("dismissed", None, "usage_ceiling"): "interaction_cooldown",
        ("clicked_long_ago", None, "usage_ceiling"): None,
        ("viewed", None, "usage_ceiling"): None,
        ("users", "clicker", "repeated_paywall"): "interaction_cooldown",
        ("users", "other", "repeated_paywall"): None,
    }


def test_rate_limit_keeps_the_earlier_then_the_higher_priority_trigger():
    w = World()
    # Same day: billing_anomaly (priority 5) beats usage_ceiling (priority 15).
    capped(w, "same_day").bill("same_day", 41, "pro", 10, 150, "renewal", overage=600)
    # usage_ceiling on day 41 is earlier than multi_user_growth on day 44 (though lower priority);
    # a second multi_user_growth 14 days later is past the 7-day account limit.
    capped(w, "earlier").set("earlier", 42, 42, admin_invites_sent=2).set(
        "earlier", 43, 44, activations=3
    )
    w.set("earlier", 56, 56, admin_invites_sent=2).set("earlier", 57, 58, activations=3)
    out = fired(w, "usage_ceiling", "billing_anomaly", "multi_user_growth")
    got = out.select("account_id", "trigger_type", "as_of_date", "suppression_reason").rows()
    assert sorted(got) == sorted(
        [
            ("same_day", "billing_anomaly", day(41), None),
            ("same_day", "usage_ceiling", day(41), "rate_limited"),
            ("earlier", "usage_ceiling", day(41), None),
            ("earlier", "multi_user_growth", day(44), "rate_limited"),
            ("earlier", "multi_user_growth", day(58), None),
        ]
    )
    assert out.equals(fired(w, "usage_ceiling", "billing_anomaly", "multi_user_growth"))


def test_user_rate_limit_is_30_days_across_rules():
    w = World(days=45).account("acc")
    for u in range(4):
        w.member(f"m{u}", "acc", joined=0)
    w.user_day("m0", "acc", 3, activated=True)
    paywall(w, "m1", "acc", first=2)  # paywall day 3; seat-gap nudge day 14 is too soon
    paywall(w, "m2", "acc", first=43)  # seat gap day 14; paywall day 44 is 30 days later
    out = fired(w, "repeated_paywall", "seat_adoption_gap")
    got = out.filter(pl.col("user_id").is_in(["m1", "m2"]))
    assert sorted(
        got.select("user_id", "as_of_date", "trigger_type", "suppression_reason").rows()
    ) == [
        ("m1", day(3), "repeated_paywall", None),
        ("m1", day(14), "seat_adoption_gap", "rate_limited"),
        ("m1", day(44), "seat_adoption_gap", None),  # the 30-day seat-gap cooldown has passed
        ("m2", day(14), "seat_adoption_gap", None),
        ("m2", day(44), "repeated_paywall", None),  # same day: priority 25 beats 50
        ("m2", day(44), "seat_adoption_gap", "rate_limited"),
    ]


def test_value_first_switches_the_response_instead_of_suppressing():
    w = World()
    capped(w, "busy_no_outcome", seats=20, mrr=100.0).set("busy_no_outcome", 0, 89, sessions=10)
    capped(w, "busy_with_outcome", seats=20, mrr=100.0).set(
        "busy_with_outcome", 0, 89, sessions=10, exports=1
    )
    out = fired(w, "usage_ceiling").sort("account_id")
    busy, useful = (
        out.filter(pl.col("account_id") == "busy_no_outcome"),
        out.filter(pl.col("account_id") == "busy_with_outcome"),
    )
    assert busy["value_first"].to_list() == [True]
    assert busy["response"].to_list() == [CONFIG.value_first.response]
    assert busy["route"].to_list() == ["in_product"]  # not SDR, although potential is 600
    assert busy["suppressed"].to_list() == [False]
    assert useful.select("value_first", "route").rows() == [(False, "sdr")]


@pytest.mark.parametrize(
    ("plan", "seats", "mrr", "potential", "route"),
    [
        ("pro", 20, 201.0, 499.0, "in_product"),  # business 35 x 20 - 201
        ("pro", 20, 200.0, 500.0, "sdr"),
        ("business", 50, 1000.0, 2000.0, "sdr"),  # enterprise 60 x 50 - 1000
        ("business", 50, 999.0, 2001.0, "ae_cs"),
    ],
)
def test_routing_boundaries_from_expansion_potential(plan, seats, mrr, potential, route):
    w = capped(World(), "acc", plan=plan, seats=seats, mrr=mrr)
    out = fired(w, "usage_ceiling")
    assert out.select("expansion_mrr_potential", "route").rows() == [(potential, route)]


def test_seat_headroom_counts_active_users_beyond_paid_seats():
    w = capped(World(), "acc", plan="pro", seats=10, mrr=150.0).set("acc", 0, 89, mau=30)
    assert fired(w, "usage_ceiling")["expansion_mrr_potential"].to_list() == [35.0 * 30 - 150.0]


def test_route_expr_applies_tier_floor_and_pinned_routes():
    frame = pl.DataFrame(
        {
            "expansion_mrr_potential": [100.0, 100.0, 3000.0, None, 100.0],
            "tier": ["low", "high", "low", None, "low"],
            "rule_route": ["auto", "auto", "in_product", "auto", "ae_cs"],
            "value_first": [False, False, False, False, False],
        }
    )
    routing = Routing(tier_floor={"high": "sdr"})
    assert frame.select(route_expr(routing))["route"].to_list() == [
        "in_product",
        "sdr",
        "in_product",
        "in_product",
        "ae_cs",
    ]


def test_holdout_share_is_about_10_percent_stable_and_per_program():
    accounts = [f"acc_{i:05d}" for i in range(4000)]
    frame = pl.DataFrame({"program": ["p"] * 4000 + ["big"] * 4000, "account_id": accounts * 2})
    cfg = Holdout(programs={"big": 0.5})
    flags = frame.with_columns(holdout=holdout_flags(frame, cfg))
    share = flags.group_by("program").agg(pl.col("holdout").mean()).sort("program")
    assert share["holdout"][0] == pytest.approx(0.5, abs=0.03)
    assert share["holdout"][1] == pytest.approx(0.10, abs=0.015)
    # The same account gets the same flag whatever else is in the frame, in any order.
    part = frame.slice(100, 50).reverse()
    assert (
        part.with_columns(holdout=holdout_flags(part, cfg))
        .sort("account_id")
        .equals(flags.slice(100, 50).sort("account_id"))
    )
    assert not flags.filter(pl.col("program") == "p")["holdout"].equals(
        flags.filter(pl.col("program") == "big")["holdout"]
    )


def test_held_out_triggers_are_recorded_with_their_flag():
    w = World()
    for i in range(60):
        capped(w, f"a{i:02d}")
    out = fired(w, "usage_ceiling")
    assert out.height == 60
    expected = holdout_flags(
        out.select(pl.lit("usage_expansion").alias("program"), "account_id"), CONFIG.holdout
    )
    assert out["holdout"].to_list() == expected.to_list()
    assert 0 < out["holdout"].sum() < 20
