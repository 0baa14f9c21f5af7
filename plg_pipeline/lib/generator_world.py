"""The demo world's latent state: accounts, users, memberships, billing, CRM, privacy.

Everything the events later show follows from this state (archetype, readiness, team growth,
upgrade and churn days), so the truth files can say what the pipeline ought to find.
Per-account and per-user work is vectorised or loops over accounts only (thousands, never
events). Simulation constants are not business rules: the pipeline never reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from plg_pipeline.lib.plans import LIMIT_NAMES, PlanCatalog

ARCHETYPES = (
    "expansion_ready",
    "lone_power_user",
    "blocked_admin",
    "heavy_weak_outcome",
    "early_limit",
    "steady",
    "churning",
)
ARCHETYPE_SHARE = (0.20, 0.08, 0.08, 0.08, 0.06, 0.35, 0.15)
ER, LONE, BLOCKED, HEAVY, EARLY, STEADY, CHURN = range(7)
SEGMENTS = ("smb", "mid_market", "enterprise")
SEGMENT_SHARE = (0.6, 0.3, 0.1)
TEAM_RANGE = ((2, 6), (4, 14), (10, 30))
# Initial plan tier mix per archetype (free, pro, business, enterprise).
PLAN_MIX = {
    ER: (0.25, 0.55, 0.20, 0.0),
    LONE: (0.25, 0.55, 0.20, 0.0),
    BLOCKED: (0.25, 0.55, 0.20, 0.0),
    HEAVY: (0.25, 0.55, 0.20, 0.0),
    EARLY: (0.8, 0.2, 0.0, 0.0),
    STEADY: (0.3, 0.4, 0.2, 0.1),
    CHURN: (0.3, 0.5, 0.2, 0.0),
}
INDUSTRIES = ("software", "fintech", "healthcare", "retail", "media", "logistics", "education")
FIRST = [
    "Maria",
    "Liam",
    "Aisha",
    "Noah",
    "Sofia",
    "Mateo",
    "Yuki",
    "Omar",
    "Elena",
    "Lucas",
    "Priya",
    "Jonas",
    "Chloe",
    "Diego",
    "Amara",
    "Henrik",
    "Leila",
    "Tomasz",
    "Nadia",
    "Kwame",
    "Ingrid",
    "Rafael",
    "Mei",
    "Arjun",
    "Zoe",
    "Felix",
    "Hana",
    "Oscar",
    "Imani",
    "Pavel",
]
LAST = [
    "Okafor",
    "Lindqvist",
    "Haddad",
    "Moreau",
    "Tanaka",
    "Novak",
    "Fischer",
    "Alvarez",
    "Kowalski",
    "Mensah",
    "Rossi",
    "Petrov",
    "Nakamura",
    "Brennan",
    "Duarte",
    "Varga",
    "Osei",
    "Lehmann",
    "Castillo",
    "Sato",
    "Ivanova",
    "Quinn",
    "Abara",
    "Holm",
    "Ferreira",
]
COMPANY_A = [
    "North",
    "Blue",
    "Iron",
    "Bright",
    "Clear",
    "Swift",
    "Quiet",
    "Silver",
    "Cedar",
    "Atlas",
    "Nova",
    "Polar",
]
COMPANY_B = [
    "Labs",
    "Works",
    "Systems",
    "Analytics",
    "Cloud",
    "Logic",
    "Forge",
    "Dynamics",
    "Metrics",
    "Stack",
]
TZ_OFFSETS_MIN = (0, 0, 60, 120, -300, -240, -480, 330, 540)
SALES_REPS = ("Dana Whitfield", "Ravi Shankar", "Lena Vogel", "Marcus Bell")
VENDOR_DOMAIN = "plgdemo.io"
DAY_S = 86_400
NEVER = 1_000_000  # a day index that never comes


@dataclass
class World:
    """Latent state. Account arrays are indexed by account, user arrays by user."""

    start: date
    days: int
    plans: PlanCatalog
    # accounts
    arch: np.ndarray
    seg: np.ndarray
    readiness: np.ndarray
    tier0: np.ndarray
    created: np.ndarray  # day index, negative = before the window
    signal: np.ndarray  # day the expansion (or look-alike) behaviour starts
    upgrade: np.ndarray  # day of the plan upgrade, NEVER if none
    churn: np.ndarray
    reactivate: np.ndarray
    seats0: np.ndarray
    pref_limit: np.ndarray
    pref_gated: np.ndarray  # feature index, -1 if none above the plan
    acc_name: list[str]
    domain: list[str]
    industry: np.ndarray
    # users
    u_acc: np.ndarray
    u_join: np.ndarray  # day joined; -1 = before the window
    u_admin: np.ndarray
    u_power: np.ndarray
    u_inviter: np.ndarray  # user index, -1 for founders / pre-existing users
    u_first: np.ndarray
    u_last: np.ndarray
    u_tz: np.ndarray
    u_two_dev: np.ndarray
    u_consent: np.ndarray  # latest consent.analytics
    u_consent_flip: np.ndarray  # said true first, false later
    u_p: np.ndarray  # daily activity probability
    u_lam: np.ndarray  # events per active day
    u_ips: np.ndarray  # (U, 2) full IPs as strings
    # memberships (user x account), primary first
    m_user: np.ndarray
    m_acc: np.ndarray
    m_start: np.ndarray
    m_share: np.ndarray

    @property
    def n_accounts(self) -> int:
        return len(self.arch)

    @property
    def n_users(self) -> int:
        return len(self.u_acc)

    def emails(self) -> list[str]:
        return [
            f"{FIRST[f].lower()}.{LAST[la].lower()}{u}@{self.domain[a]}"
            for u, (f, la, a) in enumerate(zip(self.u_first, self.u_last, self.u_acc, strict=True))
        ]

    def person_names(self) -> list[str]:
        return [f"{FIRST[f]} {LAST[la]}" for f, la in zip(self.u_first, self.u_last, strict=True)]

    def account_ids(self) -> list[str]:
        return [f"acc_{i:05d}" for i in range(self.n_accounts)]

    def iso(self, day: int, second: int) -> str:
        moment = datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)
        return (moment + timedelta(days=int(day), seconds=int(second))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )


def build_world(
    rng: np.random.Generator, accounts: int, days: int, start: date, plans: PlanCatalog
) -> World:
    """Draw accounts, their latent archetype and fate, then their users and memberships."""
    n = accounts
    arch = rng.choice(len(ARCHETYPES), size=n, p=ARCHETYPE_SHARE)
    seg = rng.choice(3, size=n, p=SEGMENT_SHARE)
    mix = np.array([PLAN_MIX[a] for a in arch])
    tier0 = (rng.random(n)[:, None] > np.cumsum(mix, axis=1)).sum(axis=1)
    tier0 = np.minimum(tier0, len(plans.plans) - 1)
    readiness = np.where(arch == ER, rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.3, n))
    readiness = np.where(np.isin(arch, (ER, STEADY)), readiness, rng.uniform(0.0, 0.15, n))
    in_window = (rng.random(n) < 0.3) | (arch == EARLY)
    created = np.where(in_window, rng.integers(0, max(1, days // 2), n), -rng.integers(30, 400, n))
    first = np.maximum(created, 0)
    signal = first + rng.integers(5, max(6, int(days * 0.45)), n)
    p_up = np.select(
        [arch == ER, arch == STEADY, arch == CHURN],
        [0.3 + 0.45 * readiness, 0.04 + 0.12 * readiness, 0.02],
        0.07,
    )
    lag = np.where(arch == ER, rng.integers(5, 46, n), rng.integers(0, max(1, days), n))
    upgrade = np.where(arch == ER, signal + lag, first + 5 + lag)
    can_up = tier0 < len(plans.plans) - 1
    upgrade = np.where((rng.random(n) < p_up) & can_up & (upgrade < days), upgrade, NEVER)
    churn = np.where(arch == CHURN, first + rng.integers(max(2, days // 3), max(3, days), n), NEVER)
    churn = np.where(churn < days, churn, NEVER)
    reactivate = np.where(
        (churn < NEVER) & (rng.random(n) < 0.2), churn + rng.integers(10, 31, n), NEVER
    )
    reactivate = np.where(reactivate < days, reactivate, NEVER)

    lo = np.array([TEAM_RANGE[s][0] for s in seg])
    hi = np.array([TEAM_RANGE[s][1] for s in seg])
    team0 = rng.integers(lo, hi + 1)
    max_seats = np.array([p.max_seats or 10**6 for p in plans.plans])[tier0]
    team0 = np.minimum(team0, max_seats)
    seats0 = np.minimum(team0 + rng.integers(0, 3, n), max_seats)
    joiners = np.select(
        [arch == ER, arch == STEADY, arch == HEAVY, arch == EARLY],
        [
            np.maximum(2, np.round(team0 * rng.uniform(0.3, 0.9, n) * (0.5 + readiness))),
            rng.poisson(0.3, n),
            rng.poisson(0.2, n),
            rng.poisson(0.5, n),
        ],
        0,
    ).astype(np.int64)
    joiners = np.where(first + 6 < days, joiners, 0)

    limit_p = {
        ER: (0.4, 0.3, 0.1, 0.2),
        LONE: (0.0, 0.6, 0.0, 0.4),
        HEAVY: (0.0, 0.6, 0.4, 0.0),
        EARLY: (0.0, 0.2, 0.4, 0.4),
        BLOCKED: (0.7, 0.1, 0.1, 0.1),
    }
    lp = np.array([limit_p.get(a, (0.25, 0.25, 0.25, 0.25)) for a in arch])
    pref_limit = (rng.random(n)[:, None] > np.cumsum(lp, axis=1)).sum(axis=1)
    features = feature_list(plans)
    f_tier = np.array([plans.feature_tier(f) for f in features])
    pref_gated = np.array(
        [
            rng.choice(np.flatnonzero(f_tier == t + 1)) if t + 1 <= f_tier.max() else -1
            for t in tier0
        ]
    )

    acc_name = [f"{COMPANY_A[i % 12]} {COMPANY_B[(i // 12) % 10]} {i}" for i in rng.permutation(n)]
    domain = [name.lower().replace(" ", "-") + ".example" for name in acc_name]

    # users: initial team, then joiners, account by account (vectorised with repeat)
    size = team0 + joiners
    u_acc = np.repeat(np.arange(n), size)
    pos = np.arange(len(u_acc)) - np.repeat(np.cumsum(size) - size, size)
    is_joiner = pos >= np.repeat(team0, size)
    nu = len(u_acc)
    a_created, a_signal, a_first = created[u_acc], signal[u_acc], first[u_acc]
    join_init = np.where(pos == 0, a_created, a_created + rng.integers(0, 6, nu))
    join_init = np.where(a_created >= 0, np.minimum(join_init, days - 1), -1)
    join_er = a_signal + rng.integers(0, 36, nu)
    join_other = rng.integers(np.minimum(a_first + 6, days - 1), days)
    u_join = np.where(is_joiner, np.where(arch[u_acc] == ER, join_er, join_other), join_init)
    u_join = np.where(is_joiner, np.clip(u_join, a_first + 6, days - 1), u_join)
    u_admin = (pos == 0) | (rng.random(nu) < 0.12)
    founder = np.repeat(np.cumsum(size) - size, size)
    initial_pick = founder + (rng.random(nu) * np.repeat(team0, size)).astype(np.int64)
    admin_invites = (arch[u_acc] == ER) & (rng.random(nu) < 0.8)
    u_inviter = np.where(is_joiner, np.where(admin_invites, founder, initial_pick), founder)
    u_inviter = np.where((u_join >= 0) & (pos > 0), u_inviter, -1)
    u_power = (arch[u_acc] == LONE) & (pos == np.minimum(1, np.repeat(team0, size) - 1))

    u_p = rng.uniform(0.3, 0.6, nu)
    u_lam = rng.lognormal(np.log(10), 0.4, nu)
    ua = arch[u_acc]
    u_p = np.select(
        [u_power, ua == LONE, (ua == BLOCKED) & u_admin, ua == BLOCKED, ua == HEAVY],
        [0.9, 0.12, 0.7, 0.25, 0.7],
        u_p,
    )
    u_lam = u_lam * np.select([u_power, ua == LONE, ua == HEAVY], [3.0, 0.5, 2.0], 1.0)
    u_consent = rng.random(nu) >= 0.02
    u_consent_flip = ~u_consent & (rng.random(nu) < 0.4)
    octets = rng.integers(1, 255, size=(nu, 2, 4))
    octets[:, :, 0] = rng.choice(np.array([23, 45, 62, 81, 98, 145, 176, 203]), size=(nu, 2))
    u_ips = np.array([[".".join(map(str, d)) for d in pair] for pair in octets.tolist()])

    # a few users also belong to a second account
    second = np.flatnonzero(rng.random(nu) < 0.02) if n > 1 else np.array([], dtype=np.int64)
    other = (u_acc[second] + rng.integers(1, n, len(second))) % max(n, 1)
    m_user = np.concatenate([np.arange(nu), second])
    m_acc = np.concatenate([u_acc, other])
    sec_start = np.maximum(np.maximum(u_join[second], first[other]), 0) + rng.integers(
        0, max(1, days // 2), len(second)
    )
    m_start = np.concatenate([np.maximum(u_join, 0), np.minimum(sec_start, days - 1)])
    m_share = np.ones(len(m_user))
    m_share[second] = 0.75
    m_share[nu:] = 0.25

    return World(
        start=start,
        days=days,
        plans=plans,
        arch=arch,
        seg=seg,
        readiness=readiness,
        tier0=tier0,
        created=created,
        signal=signal,
        upgrade=upgrade,
        churn=churn,
        reactivate=reactivate,
        seats0=seats0,
        pref_limit=pref_limit,
        pref_gated=pref_gated,
        acc_name=acc_name,
        domain=domain,
        industry=rng.integers(0, len(INDUSTRIES), n),
        u_acc=u_acc,
        u_join=u_join,
        u_admin=u_admin,
        u_power=u_power,
        u_inviter=u_inviter,
        u_first=rng.integers(0, len(FIRST), nu),
        u_last=rng.integers(0, len(LAST), nu),
        u_tz=rng.integers(0, len(TZ_OFFSETS_MIN), nu),
        u_two_dev=rng.random(nu) < 0.2,
        u_consent=u_consent,
        u_consent_flip=u_consent_flip,
        u_p=u_p,
        u_lam=u_lam,
        u_ips=u_ips,
        m_user=m_user,
        m_acc=m_acc,
        m_start=m_start,
        m_share=m_share,
    )


def feature_list(plans: PlanCatalog) -> list[str]:
    """Every feature of the catalog, in plan order (basic features first)."""
    seen: dict[str, None] = {}
    for plan in plans.plans:
        seen.update(dict.fromkeys(plan.features))
    return list(seen)


def limit_allowed(plans: PlanCatalog) -> np.ndarray:
    """(tier, limit) -> allowed per month; NaN = unlimited. Seats use the plan's max_seats."""
    out = np.full((len(plans.plans), len(LIMIT_NAMES)), np.nan)
    for t, plan in enumerate(plans.plans):
        for j, name in enumerate(LIMIT_NAMES):
            value = plan.max_seats if name == "seats" else plan.limits.get(name)
            if value is not None:
                out[t, j] = value
    return out
