"""The demo world (`plg-pipeline generate`): a raw root that follows CONTRACT.md sections 1-6.

A simulated B2B PLG product whose accounts have a latent archetype (expansion-ready, look-alikes,
steady, churning) that drives both the events and the billing log, plus the mess of real data
(retries, late arrivals, mixed offsets, PII, malformed lines). Ground truth goes to `_truth/`
so tests and reports can check what the pipeline finds. Same arguments -> byte-identical files.
Parts: generator_world (latent state, billing), generator_events (events), generator_write (files).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl

from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.configfile import config_path, load_config
from plg_pipeline.lib.generator_billing import billing_rows
from plg_pipeline.lib.generator_events import build_events
from plg_pipeline.lib.generator_world import (
    ARCHETYPES,
    DAY_S,
    ER,
    INDUSTRIES,
    NEVER,
    SALES_REPS,
    SEGMENTS,
    VENDOR_DOMAIN,
    World,
    build_world,
)
from plg_pipeline.lib.generator_write import BAD_KINDS, add_mess, arrive, day, place, write_events
from plg_pipeline.lib.plans import PlanCatalog

__all__ = ["BAD_KINDS", "FORMATS", "GenerationSummary", "accounts_for_events", "generate"]

FORMATS = ("jsonl", "jsonl.gz", "parquet")
EVENTS_PER_ACCOUNT_DAY = 34.0  # measured on default worlds; sizes benchmark worlds


@dataclass
class GenerationSummary:
    accounts: int
    users: int
    events: int  # lines (rows) written, retries and malformed ones included
    duplicates: int
    late: int
    bad_lines: int
    files: int
    seconds: float
    billing_rows: int = 0
    deletion_requests: int = 0
    format: str = "jsonl"

    def as_dict(self) -> dict:
        return asdict(self)


def accounts_for_events(target_events: int, days: int) -> int:
    """How many accounts give about `target_events` events over `days` days."""
    return max(1, round(target_events / (EVENTS_PER_ACCOUNT_DAY * max(days, 1))))


def _csv_with_bad_rows(
    frame: pl.DataFrame, path: Path, bad: list[tuple[str, dict]], truth: list[dict], rng
) -> None:
    """Write `frame` as CSV with a few malformed rows spliced in at random places (strings)."""
    text = frame.cast(pl.String)
    for kind, changes in bad:
        row = text[int(rng.integers(0, text.height))].with_columns(
            **{c: pl.lit(v, pl.String) for c, v in changes.items()}
        )
        at = int(rng.integers(0, text.height + 1))
        text = pl.concat([text.head(at), row, text.slice(at)])
        truth[:] = [
            t | {"line": t["line"] + 1} if t["file"] == str(path) and t["line"] > at + 1 else t
            for t in truth
        ]
        truth.append({"file": str(path), "line": at + 2, "kind": kind})
    text.write_csv(path)


def _write_tables(
    out: Path, world: World, rng: np.random.Generator, bad_rate: float
) -> tuple[pl.DataFrame, list[dict], list[str], int]:
    """Billing log (some rows out of order), CRM accounts, deletion requests."""
    days = world.days
    bill = billing_rows(world, rng)
    shuffled = np.arange(bill.height)
    late = np.flatnonzero(rng.random(bill.height) < 0.05)
    shuffled[late] = np.minimum(late + rng.integers(1, 20, len(late)), bill.height - 1)
    bill = bill[np.argsort(shuffled, kind="stable")].select(
        "event_id",
        "account_id",
        occurred_at=pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        plan="plan",
        seats="seats",
        mrr="mrr",
        status="status",
        change="change",
        overage_usd="overage_usd",
    )
    ids = world.account_ids()
    reps = [n.lower().replace(" ", ".") + "@" + VENDOR_DOMAIN for n in SALES_REPS]
    crm = pl.DataFrame(
        {
            "account_id": ids,
            "name": world.acc_name,
            "domain": world.domain,
            "segment": [SEGMENTS[s] for s in world.seg],
            "owner_email": [reps[i % len(reps)] for i in range(len(ids))],
            "industry": [INDUSTRIES[i] for i in world.industry],
            "created_at": [world.iso(int(c), 9 * 3600) for c in world.created],
        }
    )
    csv_truth: list[dict] = []
    billing_path, crm_path = out / "billing/subscription_events.csv", out / "crm/accounts.csv"
    bill_bad = crm_bad = []
    if bad_rate > 0:
        bill_bad = [
            ("non_numeric_mrr", {"mrr": "n/a", "event_id": "sub_bad_1"}),
            ("unknown_status", {"status": "suspended", "event_id": "sub_bad_2"}),
            ("missing_account_id", {"account_id": "", "event_id": "sub_bad_3"}),
        ]
        crm_bad = [
            ("missing_account_id", {"account_id": ""}),
            ("unknown_segment", {"segment": "startup"}),
            ("unparseable_created_at", {"created_at": "sometime in 2025"}),
        ]
    _csv_with_bad_rows(bill, billing_path, bill_bad, csv_truth, rng)
    _csv_with_bad_rows(crm, crm_path, crm_bad, csv_truth, rng)
    for t in csv_truth:
        t["file"] = str(Path(t["file"]).relative_to(out))

    n_del = max(1, round(world.n_users * 0.005)) if world.n_users >= 20 else 0
    deleted = (
        np.sort(rng.choice(world.n_users, n_del, replace=False)) if n_del else np.array([], int)
    )
    pl.DataFrame(
        {
            "request_id": [f"dsr_{i:04d}" for i in range(n_del)],
            "user_id": [f"usr_{u:06d}" for u in deleted],
            "requested_at": [
                world.iso(int(rng.integers(days // 2, days)), int(rng.integers(0, DAY_S)))
                for _ in range(n_del)
            ],
        },
        schema={"request_id": pl.String, "user_id": pl.String, "requested_at": pl.String},
    ).write_csv(out / "privacy/deletion_requests.csv")

    return bill, csv_truth, reps, n_del


def generate(
    out_dir: Path,
    *,
    accounts: int = 200,
    days: int = 90,
    seed: int = 7,
    start: date = date(2026, 6, 1),
    bad_rate: float = 0.0,
    fmt: str = "jsonl",
) -> GenerationSummary:
    """Write the demo raw root to `out_dir` (replacing its contract folders) and `_truth/`."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    began = time.perf_counter()
    out = Path(out_dir)
    for sub in ("events", "billing", "crm", "privacy", "config", "_truth"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    plans_file = config_path("plans.yaml")
    plans = load_config(plans_file, PlanCatalog)
    shutil.copyfile(plans_file, out / "config" / "plans.yaml")
    world = build_world(rng, accounts, days, start, plans)
    events, guests = build_events(world, load_catalog(), rng)
    epoch_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    messy = add_mess(arrive(events, rng), rng, bad_rate)
    del events
    counts = messy.select(
        events=pl.len(),
        duplicates=pl.col("dup").sum(),
        late=pl.col("late").sum(),
        bad_lines=pl.col("bad_kind").is_not_null().sum(),
    ).row(0, named=True)
    messy = place(messy, rng, fmt)
    files, bad_truth = write_events(out, messy, world, fmt, rng, epoch_ms)
    del messy

    bill, csv_truth, reps, n_del = _write_tables(out, world, rng, bad_rate)
    _write_truth(out, world, bill, bad_truth + csv_truth, guests, reps)
    summary = GenerationSummary(
        accounts=world.n_accounts,
        users=world.n_users,
        **counts,
        files=files,
        seconds=round(time.perf_counter() - began, 2),
        billing_rows=bill.height,
        deletion_requests=n_del,
        format=fmt,
    )
    (out / "_truth/summary.json").write_text(
        json.dumps(summary.as_dict() | {"seconds": None}, indent=2) + "\n"
    )
    return summary


def _write_truth(
    out: Path, world: World, bill: pl.DataFrame, bad: list[dict], guests: list[str], reps: list[str]
) -> None:
    """Latent account state, every PII value written anywhere, and the injected bad lines."""

    def day_or_null(days: np.ndarray) -> list[str | None]:
        return [str(day(world, d)) if d < NEVER else None for d in days]

    size = np.bincount(world.u_acc, minlength=world.n_accounts)
    joined = np.bincount(world.u_acc[world.u_join >= 0], minlength=world.n_accounts)
    pl.DataFrame(
        {
            "account_id": world.account_ids(),
            "archetype": [ARCHETYPES[a] for a in world.arch],
            "segment": [SEGMENTS[s] for s in world.seg],
            "initial_plan": [world.plans.plans[t].name for t in world.tier0],
            "expansion_ready": world.arch == ER,
            "readiness": np.round(world.readiness, 3),
            "created_at": [world.iso(int(c), 9 * 3600) for c in world.created],
            "signal_start": day_or_null(world.signal),
            "planned_upgrade": day_or_null(world.upgrade),
            "churn_date": day_or_null(world.churn),
            "users": size,
            "users_joined_in_window": joined,
        }
    ).write_csv(out / "_truth/accounts.csv")
    emails = world.emails()
    pii = (
        [("email", e) for e in [*emails, *guests, *reps]]
        + [("name", n) for n in world.person_names()]
        + [("ip", ip) for ip in world.u_ips.ravel().tolist()]
    )
    pl.DataFrame(pii, schema=["kind", "value"], orient="row").unique(maintain_order=True).write_csv(
        out / "_truth/pii.csv"
    )
    pl.DataFrame(bad, schema={"file": pl.String, "line": pl.Int64, "kind": pl.String}).write_csv(
        out / "_truth/bad_lines.csv"
    )
