"""The demo world's billing log: subscription changes that follow from each account's fate.

New subscriptions (some trialing), monthly renewals with metered overages, seat adds when the
team outgrows its seats, the planned upgrade, rare downgrades, churn (after a seat cut) and
reactivation. Loops over accounts only: thousands of rows, never events.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from plg_pipeline.lib.generator_world import DAY_S, ER, HEAVY, LONE, STEADY, World
from plg_pipeline.lib.plans import LIMIT_NAMES


def billing_rows(world: World, rng: np.random.Generator) -> pl.DataFrame:
    """The subscription change log that follows from each account's fate (loops over accounts)."""
    # accounts that run into metered limits pay overages on their renewals
    metered = np.isin(world.arch, (ER, LONE, HEAVY)) & (
        world.pref_limit != LIMIT_NAMES.index("seats")
    )
    plans = world.plans.plans
    rows: list[tuple] = []

    def add(
        a: int, day: int, tier: int, seats: int, status: str, change: str, overage: float = 0.0
    ):
        sec = int(rng.integers(8 * 3600, 20 * 3600))
        mrr = 0.0 if status == "canceled" else seats * plans[tier].price_per_seat_usd
        rows.append((a, day * DAY_S + sec, plans[tier].name, seats, mrr, status, change, overage))

    joins = pl.DataFrame({"acc": world.u_acc, "join": world.u_join}).filter(pl.col("join") >= 0)
    join_days = joins.group_by("acc").agg(pl.col("join").sort()).rows_by_key("acc", unique=True)
    for a in range(world.n_accounts):
        tier, seats, created = int(world.tier0[a]), int(world.seats0[a]), int(world.created[a])
        paying = tier > 0
        if paying:
            trial = created >= 0 and rng.random() < 0.5
            add(a, created, tier, seats, "trialing" if trial else "active", "new")
            if trial and created + 14 < world.days:
                add(a, created + 14, tier, seats, "active", "renewal")
        members = int(np.sum((world.u_acc == a) & (world.u_join < 0)))
        events = [(d, "join") for d in (join_days.get(a, ([],))[0])]
        events += [(int(world.upgrade[a]), "upgrade"), (int(world.churn[a]), "churn")]
        events += [(int(world.reactivate[a]), "reactivation")]
        first_renewal = (
            created + 30 * max(1, int(np.ceil(-created / 30))) if created < 0 else created + 30
        )
        events += [(d, "renewal") for d in range(first_renewal, world.days, 30)]
        if world.arch[a] in (HEAVY, STEADY) and tier >= 2 and rng.random() < 0.08:
            events.append((int(rng.integers(max(created, 0), world.days)), "downgrade"))
        churned = False
        for day, kind in sorted(e for e in events if e[0] < world.days):
            if kind == "join":
                members += 1
                cap = plans[tier].max_seats or 10**6
                if paying and not churned and members > seats and members <= cap:
                    seats = members
                    add(a, day + int(rng.integers(0, 3)), tier, seats, "active", "seat_add")
            elif kind == "upgrade" and not churned:
                tier += 1
                seats = min(max(seats, members), plans[tier].max_seats or 10**6)
                add(a, day, tier, seats, "active", "upgrade" if paying else "new")
                paying = True
            elif kind == "downgrade" and paying and not churned and tier >= 2:
                tier -= 1
                seats = min(seats, plans[tier].max_seats or 10**6)
                add(a, day, tier, seats, "active", "downgrade")
            elif kind == "churn" and paying:
                if seats > 1 and day - 10 > 0:
                    seats -= int(rng.integers(1, seats // 2 + 1))
                    add(a, day - 10, tier, seats, "active", "seat_remove")
                add(a, day, tier, seats, "canceled", "churn")
                churned = True
            elif kind == "reactivation" and churned:
                add(a, day, tier, seats, "active", "reactivation")
                churned = False
            elif kind == "renewal" and paying and not churned:
                overage = float(np.round(rng.lognormal(5.0, 1.1), 2)) if metered[a] else 0.0
                status = "past_due" if rng.random() < 0.03 else "active"
                add(a, day, tier, seats, status, "renewal", overage)
    frame = pl.DataFrame(
        rows,
        schema=["acc", "sec", "plan", "seats", "mrr", "status", "change", "overage_usd"],
        orient="row",
    ).sort("sec", "acc", maintain_order=True)
    return frame.with_columns(
        event_id=pl.format("sub_{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7)),
        account_id=pl.format("acc_{}", pl.col("acc").cast(pl.String).str.zfill(5)),
        occurred_at=pl.lit(world.start).cast(pl.Datetime("ms", "UTC"))
        + pl.duration(seconds=pl.col("sec")),
    )
