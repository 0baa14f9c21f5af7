"""The demo world generator: contract layout, determinism, mess rates, bad kinds, truth."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import polars as pl
import pytest

from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.generator import BAD_KINDS, accounts_for_events, generate
from plg_pipeline.lib.plans import load_plans

START = "2026-06-01"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("clean")
    return out, generate(out, accounts=60, days=40, seed=11)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("messy")
    return out, generate(out, accounts=25, days=15, seed=5, bad_rate=0.02, fmt="jsonl.gz")


def _jsonl_rows(root: Path) -> list[dict]:
    rows = []
    for path in sorted((root / "events").glob("dt=*/*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def test_contract_layout_and_headers(clean):
    root, _ = clean
    assert sorted(p.name for p in (root / "events").iterdir())[0] == f"dt={START}"
    assert all(p.name.startswith("dt=") for p in (root / "events").iterdir())
    headers = {
        "billing/subscription_events.csv": "event_id,account_id,occurred_at,plan,seats,mrr,status,change,overage_usd",
        "crm/accounts.csv": "account_id,name,domain,segment,owner_email,industry,created_at",
        "privacy/deletion_requests.csv": "request_id,user_id,requested_at",
    }
    for rel, header in headers.items():
        assert (root / rel).read_text().splitlines()[0] == header
    assert (root / "config/plans.yaml").read_text().startswith("# Plan catalog")
    crm = pl.read_csv(root / "crm/accounts.csv")
    assert set(crm["segment"]) <= {"smb", "mid_market", "enterprise"}
    assert crm.height == 60


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def snapshot(out: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
        }

    for fmt in ("jsonl.gz", "parquet"):
        a = generate(tmp_path / f"a{fmt}", accounts=12, days=10, seed=3, bad_rate=0.01, fmt=fmt)
        b = generate(tmp_path / f"b{fmt}", accounts=12, days=10, seed=3, bad_rate=0.01, fmt=fmt)
        assert a.events == b.events
        assert snapshot(tmp_path / f"a{fmt}") == snapshot(tmp_path / f"b{fmt}")
    generate(tmp_path / "c", accounts=12, days=10, seed=4, fmt="jsonl")
    generate(tmp_path / "d", accounts=12, days=10, seed=3, fmt="jsonl")
    assert snapshot(tmp_path / "c") != snapshot(tmp_path / "d")


def test_rates_of_duplicates_late_and_consent(clean):
    root, summary = clean
    rows = _jsonl_rows(root)
    assert len(rows) == summary.events
    ids = pl.Series([r["messageId"] for r in rows])
    dup_share = (ids.len() - ids.n_unique()) / ids.len()
    assert 0.005 < dup_share < 0.02
    frame = pl.DataFrame(
        {"ts": [r["timestamp"] for r in rows], "recv": [r["receivedAt"] for r in rows]}
    ).with_columns(
        lag=pl.col("recv").str.to_datetime(time_zone="UTC")
        - pl.col("ts").str.to_datetime(time_zone="UTC")
    )
    lag_s = frame["lag"].dt.total_seconds()
    late_share = (lag_s > 86_400).mean()
    assert 0.015 < late_share < 0.05
    assert lag_s.max() < 4 * 86_400
    offsets = {t[-6:] if t[-1] != "Z" else "Z" for t in frame["ts"]}
    assert {"Z", "+02:00", "-05:00"} <= offsets
    latest: dict[str, bool] = {}
    identifies = [r for r in rows if r["type"] == "identify" and "consent" in r["traits"]]
    order = (
        pl.Series([r["timestamp"] for r in identifies]).str.to_datetime(time_zone="UTC").arg_sort()
    )
    for i in order:
        latest[identifies[i]["userId"]] = identifies[i]["traits"]["consent"]["analytics"]
    refused = 1 - sum(latest.values()) / len(latest)
    assert 0.002 < refused < 0.06
    with_group = [r for r in rows if r["type"] in ("track", "page") and "userId" in r]
    share = sum("groupId" in r["context"] for r in with_group) / len(with_group)
    assert 0.85 < share < 0.95
    assert any("userId" not in r and r["type"] == "page" for r in rows)  # anonymous browsing
    assert {r["type"] for r in rows} >= {"track", "page", "identify", "group", "alias", "screen"}


def test_events_follow_the_catalog_and_plans(clean):
    root, _ = clean
    rows = [r for r in _jsonl_rows(root) if r["type"] == "track"]
    assert {r["event"] for r in rows} == set(load_catalog().roles.values())
    tiers = {p.name: p.tier for p in load_plans().plans}
    truth = pl.read_csv(root / "_truth/accounts.csv").rows_by_key(
        "account_id", named=True, unique=True
    )

    def plan_tier(r: dict) -> int:
        account = truth[r["context"]["groupId"]]
        upgraded = account["planned_upgrade"] and r["timestamp"][:10] >= account["planned_upgrade"]
        return tiers[account["initial_plan"]] + int(bool(upgraded))

    checked = {"Gated Feature Viewed": 0, "Feature Used": 0, "Limit Reached": 0}
    for r in rows:
        props, event = r["properties"], r["event"]
        if event not in checked or "groupId" not in r["context"]:
            continue
        checked[event] += 1
        if event == "Gated Feature Viewed":
            assert tiers[props["required_plan"]] > plan_tier(r), r
        elif event == "Feature Used":
            assert tiers[props["tier"]] <= plan_tier(r), r
        else:
            assert props["limit"] in {"seats", "api_calls", "storage_gb", "exports"}
            assert props["used"] >= props["allowed"] > 0
    assert min(checked.values()) > 20


def test_each_bad_kind_and_broken_files(messy):
    root, summary = messy
    truth = pl.read_csv(root / "_truth/bad_lines.csv")
    kinds = set(truth["kind"])
    assert set(BAD_KINDS) <= kinds
    assert {"empty_file", "truncated_gzip", "non_numeric_mrr", "missing_account_id"} <= kinds
    assert (
        summary.bad_lines
        == truth.filter(
            pl.col("file").str.starts_with("events") & pl.col("line").is_not_null()
        ).height
    )
    for row in truth.filter(
        pl.col("line").is_not_null() & pl.col("file").str.starts_with("events")
    ).iter_rows(named=True):
        lines = gzip.decompress((root / row["file"]).read_bytes()).decode().splitlines()
        raw = lines[row["line"] - 1]
        if row["kind"] == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
            continue
        obj = json.loads(raw)
        check = {
            "missing_message_id": lambda o: "messageId" not in o,
            "no_user_or_anonymous_id": lambda o: "userId" not in o and "anonymousId" not in o,
            "unparseable_timestamp": lambda o: not o["timestamp"][:4].isdigit(),
            "future_timestamp": lambda o: o["timestamp"] > o["receivedAt"],
            "track_without_event": lambda o: o["type"] == "track" and "event" not in o,
            "properties_not_object": lambda o: not isinstance(o["properties"], dict),
            "user_id_number": lambda o: isinstance(o["userId"], int),
            "unknown_type": lambda o: (
                o["type"] not in {"track", "identify", "group", "page", "screen", "alias"}
            ),
        }[row["kind"]]
        assert check(obj), row
    files = {
        r["kind"]: root / r["file"]
        for r in truth.filter(pl.col("line").is_null()).iter_rows(named=True)
    }
    assert files["empty_file"].stat().st_size == 0
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(files["truncated_gzip"].read_bytes())
    billing = pl.read_csv(root / "billing/subscription_events.csv", infer_schema=False)
    assert "n/a" in billing["mrr"].to_list()
    assert "suspended" in billing["status"].to_list()


def test_parquet_format_is_readable(tmp_path):
    summary = generate(tmp_path, accounts=10, days=8, seed=2, fmt="parquet", bad_rate=0.01)
    frame = pl.read_parquet(sorted((tmp_path / "events").glob("dt=*/*.parquet")))
    sidecar = [p for p in (tmp_path / "events").glob("dt=*/*.jsonl") if p.stat().st_size]
    lines = sum(len(p.read_text().splitlines()) for p in sidecar)
    assert frame.height + lines == summary.events
    assert {"messageId", "type", "timestamp", "properties", "traits", "context"} <= set(
        frame.columns
    )
    used = frame.filter(pl.col("event") == "Feature Used")["properties"]
    assert used.str.ends_with("}").mean() > 0.95  # the rest: injected invalid JSON
    props = used.filter(used.str.ends_with("}")).str.json_decode()
    assert props.struct.field("feature").null_count() == 0


def test_truth_consistent_with_billing(tmp_path):
    out = tmp_path / "world"
    generate(out, accounts=150, days=90, seed=21)
    truth = pl.read_csv(out / "_truth/accounts.csv")
    billing = pl.read_csv(out / "billing/subscription_events.csv")
    upgraded = billing.filter(
        pl.col("change").is_in(["upgrade", "new"])
        & (pl.col("occurred_at") >= START)
        & (
            pl.col("account_id").is_in(
                truth.filter(pl.col("created_at") < START)["account_id"].to_list()
            )
        )
    )["account_id"].unique()
    rates = (
        truth.filter(pl.col("created_at") < START)
        .group_by("expansion_ready")
        .agg(rate=pl.col("account_id").is_in(upgraded.to_list()).mean())
    )
    rate = dict(rates.iter_rows())
    assert rate[True] > 0.4 and rate[False] < 0.15
    planned = truth.filter(pl.col("planned_upgrade").is_not_null())
    dates = billing.filter(pl.col("change").is_in(["upgrade", "new"])).select(
        "account_id", date=pl.col("occurred_at").str.slice(0, 10)
    )
    assert (
        planned.join(
            dates, left_on=["account_id", "planned_upgrade"], right_on=["account_id", "date"]
        ).height
        == planned.height
    )
    assert (billing["mrr"] >= 0).all() and (billing["overage_usd"] > 500).any()
    pii = pl.read_csv(out / "_truth/pii.csv")
    assert {"email", "name", "ip"} == set(pii["kind"])


def test_accounts_for_events_sizes_the_world(tmp_path):
    target = 60_000
    summary = generate(tmp_path, accounts=accounts_for_events(target, 30), days=30, seed=9)
    assert 0.6 * target < summary.events < 1.5 * target
