"""Lifecycle calls of the demo world's users, and the event-frame helpers both parts share.

Anonymous browsing before signup, Signed Up, identify (with consent, and its later withdrawal),
group, invites sent and accepted, and the second device linked by identify or alias: one
vectorised draw per call type over all users, never a loop over events.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from plg_pipeline.lib.catalog import EventCatalog
from plg_pipeline.lib.generator_world import DAY_S, INDUSTRIES, World

ANON_PAGES = ("Home", "Pricing", "Features", "Signup")
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "PLGDemo/3.2.1 (iPhone; iOS 17.5; Scale/3.00)",
)

COLUMNS = {
    "uid": pl.Int64,
    "dev": pl.Int64,
    "acc": pl.Int64,
    "type": pl.String,
    "event": pl.String,
    "name": pl.String,
    "previousId": pl.String,
    "groupId": pl.String,
    "ts": pl.Int64,
    "properties": pl.String,
    "traits": pl.String,
    "anon_only": pl.Boolean,
}


def event_frame(n: int, **cols) -> pl.DataFrame:
    """A frame with every event column: arrays as given, scalars broadcast, the rest null."""
    data = {}
    for name, dtype in COLUMNS.items():
        value = cols.get(name)
        if isinstance(value, np.ndarray | pl.Series):
            data[name] = pl.Series(name, value).cast(dtype)
        elif n == 0:
            data[name] = pl.Series(name, [], dtype=dtype)
        else:
            data[name] = pl.repeat(value, n, dtype=dtype, eager=True).alias(name)
    return pl.DataFrame(data)


def pick(values, idx: np.ndarray) -> pl.Expr:
    return pl.lit(pl.Series(list(values))).gather(pl.lit(pl.Series(idx.astype(np.int64))))


def json_text(*parts) -> pl.Expr:
    """Concatenate literal JSON fragments (str) and value expressions into JSON text."""
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in parts])


def _traits(world: World, users: np.ndarray, consent: np.ndarray | None) -> pl.Expr:
    """identify traits: email, name, role and (unless None) consent.analytics."""
    emails, names = world.emails(), world.person_names()
    role = np.where(world.u_admin[users], "admin", "member")
    parts = [
        '{"email":"',
        pick(emails, users),
        '","name":"',
        pick(names, users),
        '","role":"',
        pl.lit(pl.Series(role)),
        '"',
    ]
    if consent is not None:
        parts += [
            ',"consent":{"analytics":',
            pl.lit(pl.Series(np.where(consent, "true", "false"))),
            "}",
        ]
    return json_text(*parts, "}")


def lifecycle(
    world: World, catalog: EventCatalog, rng: np.random.Generator, cells: dict, join_sec: np.ndarray
) -> list[pl.DataFrame]:
    """Anonymous browsing, signup, identify, group, alias and invite calls of each user."""
    ev = catalog.event
    plan_names = np.array([p.name for p in world.plans.plans])
    frames = []
    joiners = np.flatnonzero(world.u_join >= 0)
    t0 = (world.u_join * DAY_S + join_sec) * 1000
    ja = world.u_acc[joiners]
    tier_then = world.tier0[ja] + (world.u_join[joiners] >= world.upgrade[ja])
    n_anon = rng.integers(1, 4, len(joiners))
    anon_u = np.repeat(joiners, n_anon)
    frames.append(
        event_frame(
            len(anon_u),
            uid=anon_u,
            dev=1,
            acc=-1,
            type="page",
            anon_only=True,
            name=np.array(ANON_PAGES)[rng.integers(0, 4, len(anon_u))],
            ts=t0[anon_u] - rng.integers(60_000, 3_600_000, len(anon_u)),
        ).with_columns(properties=pl.lit('{"path":"/"}'))
    )
    signup = event_frame(
        len(joiners),
        uid=joiners,
        dev=1,
        acc=ja,
        type="track",
        event=ev("signup"),
        ts=t0[joiners],
        anon_only=False,
    )
    frames.append(
        signup.with_columns(
            properties=json_text('{"plan":"', pl.lit(pl.Series(plan_names[tier_then])), '"}')
        )
    )
    invited = joiners[world.u_inviter[joiners] >= 0]
    inviter = world.u_inviter[invited]
    accepted = event_frame(
        len(invited),
        uid=invited,
        dev=1,
        acc=world.u_acc[invited],
        type="track",
        event=ev("invite_accepted"),
        ts=t0[invited] + 3000,
        anon_only=False,
    )
    frames.append(
        accepted.with_columns(properties=json_text('{"invited_by":"', _ids(inviter), '"}'))
    )
    inviter_t0 = np.where(world.u_join[inviter] >= 0, t0[inviter] + 60_000, 0)
    sent_ts = np.maximum(
        t0[invited] - rng.integers(600_000, 2 * DAY_S * 1000, len(invited)), inviter_t0
    )
    sent = event_frame(
        len(invited),
        uid=inviter,
        dev=1,
        acc=world.u_acc[invited],
        type="track",
        event=ev("invite_sent"),
        ts=np.minimum(sent_ts, t0[invited] - 1000),
        anon_only=False,
    )
    role = np.where(world.u_admin[invited], "admin", "member")
    frames.append(
        sent.with_columns(
            properties=json_text(
                '{"invitee_email":"',
                pick(world.emails(), invited),
                '","role":"',
                pl.lit(pl.Series(role)),
                '"}',
            )
        )
    )
    # identify + group: at signup for joiners, at the first active day for everyone else
    m, first_idx = np.unique(cells["m"], return_index=True)
    first_ts = np.maximum(
        (cells["day"][first_idx] * DAY_S + cells["start"][first_idx]) * 1000 - 5000, 0
    )
    first_ts_m = np.full(len(world.m_user), -1)
    first_ts_m[m] = first_ts
    primary = np.arange(world.n_users)
    ident_ts = np.where(world.u_join >= 0, t0 + 1000, first_ts_m[primary])
    has = ident_ts >= 0
    users = primary[has]
    first_consent = world.u_consent[users] | world.u_consent_flip[users]
    frames.append(
        event_frame(
            len(users), uid=users, dev=1, type="identify", ts=ident_ts[has], anon_only=False
        ).with_columns(traits=_traits(world, users, first_consent))
    )
    group_ts = first_ts_m.copy()
    group_ts[primary] = np.where(ident_ts >= 0, ident_ts + 1000, -1)
    gm = np.flatnonzero(group_ts >= 0)
    ga = world.m_acc[gm]
    frames.append(
        event_frame(
            len(gm),
            uid=world.m_user[gm],
            dev=1,
            type="group",
            ts=group_ts[gm],
            groupId=_acc_ids(ga),
            anon_only=False,
        ).with_columns(
            traits=json_text(
                '{"name":"',
                pick(world.acc_name, ga),
                '","industry":"',
                pick(INDUSTRIES, world.industry[ga]),
                '"}',
            )
        )
    )
    # consent withdrawn later: a second identify with consent.analytics false
    flip = users[world.u_consent_flip[users]]
    flip_day = np.minimum(
        ident_ts[flip] // (DAY_S * 1000) + rng.integers(3, 30, len(flip)), world.days - 1
    )
    frames.append(
        event_frame(
            len(flip),
            uid=flip,
            dev=1,
            type="identify",
            anon_only=False,
            ts=np.maximum(flip_day * DAY_S * 1000 + 43_200_000, ident_ts[flip] + 60_000),
        ).with_columns(traits=_traits(world, flip, np.zeros(len(flip), bool)))
    )
    # a second device: linked by identify (most) or alias (some) before it is used
    two = users[world.u_two_dev[users]]
    d2 = np.maximum(world.signal[world.u_acc[two]] - 10, ident_ts[two] // (DAY_S * 1000) + 1)
    link_ts = d2 * DAY_S * 1000 + 1000
    keep = d2 < world.days
    two, link_ts = two[keep], link_ts[keep]
    alias = rng.random(len(two)) < 0.3
    frames.append(
        event_frame(
            int(alias.sum()),
            uid=two[alias],
            dev=2,
            type="alias",
            ts=link_ts[alias],
            previousId=_anon_ids(world, two[alias], 2),
            anon_only=False,
        )
    )
    ident2 = two[~alias]
    frames.append(
        event_frame(
            len(ident2), uid=ident2, dev=2, type="identify", ts=link_ts[~alias], anon_only=False
        ).with_columns(traits=json_text('{"email":"', pick(world.emails(), ident2), '"}'))
    )
    return frames


def _ids(idx: np.ndarray) -> pl.Expr:
    return pl.concat_str(
        [pl.lit("usr_"), pl.lit(pl.Series(idx.astype(np.int64))).cast(pl.String).str.zfill(6)]
    )


def _acc_ids(idx: np.ndarray) -> pl.Series:
    return pl.Series([f"acc_{i:05d}" for i in idx.tolist()], dtype=pl.String)


def _anon_ids(world: World, users: np.ndarray, device: int) -> pl.Series:
    return pl.Series(anon_ids(world, device)).gather(pl.Series(users.astype(np.int64)))


def anon_ids(world: World, device: int) -> list[str]:
    """Device anonymousIds: uuid-shaped, derived from the user index (deterministic)."""
    return [
        f"{(u * 2654435761 + device * 97) % 16**8:08x}-{device:04x}-4{u % 4096:03x}-a{device:03x}-{u:012x}"
        for u in range(world.n_users)
    ]
