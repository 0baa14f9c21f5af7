"""Events of the demo world, drawn for all users and days at once.

Activity is a (membership x day) grid of active cells; each active cell draws Poisson counts
per event kind, with rates shaped by the account's archetype and phase. Lifecycle calls
(anonymous browsing, signup, identify, group, alias, invites) come from the user arrays.
The result is one Polars frame of events with JSON property/trait text, no per-event loop.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from plg_pipeline.lib.catalog import EventCatalog
from plg_pipeline.lib.generator_lifecycle import COLUMNS, event_frame, json_text, lifecycle, pick
from plg_pipeline.lib.generator_world import (
    BLOCKED,
    CHURN,
    DAY_S,
    EARLY,
    ER,
    HEAVY,
    STEADY,
    TZ_OFFSETS_MIN,
    World,
    feature_list,
    limit_allowed,
)
from plg_pipeline.lib.plans import LIMIT_NAMES

KINDS = (
    "feature_basic",
    "feature_premium",
    "gated",
    "limit",
    "usage",
    "integration",
    "export",
    "share",
    "admin_page",
    "pricing_page",
    "page",
    "screen",
    "project",
    "invite",
    "prompt_viewed",
    "prompt_clicked",
    "prompt_dismissed",
)
K = {name: i for i, name in enumerate(KINDS)}
BASE_WEIGHT = np.array(
    [
        0.30,
        0.10,
        0.01,
        0.004,
        0.10,
        0.003,
        0.05,
        0.03,
        0.01,
        0.004,
        0.25,
        0.05,
        0.02,
        0.003,
        0.006,
        0.001,
        0.003,
    ]
)
# How strongly readiness lifts each kind once an account's expansion phase starts.
READINESS_LIFT = {
    "gated": 8,
    "limit": 8,
    "admin_page": 4,
    "pricing_page": 5,
    "feature_premium": 1.5,
    "share": 1.5,
    "export": 1,
    "integration": 3,
    "invite": 3,
}
PAGES = ("Dashboard", "Reports", "Settings", "Projects", "Home")
ADMIN_PAGES = ("members", "billing", "permissions", "security")
INTEGRATIONS = ("slack", "salesforce", "hubspot", "jira", "github")
FORMATS = ("csv", "pdf", "xlsx")


def _cells(world: World, rng: np.random.Generator, join_sec: np.ndarray) -> dict[str, np.ndarray]:
    """Active (membership, day) cells, sorted by membership then day, with session starts."""
    days = np.arange(world.days)
    acc, user = world.m_acc, world.m_user
    arch = world.arch[acc][:, None]
    p = world.u_p[user][:, None] * world.m_share[:, None] * np.where(days % 7 >= 5, 0.35, 1.0)
    p = p * np.where((arch == ER) & (days >= world.signal[acc][:, None]), 1.3, 1.0)
    churn, first = world.churn[acc][:, None], np.maximum(world.created[acc], 0)[:, None]
    fade = np.clip((churn - days) / np.maximum(churn - first, 1), 0, 1)
    fade = np.where(days >= world.reactivate[acc][:, None], 0.5, fade)
    p = np.where(arch == CHURN, p * fade, p)
    p = np.where(days >= world.m_start[:, None], p, 0.0)
    active = rng.random(p.shape) < np.minimum(p, 0.97)
    primary = np.arange(len(user)) < world.n_users
    joined = primary & (world.u_join[user] >= 0)
    active[joined, world.m_start[joined]] = True
    m, d = np.nonzero(active)
    u = user[m]
    local = rng.integers(8 * 3600, 17 * 3600, len(m)) - np.array(TZ_OFFSETS_MIN)[world.u_tz[u]] * 60
    start = np.minimum(local % DAY_S, DAY_S - 3 * 3600 - 1)
    join_day = primary[m] & (world.u_join[u] == d)
    start = np.where(join_day, join_sec[u] + 120, start)
    return {"m": m, "day": d, "user": u, "acc": acc[m], "start": start}


def _rates(world: World, cells: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(cell, kind) Poisson rates: the archetype's behaviour, graded by readiness."""
    a, u, d = cells["acc"], cells["user"], cells["day"]
    arch, r = world.arch[a], world.readiness[a]
    lam = world.u_lam[u] * world.m_share[cells["m"]] * rng.lognormal(0, 0.4, len(a))
    mult = np.ones((len(a), len(KINDS)))

    def scale(mask: np.ndarray, factors: dict[str, float]) -> None:
        for kind, f in factors.items():
            mult[mask, K[kind]] *= f

    post = d >= world.signal[a]
    graded = np.isin(arch, (ER, STEADY)) & post
    for kind, lift in READINESS_LIFT.items():
        mult[graded, K[kind]] *= 1 + r[graded] * lift
    scale((arch == ER) & post & world.u_admin[u], {"admin_page": 2, "invite": 2})
    scale(world.u_power[u], {"feature_premium": 3, "gated": 6, "limit": 5, "export": 2})
    scale(
        (arch == BLOCKED) & world.u_admin[u] & post,
        {"gated": 25, "admin_page": 12, "pricing_page": 3},
    )
    scale(
        arch == HEAVY,
        {
            "usage": 5,
            "feature_basic": 1.5,
            "limit": 3,
            "export": 0.1,
            "share": 0.05,
            "integration": 0,
            "project": 0.3,
            "invite": 0.2,
        },
    )
    age = d - world.created[a]
    scale((arch == EARLY) & (age < 6), {"limit": 40, "pricing_page": 4})
    scale((arch == EARLY) & (age < 10), {"project": 0})
    scale(arch == CHURN, {"export": 0.5, "share": 0.3, "invite": 0})
    scale(d >= world.upgrade[a], {"gated": 0.3, "limit": 0.3})
    return lam[:, None] * BASE_WEIGHT[None, :] * mult


def _activity(
    world: World, catalog: EventCatalog, rng: np.random.Generator, cells: dict
) -> pl.DataFrame:
    """Track/page/screen events of the active cells."""
    counts = rng.poisson(_rates(world, cells, rng))
    flat = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    cell, kind = flat // len(KINDS), flat % len(KINDS)
    n = len(cell)
    u, a, d = cells["user"][cell], cells["acc"][cell], cells["day"][cell]
    ts = (d * DAY_S + cells["start"][cell] + rng.integers(0, 3 * 3600, n)) * 1000
    ts += rng.integers(0, 1000, n)
    tier = world.tier0[a] + (d >= world.upgrade[a])
    two = world.u_two_dev[u]
    top = len(world.plans.plans) - 1
    kind = np.where((kind == K["screen"]) & ~two, K["page"], kind)
    kind = np.where((kind == K["feature_premium"]) & (tier == 0), K["feature_basic"], kind)
    kind = np.where((kind == K["gated"]) & (tier >= top), K["feature_basic"], kind)
    lim = np.where(rng.random(n) < 0.7, world.pref_limit[a], rng.integers(0, len(LIMIT_NAMES), n))
    allowed = limit_allowed(world.plans)[tier, lim]
    is_seats = lim == LIMIT_NAMES.index("seats")
    allowed = np.where(is_seats & (tier > 0) & (tier == world.tier0[a]), world.seats0[a], allowed)
    kind = np.where((kind == K["limit"]) & np.isnan(allowed), K["usage"], kind)
    allowed = np.nan_to_num(allowed)
    used = np.where(is_seats, allowed, np.ceil(allowed * rng.uniform(1.0, 1.15, n)))
    metric = np.where(world.arch[a] == HEAVY, 1, rng.integers(1, len(LIMIT_NAMES), n))
    qty = np.select(
        [metric == 1, metric == 2],
        [np.round(rng.lognormal(np.log(300), 1.0, n)), np.round(rng.uniform(0.1, 5, n), 2)],
        rng.integers(1, 6, n),
    )

    features = feature_list(world.plans)
    f_tier = np.array([world.plans.feature_tier(f) for f in features])
    order = np.argsort(f_tier, kind="stable")
    sorted_tier = f_tier[order]
    n_basic = int(np.searchsorted(sorted_tier, 0, side="right"))
    upto = np.searchsorted(sorted_tier, tier, side="right")
    rnd = rng.random(n)
    feat = np.select(
        [kind == K["feature_basic"], kind == K["feature_premium"]],
        [
            order[(rnd * n_basic).astype(np.int64)],
            order[np.minimum(n_basic + (rnd * (upto - n_basic)).astype(np.int64), len(order) - 1)],
        ],
        order[np.minimum(upto + (rnd * (len(order) - upto)).astype(np.int64), len(order) - 1)],
    )
    pref = world.pref_gated[a]
    use_pref = (kind == K["gated"]) & (pref >= 0) & (rng.random(n) < 0.7)
    use_pref &= f_tier[np.maximum(pref, 0)] > tier
    feat = np.where(use_pref, pref, feat)
    aux = rng.integers(0, 1_000_000, n)
    dev = np.where(two & (d >= world.signal[a] - 10) & (rng.random(n) < 0.4), 2, 1)
    dev = np.where(kind == K["screen"], 2, dev)
    acc_ctx = np.where(rng.random(n) < 0.9, a, -1)

    plan_names = [p.name for p in world.plans.plans]
    ev = catalog.event

    def num(values: np.ndarray) -> pl.Expr:
        return pl.lit(pl.Series(values)).cast(pl.String)

    def feature(key: str):
        return lambda i: json_text(
            '{"feature":"',
            pick(features, feat[i]),
            f'","{key}":"',
            pick(plan_names, f_tier[feat[i]]),
            '"}',
        )

    # kind -> (type, event name, properties of the rows i of that kind); built kind by kind so
    # that only the rows of one kind are ever formatted at a time
    specs = {
        "feature_basic": ("track", ev("feature_used"), feature("tier")),
        "feature_premium": ("track", ev("feature_used"), feature("tier")),
        "gated": ("track", ev("gated_feature_viewed"), feature("required_plan")),
        "limit": (
            "track",
            ev("limit_reached"),
            lambda i: json_text(
                '{"limit":"',
                pick(LIMIT_NAMES, lim[i]),
                '","used":',
                num(used[i].astype(np.int64)),
                ',"allowed":',
                num(allowed[i].astype(np.int64)),
                "}",
            ),
        ),
        "usage": (
            "track",
            ev("usage_reported"),
            lambda i: json_text(
                '{"metric":"', pick(LIMIT_NAMES, metric[i]), '","quantity":', num(qty[i]), "}"
            ),
        ),
        "integration": (
            "track",
            ev("integration_connected"),
            lambda i: json_text('{"integration":"', pick(INTEGRATIONS, aux[i] % 5), '"}'),
        ),
        "export": (
            "track",
            ev("report_exported"),
            lambda i: json_text('{"format":"', pick(FORMATS, aux[i] % 3), '"}'),
        ),
        "share": (
            "track",
            ev("report_shared"),
            lambda i: json_text('{"recipients":', num(aux[i] % 6 + 1), "}"),
        ),
        "admin_page": (
            "track",
            ev("admin_page_viewed"),
            lambda i: json_text('{"page":"', pick(ADMIN_PAGES, aux[i] % 4), '"}'),
        ),
        "pricing_page": (
            "track",
            ev("pricing_page_viewed"),
            lambda i: pl.lit('{"page":"pricing"}'),
        ),
        "page": (
            "page",
            None,
            lambda i: json_text('{"path":"/', pick(PAGES, aux[i] % 5).str.to_lowercase(), '"}'),
        ),
        "screen": ("screen", None, lambda i: pl.lit("{}")),
        "project": (
            "track",
            ev("activation"),
            lambda i: json_text('{"project_id":"prj_', num(aux[i]), '"}'),
        ),
        "invite": (
            "track",
            ev("invite_sent"),
            lambda i: json_text(
                '{"invitee_email":"guest.',
                num(aux[i]),
                "@",
                pick(world.domain, a[i]),
                '","role":"',
                pl.lit(pl.Series(np.where(aux[i] % 10 == 0, "admin", "member"))),
                '"}',
            ),
        ),
    }
    for prompt in ("prompt_viewed", "prompt_clicked", "prompt_dismissed"):
        specs[prompt] = (
            "track",
            ev(prompt),
            lambda i: json_text('{"trigger_id":"trg_', num(aux[i] % 5000), '"}'),
        )
    frames = []
    for name, (type_, event, props) in specs.items():
        i = np.flatnonzero(kind == K[name])
        page_name = np.array(PAGES)[aux[i] % 5] if type_ != "track" else None
        frame = event_frame(
            len(i),
            uid=u[i],
            dev=dev[i],
            acc=acc_ctx[i],
            ts=ts[i],
            type=type_,
            event=event,
            name=page_name,
            anon_only=False,
        )
        frames.append(frame.with_columns(properties=props(i)) if len(i) else frame)
    guests = frames[list(specs).index("invite")]["properties"].str.extract(
        '"invitee_email":"([^"]+)"'
    )
    return pl.concat(frames), guests.to_list()


def build_events(
    world: World, catalog: EventCatalog, rng: np.random.Generator
) -> tuple[pl.DataFrame, list[str]]:
    """Every event of the world (lifecycle and activity) and the invitee emails written."""
    join_sec = np.where(
        world.u_inviter < 0,
        rng.integers(6 * 3600, 12 * 3600, world.n_users),
        rng.integers(13 * 3600, 18 * 3600, world.n_users),
    )
    cells = _cells(world, rng, join_sec)
    activity, guests = _activity(world, catalog, rng, cells)
    frames = [activity, *lifecycle(world, catalog, rng, cells, join_sec)]
    return pl.concat([f.select(list(COLUMNS)).cast(COLUMNS) for f in frames]), guests
