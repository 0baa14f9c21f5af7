"""signals: windowed conditions on account_daily, lift with a Newcombe CI, and verdicts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from plg_pipeline.lib.configfile import ConfigError, load_config
from plg_pipeline.lib.outcomes import upgrades
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.signals import (
    SignalsConfig,
    account_signals,
    load_signals_config,
    newcombe_diff,
    signal_lift,
    verdict,
    wilson,
)
from plg_pipeline_tests.test_outcomes import billing

PLANS = load_plans()

ACCOUNT_DAILY_SCHEMA = {
    "account_id": pl.String,
    "date": pl.Date,
    "plan": pl.String,
    "plan_tier": pl.Int64,
    "seats": pl.Int64,
    "mrr": pl.Float64,
    "active_users": pl.Int64,
    "wau": pl.Int64,
    "mau": pl.Int64,
    "members": pl.Int64,
    "events": pl.Int64,
    "sessions": pl.Int64,
    "session_seconds": pl.Float64,
    "seat_utilisation": pl.Float64,
    "distinct_features": pl.Int64,
    "premium_features": pl.Int64,
    "features_tier_0": pl.Int64,
    "features_tier_1": pl.Int64,
    "features_tier_2": pl.Int64,
    "features_tier_3": pl.Int64,
    "gated_feature_views": pl.Int64,
    "limit_hits": pl.Int64,
    "limit_hits_seats": pl.Int64,
    "limit_hits_api_calls": pl.Int64,
    "limit_hits_storage_gb": pl.Int64,
    "limit_hits_exports": pl.Int64,
    "max_limit_utilisation": pl.Float64,
    "api_calls": pl.Float64,
    "storage_gb": pl.Float64,
    "invites_sent": pl.Int64,
    "invites_accepted": pl.Int64,
    "admin_invites_sent": pl.Int64,
    "activations": pl.Int64,
    "integrations_connected": pl.Int64,
    "exports": pl.Int64,
    "shares": pl.Int64,
    "admin_page_views": pl.Int64,
    "pricing_page_views": pl.Int64,
    "prompt_views": pl.Int64,
    "prompt_clicks": pl.Int64,
    "prompt_dismissals": pl.Int64,
}

DEFAULTS = {"plan": "free", "plan_tier": 0, "seats": 3, "mrr": 0.0, "members": 3}


def account_days(account_id: str, start: date, n: int, **cols) -> pl.DataFrame:
    """`n` consecutive account_daily rows; a column is a scalar, a list of n, or {day: value}."""
    data = {"account_id": [account_id] * n, "date": [start + timedelta(days=i) for i in range(n)]}
    for name in ACCOUNT_DAILY_SCHEMA:
        if name in data:
            continue
        v = cols.pop(name, DEFAULTS.get(name, 0))
        if isinstance(v, dict):
            v = [v.get(i, 0) for i in range(n)]
        data[name] = v if isinstance(v, list) else [v] * n
    assert not cols, f"unknown columns {cols}"
    return pl.DataFrame(data, schema=ACCOUNT_DAILY_SCHEMA)


def config(*signals: dict, **top) -> SignalsConfig:
    return SignalsConfig.model_validate({"signals": list(signals), **top})


GATED = {
    "name": "gated",
    "description": "gated views >= 3 in 30 days",
    "columns": ["gated_feature_views"],
    "aggregation": "sum",
    "window_days": 30,
    "comparator": ">=",
    "threshold": 3,
}

JAN1 = date(2026, 1, 1)


def test_default_config_has_the_seed_candidates():
    cfg = load_signals_config()
    assert len(cfg.signals) >= 8
    assert cfg.outcome_window_days == 60
    assert (cfg.verdicts.keep_min_pp, cfg.verdicts.drop_below_pp) == (30, 10)
    # every default signal evaluates on a frame with the documented columns
    flags = account_signals(account_days("a", JAN1, 3), cfg, PLANS)
    assert set(flags.columns) >= {s.name for s in cfg.signals}


def test_trailing_sum_window_includes_today_and_30_days_back_only():
    ad = account_days("a", JAN1, 45, gated_feature_views={0: 1, 14: 1, 29: 1})
    got = account_signals(ad, config(GATED), PLANS)
    assert got["gated"].to_list() == [False] * 29 + [True] + [False] * 15
    assert got["gated_value"][29] == 3.0 and got["gated_value"][30] == 2.0
    only = account_signals(ad, config(GATED), PLANS, as_of=JAN1 + timedelta(days=29))
    assert only.select("account_id", "date", "gated").rows() == [("a", date(2026, 1, 30), True)]


def test_window_is_by_calendar_days_not_rows():
    ad = account_days("a", JAN1, 40, gated_feature_views={0: 2, 35: 1})
    gappy = ad.filter(pl.col("date").is_in([JAN1, JAN1 + timedelta(days=35)]))
    got = account_signals(gappy, config(GATED), PLANS)
    assert got["gated"].to_list() == [False, False]  # 35 days apart: not in one 30-day window


def test_summed_columns_and_accounts_kept_apart():
    reach = {**GATED, "name": "reach", "columns": ["invites_sent", "shares"]}
    ad = pl.concat(
        [
            account_days("a", JAN1, 3, invites_sent={0: 1}, shares={2: 2}),
            account_days("b", JAN1, 3, invites_sent={0: 2}),
        ]
    )
    got = account_signals(ad.reverse(), config(reach), PLANS).sort("account_id", "date")
    assert got["reach"].to_list() == [False, False, True, False, False, False]


def test_when_counts_admin_views_only_within_a_week_after_a_limit_hit():
    after_limit = {
        **GATED,
        "name": "admin_after_limit",
        "columns": ["admin_page_views"],
        "threshold": 1,
        "when": {"columns": ["limit_hits"], "aggregation": "sum", "window_days": 7, "threshold": 1},
    }
    cfg = config(after_limit)
    before = account_days("a", JAN1, 20, admin_page_views={4: 1}, limit_hits={5: 1})
    same_day = account_days("b", JAN1, 20, admin_page_views={5: 1}, limit_hits={5: 1})
    day7 = account_days("c", JAN1, 20, admin_page_views={11: 1}, limit_hits={5: 1})
    day8 = account_days("d", JAN1, 20, admin_page_views={12: 1}, limit_hits={5: 1})
    got = account_signals(pl.concat([before, same_day, day7, day8]), cfg, PLANS)
    fired = got.group_by("account_id").agg(pl.col("admin_after_limit").any()).sort("account_id")
    assert fired["admin_after_limit"].to_list() == [False, True, True, False]


def test_tier_feature_share_counts_only_features_of_the_own_plan():
    adopted = {**GATED, "name": "adopted", "columns": ["tier_feature_share"]}
    adopted.update(aggregation="max", threshold=0.7)
    pro_features = len(PLANS.plan("pro").features)  # 7 in the packaged catalog
    five = account_days("a", JAN1, 2, plan="pro", plan_tier=1, features_tier_0=3, features_tier_1=2)
    four = account_days(
        "b",
        JAN1,
        2,
        plan="pro",
        plan_tier=1,
        features_tier_0=3,
        features_tier_1=1,
        features_tier_2=4,
    )
    got = account_signals(pl.concat([five, four]), config(adopted), PLANS).sort("account_id")
    assert got["adopted_value"].to_list() == pytest.approx(
        [5 / pro_features] * 2 + [4 / pro_features] * 2
    )
    assert got["adopted"].to_list() == [True, True, False, False]


def test_unknown_column_is_named():
    bad = {**GATED, "columns": ["gated_views_typo"]}
    with pytest.raises(ValueError, match="gated_views_typo"):
        account_signals(account_days("a", JAN1, 2), config(bad), PLANS)


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "signals.yaml"
    path.write_text(
        "signals:\n- {name: x, description: d, columns: [a], comparator: '=>', threshold: 1}\n"
    )
    with pytest.raises(ConfigError, match=r"signals\.yaml: signals\.0\.comparator"):
        load_config(path, SignalsConfig)
    path.write_text(
        "signals:\n- {name: x, description: d, columns: [a], threshold: 1}\n"
        "- {name: x, description: e, columns: [b], threshold: 2}\n"
    )
    with pytest.raises(ConfigError, match=r"signals: .*duplicate signal names: x"):
        load_config(path, SignalsConfig)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [  # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
    ],
)
def test_newcombe_interval_matches_published_values(x1, n1, x2, n2, low, high):
    got = newcombe_diff(x1, n1, x2, n2, 0.95)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3
    assert wilson(81, 263, 1.959964) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(0, 20, 1.959964) == pytest.approx((0.0, 0.1611), abs=5e-5)


def test_verdicts_at_their_boundaries():
    cfg = config(GATED, min_accounts_per_group=5)
    assert verdict(30.0, 5, 5, cfg) == "keep"
    assert verdict(29.99, 5, 5, cfg) == "weak"
    assert verdict(10.0, 5, 5, cfg) == "weak"
    assert verdict(9.99, 5, 5, cfg) == "drop"
    assert verdict(-20.0, 5, 5, cfg) == "drop"
    assert verdict(80.0, 4, 50, cfg) == "insufficient"
    assert verdict(None, 0, 50, cfg) == "insufficient"
    strict = config(
        GATED, min_accounts_per_group=5, verdicts={"keep_min_pp": 40, "drop_below_pp": 20}
    )
    assert [verdict(v, 5, 5, strict) for v in (39, 40, 19)] == ["weak", "keep", "drop"]


def _ts(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, 12, tzinfo=UTC)


def test_lift_on_a_hand_counted_table():
    """80 days of data: evaluation dates Jan 1, 8, 15 (the last with 60 days of follow-up).

    With the signal: 10 accounts, 6 upgrade within 60 days of their first signalled
    evaluation date. Without: 20 accounts, 2 upgrade within 60 days of Jan 1.
    Traps: an upgrade before the signal, one after 60 days, one account too young.
    """
    days = 80
    frames, log = [], []
    feb1 = date(2026, 2, 1)
    for i in range(10):
        # signal on Jan 8 for most; account w9 only on Jan 10, still in window on Jan 15
        when = 9 if i == 9 else 7
        frames.append(account_days(f"w{i}", JAN1, days, gated_feature_views={when: 3}))
    for i in range(6):
        log.append((f"u{i}", f"w{i}", _ts(feb1), 15.0, "new"))
    # w6 upgraded before its signal (Jan 5), w7 more than 60 days after Jan 8 (Mar 10)
    log.append(("u6", "w6", _ts(date(2026, 1, 5)), 15.0, "new"))
    log.append(("u7", "w7", _ts(date(2026, 3, 10)), 15.0, "new"))
    for i in range(20):
        frames.append(account_days(f"n{i}", JAN1, days, gated_feature_views={40: 1}))
    log += [(f"v{i}", f"n{i}", _ts(feb1), 15.0, "new") for i in range(2)]
    log.append(("v2", "n2", _ts(date(2026, 3, 5)), 15.0, "new"))  # 63 days after Jan 1
    # signals only after the last evaluation date with full follow-up: not a unit at all
    frames.append(account_days("young", date(2026, 1, 16), days - 15, gated_feature_views=5))
    ad = pl.concat(frames)
    ups = upgrades(billing(*log))

    got = signal_lift(ad, ups, config(GATED, min_accounts_per_group=5), PLANS).row(0, named=True)
    assert (got["accounts_with"], got["accounts_without"]) == (10, 20)
    assert got["conv_with"] == pytest.approx(6 / 10)
    assert got["conv_without"] == pytest.approx(2 / 20)
    assert got["lift_pp"] == pytest.approx(50.0)
    low, high = newcombe_diff(6, 10, 2, 20, 0.95)
    assert (got["ci_low_pp"], got["ci_high_pp"]) == pytest.approx((100 * low, 100 * high))
    assert got["ci_low_pp"] < 50 < got["ci_high_pp"]
    assert got["verdict"] == "keep"
    assert got["description"] == GATED["description"]


def test_lift_with_an_empty_group_has_no_estimate():
    ad = account_days("a", JAN1, 70)
    got = signal_lift(ad, upgrades(billing()), config(GATED), PLANS).row(0, named=True)
    assert (got["accounts_with"], got["accounts_without"]) == (0, 1)
    assert got["lift_pp"] is None and got["conv_with"] is None
    assert got["verdict"] == "insufficient"
