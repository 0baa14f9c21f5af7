"""scoring: component normalisation, weights check, tiers, explanation, transitions, calibration."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from plg_pipeline.lib.configfile import ConfigError, load_config
from plg_pipeline.lib.outcomes import upgrades
from plg_pipeline.lib.plans import load_plans
from plg_pipeline.lib.scoring import (
    ScoringConfig,
    auc,
    calibrate_weights,
    fit_logistic,
    load_scoring_config,
    pql_scores,
    rescale_to_100,
    score_version,
    tier_transitions,
)
from plg_pipeline_tests.test_outcomes import billing
from plg_pipeline_tests.test_signals import account_days

PLANS = load_plans()
CFG = load_scoring_config()
JAN1 = date(2026, 1, 1)
# a pro account whose seats are far from the plan maximum (5 of 25) unless a test says otherwise
PRO = {"plan": "pro", "plan_tier": 1, "seats": 5, "members": 5, "mau": 5}


def norms(ad: pl.DataFrame, cfg: ScoringConfig = CFG) -> pl.DataFrame:
    return pql_scores(ad, PLANS, cfg).sort("account_id", "as_of_date")


def test_default_config_is_the_seed_model_recalibrated():
    # seed 003 components and tiers; weights moved toward calibration (see scoring.yaml)
    assert [(c.name, c.weight) for c in CFG.components] == [
        ("weekly_active_users", 25),
        ("feature_depth", 20),
        ("session_duration", 5),
        ("collaboration", 25),
        ("integrations", 10),
        ("org_expansion", 10),
        ("billing_proximity", 5),
    ]
    assert (CFG.tiers.low_max, CFG.tiers.medium_max) == (40, 70)


def _write(tmp_path, text: str):
    path = tmp_path / "scoring.yaml"
    path.write_text(text)
    return path


def _yaml(weights: list[float], extra: str = "") -> str:
    names = [c.name for c in CFG.components]
    rows = "".join(
        f"- {{name: {n}, label: {n}, weight: {w}, full_at: 1, window_days: 7}}\n"
        for n, w in zip(names, weights, strict=True)
    )
    return "components:\n" + rows + extra


def test_weights_must_sum_to_100_named_by_file_and_key(tmp_path):
    ok = load_config(_write(tmp_path, _yaml([20, 15, 15, 10, 10, 15, 15])), ScoringConfig)
    assert sum(c.weight for c in ok.components) == 100
    with pytest.raises(ConfigError, match=r"scoring\.yaml: components: .*sum to 100, got 95"):
        load_config(_write(tmp_path, _yaml([20, 15, 15, 10, 10, 15, 10])), ScoringConfig)
    with pytest.raises(ConfigError, match=r"scoring\.yaml: components\.0\.name"):
        typo = _yaml([20, 15, 15, 10, 10, 15, 15]).replace("name: weekly_active_users", "name: wau")
        load_config(_write(tmp_path, typo), ScoringConfig)
    bad_tiers = _yaml([20, 15, 15, 10, 10, 15, 15], "tiers: {low_max: 70, medium_max: 40}\n")
    with pytest.raises(ConfigError, match=r"scoring\.yaml: tiers"):
        load_config(_write(tmp_path, bad_tiers), ScoringConfig)


def test_score_version_follows_the_weights_only():
    same = ScoringConfig.model_validate(CFG.model_dump())
    assert score_version(same) == score_version(CFG)
    moved = CFG.model_dump()
    moved["components"][0]["weight"], moved["components"][1]["weight"] = 20, 25
    assert score_version(ScoringConfig.model_validate(moved)) != score_version(CFG)
    recal = CFG.model_dump()
    recal["calibration"]["l2"] = 5.0  # does not change any score
    assert score_version(ScoringConfig.model_validate(recal)) == score_version(CFG)


def _norm_of(component: str, ad: pl.DataFrame) -> list[float]:
    return norms(ad)[f"{component}_norm"].to_list()


@pytest.mark.parametrize(
    ("component", "rows", "expected"),
    [
        # > 80% of seats active weekly: at 0.8 full, half at 0.4, clipped above
        (
            "weekly_active_users",
            [{"seat_utilisation": v} for v in (0.8, 0.4, 1.2, 0.0)],
            [1, 0.5, 1, 0],
        ),
        # > 5 advanced features
        ("feature_depth", [{"premium_features": v} for v in (5, 4, 6)], [1, 0.8, 1]),
        # > 30 minutes per session: 1800 s in 1 session, 1800 s in 2 sessions, no sessions
        (
            "session_duration",
            [
                {"session_seconds": 1800.0, "sessions": 1},
                {"session_seconds": 1800.0, "sessions": 2},
                {"session_seconds": 0.0, "sessions": 0},
            ],
            [1, 0.5, 0],
        ),
        # > 3 integrations
        ("integrations", [{"integrations_connected": v} for v in (3, 2, 4)], [1, 2 / 3, 1]),
        # within 20% of a limit (0.8 used), a limit hit, seats near the plan maximum (20 of 25)
        (
            "billing_proximity",
            [
                {"max_limit_utilisation": 0.8},
                {"max_limit_utilisation": 0.6},
                {"limit_hits": 1},
                {"seats": 20, "members": 20},
                {"seats": 20, "members": 10, "plan": "enterprise", "plan_tier": 3},
                # pro: 50000 API calls and 200 exports a month, 50 GB stored
                {"api_calls": 40000.0},
                {"exports": 80},
                {"storage_gb": 45.0},
                {"api_calls": 1e9, "plan": "enterprise", "plan_tier": 3},  # unlimited
            ],
            [1, 0.75, 1, 1, 0, 1, 0.5, 1, 0],
        ),
    ],
)
def test_component_normalisation_at_and_around_full_points(component, rows, expected):
    ad = pl.concat(account_days(f"a{i}", JAN1, 1, **{**PRO, **r}) for i, r in enumerate(rows))
    assert _norm_of(component, ad) == pytest.approx(expected)


def test_collaboration_is_per_active_user_per_30_days():
    # 20 shares + invites in 30 days by one active user: full; the same by two users: half
    one = account_days("a", JAN1, 30, **{**PRO, "mau": 1}, shares={0: 15}, invites_sent={29: 5})
    two = account_days("b", JAN1, 30, **{**PRO, "mau": 2}, shares={0: 20})
    got = (
        norms(pl.concat([one, two])).group_by("account_id").agg(pl.col("collaboration_norm").last())
    )
    assert got.sort("account_id")["collaboration_norm"].to_list() == pytest.approx([1.0, 0.5])


def test_org_expansion_compares_with_the_same_day_a_window_earlier():
    mau = {i: 10 for i in range(28)} | {28: 11, 29: 10, 30: 10}
    ad = account_days("a", JAN1, 31, **{**PRO, "mau": [mau[i] for i in range(31)]})
    got = _norm_of("org_expansion", ad)
    assert got[:28] == [0.0] * 28  # no base 28 days earlier: a new account is not growth
    assert got[28] == pytest.approx(1.0)  # 10 -> 11 users: 10% growth, full points
    assert got[29:] == [0.0, 0.0]
    half = account_days("b", JAN1, 29, **{**PRO, "mau": [20] * 28 + [21]})
    assert _norm_of("org_expansion", half)[28] == pytest.approx(0.5)


def test_metered_use_adds_up_over_the_billing_window():
    ad = account_days("a", JAN1, 31, **PRO, api_calls={0: 20000.0, 10: 20000.0})
    got = _norm_of("billing_proximity", ad)  # 40000 of 50000 = 0.8: full points
    assert got[9] == pytest.approx(0.5) and got[10] == pytest.approx(1.0)
    assert got[29] == pytest.approx(1.0) and got[30] == pytest.approx(0.5)  # day 0 left


def test_windows_look_back_only_and_end_after_window_days():
    ad = account_days("a", JAN1, 30, **PRO, premium_features={0: 5})
    got = _norm_of("feature_depth", ad)
    assert got == [1.0] * 28 + [0.0, 0.0]  # 28-day window: day 0 counts through day 27


def _one_component(**tiers) -> ScoringConfig:
    """Score = integrations_connected / 100 exactly, for testing tiers and rounding."""
    comp = {"name": "integrations", "label": "integrations", "weight": 100, "full_at": 10000}
    return ScoringConfig.model_validate(
        {"components": [{**comp, "window_days": 1}], **({"tiers": tiers} if tiers else {})}
    )


def test_tier_boundaries_40_41_70_71_on_the_rounded_score():
    values = [0, 4000, 4004, 4006, 4100, 7000, 7100, 10000, 20000]
    ad = pl.concat(
        account_days(f"a{i}", JAN1, 1, integrations_connected=v) for i, v in enumerate(values)
    )
    got = pql_scores(ad, PLANS, _one_component()).sort("account_id")
    by_id = {r["account_id"]: (r["score"], r["tier"]) for r in got.iter_rows(named=True)}
    assert [by_id[f"a{i}"] for i in range(len(values))] == [
        (0.0, "low"),
        (40.0, "low"),
        (40.0, "low"),  # 40.04 shows as 40.0, and the tier follows what is shown
        (40.1, "medium"),
        (41.0, "medium"),
        (70.0, "medium"),
        (71.0, "high"),
        (100.0, "high"),
        (100.0, "high"),  # clipped at full points
    ]
    moved = pql_scores(ad, PLANS, _one_component(low_max=50, medium_max=60)).sort("account_id")
    assert moved.filter(pl.col("account_id") == "a4")["tier"].item() == "low"


def test_explanation_names_the_top_components_with_points_of_weight():
    ad = pl.concat(
        [
            account_days(
                "a",
                JAN1,
                1,
                **PRO,
                seat_utilisation=0.8,
                integrations_connected=2,
                max_limit_utilisation=0.64,
            ),
            # a tie at 5 points each keeps the config order
            account_days(
                "b",
                JAN1,
                1,
                **PRO,
                premium_features=5,
                session_seconds=1800.0,
                sessions=1,
                limit_hits=1,
            ),
            account_days("c", JAN1, 1, **{**PRO, "seats": 0, "members": 0}),
        ]
    )
    got = norms(ad)
    assert got["explanation"].to_list() == [
        "weekly active users 25/25; integrations 6.7/10; billing proximity 4/5",
        "feature depth 20/20; session duration 5/5; billing proximity 5/5",
        "no activity scored",
    ]
    assert got["score"].to_list() == [35.7, 30.0, 0.0]
    assert got["score_version"].unique().to_list() == [score_version(CFG)]
    two = ScoringConfig.model_validate({**CFG.model_dump(), "explanation_top": 2})
    assert norms(ad, two)["explanation"][0] == "weekly active users 25/25; integrations 6.7/10"


def test_pql_scores_columns():
    got = norms(account_days("a", JAN1, 2, **PRO))
    assert got.columns[:6] == [
        "account_id",
        "as_of_date",
        "score",
        "tier",
        "score_version",
        "explanation",
    ]
    for c in CFG.components:
        assert {f"{c.name}_norm", f"{c.name}_points", f"{c.name}_value"} <= set(got.columns)


def test_tier_transitions_enter_and_exit():
    d = [JAN1 + timedelta(days=i) for i in range(5)]
    scores = pl.DataFrame(
        {
            "account_id": ["a"] * 5 + ["b"] * 2 + ["c"] * 2,
            "as_of_date": d + d[:2] + d[:2],
            "tier": ["low", "medium", "medium", "high", "low", "high", "high", "low", "low"],
            "score": [10.0, 50.0, 55.0, 80.0, 20.0, 90.0, 91.0, 1.0, 2.0],
        }
    ).reverse()  # arrival order must not matter
    got = tier_transitions(scores)
    assert got.columns == ["account_id", "as_of_date", "from_tier", "to_tier", "score"]
    assert got.sort("account_id", "as_of_date").rows() == [
        ("a", d[1], "low", "medium", 50.0),
        ("a", d[3], "medium", "high", 80.0),
        ("a", d[4], "high", "low", 20.0),
        ("b", d[0], None, "high", 90.0),  # first seen already high
    ]


def test_auc_by_ranks():
    label = np.array([False, False, True, True])
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), label) == pytest.approx(0.75)
    assert auc(np.array([1.0, 1.0, 1.0, 1.0]), label) == pytest.approx(0.5)  # ties: half credit
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), label) == pytest.approx(0.0)
    assert auc(np.array([0.1, 0.2]), np.array([True, True])) is None


def test_rescale_clips_negatives_and_sums_to_exactly_100():
    assert rescale_to_100({"a": 2.0, "b": 1.0, "c": -1.0}) == {"a": 67, "b": 33, "c": 0}
    assert rescale_to_100({"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 34, "b": 33, "c": 33}
    assert rescale_to_100({"a": -1.0, "b": 0.0}) == {"a": 0, "b": 0}


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(20000, 2))
    y = rng.uniform(size=20000) < 1 / (1 + np.exp(-(-1.0 + 3.0 * x[:, 0] - 2.0 * x[:, 1])))
    beta, se = fit_logistic(x, y, l2=1e-6, max_iter=50)
    assert beta == pytest.approx([-1.0, 3.0, -2.0], abs=4 * se.max())
    assert 0 < se.max() < 0.15


def _history(rng: np.random.Generator, n: int = 3000):
    """n accounts, one weekly score each over 40 weeks; billing proximity drives upgrades,
    collaboration holds them back, the rest is noise. Upgrades land 30 days after the score."""
    names = [c.name for c in CFG.components]
    week = rng.integers(0, 40, size=n)
    x = {name: rng.uniform(size=n) for name in names}
    logit = -2.5 + 5.0 * x["billing_proximity"] - 2.0 * x["collaboration"]
    upgraded = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    as_of = [JAN1 + timedelta(days=7 * int(w)) for w in week]
    scores = pl.DataFrame(
        {"account_id": [f"a{i}" for i in range(n)], "as_of_date": as_of}
        | {f"{k}_norm": v for k, v in x.items()}
    )
    log = [
        (
            f"u{i}",
            f"a{i}",
            datetime.combine(d + timedelta(days=30), datetime.min.time(), UTC),
            15.0,
            "new",
        )
        for i, (d, up) in enumerate(zip(as_of, upgraded, strict=True))
        if up
    ]
    return scores, upgrades(billing(*log)), upgraded


def test_calibration_finds_the_predictive_component_and_beats_current_weights():
    scores, ups, upgraded = _history(np.random.default_rng(11))
    got = calibrate_weights(scores, ups, CFG)
    w = {r["component"]: r for r in got.weights.iter_rows(named=True)}
    assert sum(r["suggested_weight"] for r in w.values()) == 100
    assert w["billing_proximity"]["suggested_weight"] >= 60
    assert max(w, key=lambda k: w[k]["suggested_weight"]) == "billing_proximity"
    assert w["collaboration"]["suggested_weight"] == 0 and w["collaboration"]["clipped_to_zero"]
    assert "collaboration" in got.summary["clipped_to_zero"]
    assert w["billing_proximity"]["current_weight"] == 5
    # the predictive coefficient is many standard errors from zero; the noise ones are not
    assert w["billing_proximity"]["coefficient"] > 5 * w["billing_proximity"]["coefficient_se"]
    assert abs(w["integrations"]["coefficient"]) < 3 * w["integrations"]["coefficient_se"]
    s = got.summary
    assert s["auc_suggested"] > s["auc_current"] + 0.1
    # time split: fit strictly before evaluate_from minus the outcome window
    split = date.fromisoformat(s["evaluate_from"])
    window = CFG.calibration.outcome_window_days
    assert date.fromisoformat(s["train_before"]) == split - timedelta(days=window)
    sample_end = JAN1 + timedelta(days=7 * 39 - window)
    in_eval = scores.filter((pl.col("as_of_date") >= split) & (pl.col("as_of_date") <= sample_end))
    assert s["rows_evaluate"] == in_eval.height
    # precision at high: share upgraded among evaluated rows scoring > 70 with current weights
    current = sum(in_eval[f"{c.name}_norm"].to_numpy() * c.weight for c in CFG.components)
    label = upgraded[[int(a[1:]) for a in in_eval["account_id"]]]
    high = np.round(current, 1) > 70
    assert s["precision_high_current"] == pytest.approx(label[high].mean())
    assert s["upgrade_rate_evaluate"] == pytest.approx(label.mean())


def test_calibration_reports_what_a_signal_adds_beyond_the_components():
    rng = np.random.default_rng(3)
    scores, ups, upgraded = _history(rng)
    flags = scores.select(
        "account_id",
        pl.col("as_of_date").alias("date"),
        pl.Series("informative", upgraded & (rng.uniform(size=len(upgraded)) < 0.7)),
        pl.Series("noise", rng.uniform(size=len(upgraded)) < 0.5),
    )
    got = calibrate_weights(scores, ups, CFG, signal_flags=flags).weights
    sig = {r["component"]: r for r in got.filter(pl.col("kind") == "signal").iter_rows(named=True)}
    assert set(sig) == {"informative", "noise"}
    assert sig["informative"]["coefficient"] > 1.0 > abs(sig["noise"]["coefficient"])
    assert sig["informative"]["suggested_weight"] is None
    assert got.filter(pl.col("kind") == "component")["suggested_weight"].sum() == 100


def test_calibration_refuses_a_history_without_outcomes():
    scores, _, _ = _history(np.random.default_rng(5), n=200)
    with pytest.raises(ValueError, match="upgraded and not upgraded"):
        calibrate_weights(scores, upgrades(billing()), CFG)
