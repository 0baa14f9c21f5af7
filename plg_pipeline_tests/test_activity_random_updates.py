"""Randomized differential test: an incremental update of the activity tables equals a full
rebuild of the same rows, over many random worlds and arrivals.

Each scenario builds a small world through the real identity stage, stores its full build,
then lets a random arrival come in (late events near and far back or in a session longer than
a day, new dates, earlier activations, role changes, memberships, new accounts, merges,
consent changes, late billing rows) and runs the update the way the activity asset does (bench.stage_incremental): identity
updated on the arrived events, changed users and affected dates from it, activations from the
stored candidates, with and without the arrived events and the identity map.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl
import pytest

from plg_pipeline.lib.activity import (
    ACTIVATION_COLUMNS,
    ActivityTables,
    activation_candidates,
    activity_tables,
    affected_dates,
    billing_changed_from,
    changed_users,
    changes_from,
    first_activations,
)
from plg_pipeline.lib.identity import attribute_events, update_identity, user_consent
from plg_pipeline_tests.test_activity import (
    CAT,
    CFG,
    PLANS,
    TABLE_KEYS,
    assert_tables_equal,
    billing,
    day,
    full_tables,
    id_dates,
    labelled,
    long_session,
    pipeline,
    random_rows,
    track,
    update,
)
from plg_pipeline_tests.test_identity import make_events

FEATURES = ["dashboards", "csv_export", "integrations", "sso", "ai_insights", "scim"]
NAMES = {
    "Feature Used": 8,
    "Report Exported": 3,
    "Project Created": 1,
    "Invite Sent": 2,
    "Signed Up": 1,
    "Pricing Page Viewed": 1,
    "Gated Feature Viewed": 1,
    "Limit Reached": 1,
    "Usage Reported": 1,
}
PLAN_ROWS = [("pro", 10, 150.0), ("business", 5, 175.0), ("enterprise", 40, 2400.0)]


# ---------------------------------------------------------------- random worlds


def _when(rng: random.Random, n: int):
    """A time on day `n`: any hour, or now and then just before or after midnight."""
    r = rng.random()
    if r < 0.1:
        return day(n, 23, rng.randrange(30, 60))
    if r < 0.2:
        return day(n, 0, rng.randrange(0, 30))
    return day(n, rng.randrange(24), rng.randrange(60))


def _activity(rng: random.Random, who: dict, when, account: str | None, name=None) -> dict:
    """One activity event of `who` (user_id and/or anonymous_id) with the name's properties."""
    name = name or rng.choices(list(NAMES), weights=list(NAMES.values()))[0]
    row = {**who, "event_name": name, "event_time": when, "account_id": account}
    if name == "Feature Used":
        row["feature"] = rng.choice(FEATURES)
    elif name == "Gated Feature Viewed":
        row.update(feature="sso", required_plan="business")
    elif name == "Invite Sent":
        row["role"] = rng.choice(["admin", "member"])
    elif name == "Limit Reached":
        row.update(limit_name="seats", used=float(rng.randrange(1, 5)), allowed=3.0)
    elif name == "Usage Reported":
        # api calls are counted (summed: whole numbers, as the generator's), storage a level
        if rng.random() < 0.5:
            row.update(limit_name="api_calls", quantity=float(rng.randrange(1, 500)))
        else:
            row.update(limit_name="storage_gb", quantity=round(rng.uniform(0.1, 5), 2))
    if name == "Pricing Page Viewed" and rng.random() < 0.5:
        row["type"] = "page"
    return row


def _identify(user: str | None, when, anonymous: str | None = None, **traits) -> dict:
    row = {"type": "identify", "event_time": when, **traits}
    if user is not None:
        row["user_id"] = user
    if anonymous is not None:
        row["anonymous_id"] = anonymous
    return row


def _group(user: str, account: str, when, role: str | None = None) -> dict:
    row = {"type": "group", "user_id": user, "group_id": account, "event_time": when}
    return row if role is None else {**row, "role": role}


@dataclass
class World:
    rows: list[dict]
    bill: list[tuple]
    last: int  # the last day with events
    accounts: list[str]
    users: list[str]
    home: dict[str, str]
    unlinked: list[str]  # anonymous ids with history and no user yet
    implicit: set[str]  # users whose events mostly come without an account
    start: dict[str, int]  # each user's first day
    accountless: bool = True  # False: every event names its account
    opted_out: list[tuple[str, int]] = field(default_factory=list)  # (user, day withdrawn)
    long: list[dict] = field(default_factory=list)  # the events of a session longer than a day


def base_world(rng: random.Random) -> World:
    """A dozen users in 2-4 accounts over 40-60 days: identify and group calls with roles,
    a few hundred events (in half the worlds some users' mostly without an account, attributed
    through their memberships), sessions across midnight or longer than a day, anonymous
    histories linked or not, a withdrawn consent and a few billing rows."""
    n_days = rng.randint(40, 60)
    accounts = [f"acc{i}" for i in range(rng.randint(2, 4))]
    users = [f"u{i}" for i in range(12)]
    home = {u: rng.choice(accounts) for u in users}
    start = {u: rng.randrange(n_days - 10) for u in users}
    implicit = {u for u in users if rng.random() < 0.4}  # their events rely on memberships
    rows: list[dict] = []
    for u in users:
        if rng.random() < 0.7:
            role = rng.choice(["admin", "member", None])
            rows.append(_identify(u, day(start[u], 8), role=role))
        if u in implicit or rng.random() < 0.5:
            rows.append(_group(u, home[u], day(start[u], 8, 1), rng.choice(["admin", None])))

    def account_of(u: str) -> str | None:
        r = rng.random()
        if u in implicit:
            return None if r < 0.8 else home[u]
        return home[u] if r < 0.85 else rng.choice(accounts) if r < 0.95 else None

    for _ in range(rng.randint(150, 300)):
        u = rng.choice(users)
        n = rng.randrange(start[u], n_days)
        rows.append(_activity(rng, {"user_id": u}, _when(rng, n), account_of(u)))
    for _ in range(rng.randint(6, 12)):  # sessions that run past midnight
        u = rng.choice(users)
        when, account = (
            day(rng.randrange(start[u], n_days - 1), 23, rng.randrange(30, 50)),
            account_of(u),
        )
        for k in range(rng.randint(2, 4)):
            rows.append(_activity(rng, {"user_id": u}, when + timedelta(minutes=12 * k), account))
    long = []
    if rng.random() < 0.5:  # a session longer than a day: a script, or an open tab's heartbeat
        u = rng.choice(users)
        when, account = day(rng.randrange(start[u], n_days - 3), rng.randrange(24)), account_of(u)
        for k in range(rng.randint(100, 200)):
            long.append(_activity(rng, {"user_id": u}, when + timedelta(minutes=20 * k), account))
    rows += long
    rows.append(_activity(rng, {"user_id": rng.choice(users)}, _when(rng, n_days - 1), None))
    anonymous = [f"a{i}" for i in range(rng.randint(2, 4))]
    for a in anonymous:
        first = rng.randrange(n_days - 5)
        account = rng.choice([*accounts, None])
        for _ in range(rng.randint(2, 8)):
            n = rng.randrange(first, min(first + 10, n_days))
            rows.append(_activity(rng, {"anonymous_id": a}, _when(rng, n), account))
    linked = [a for a in anonymous if rng.random() < 0.4]
    for a in linked:
        rows.append(_identify(rng.choice(users), day(rng.randrange(n_days), 7), anonymous=a))
    unlinked = [a for a in anonymous if a not in linked]
    world = World(rows, [], n_days - 1, accounts, users, home, unlinked, implicit, start, long=long)
    if rng.random() < 0.5:
        u, n = rng.choice(users), rng.randrange(n_days)
        rows.append(_identify(u, day(n, 6), consent_analytics=False))
        world.opted_out.append((u, n))
    for _ in range(rng.randint(0, 3)):
        when = _when(rng, rng.randrange(n_days))
        world.bill.append((rng.choice(accounts), when, *rng.choice(PLAN_ROWS)))
    # In some worlds every event names its account: no late link moves events between
    # accounts, so the rebuilt dates end a MAU window after the affected ones, and what the
    # update must refresh past them (flags, counts, sessions) is tested there.
    world.accountless = rng.random() < 0.5
    _name_accounts(world, rows)
    return world


def _name_accounts(world: World, rows: list[dict]) -> None:
    """Without `world.accountless`, each event without an account gets its user's home one."""
    if world.accountless:
        return
    for row in rows:
        if "event_name" in row and row.get("account_id") is None:
            row["account_id"] = world.home.get(row.get("user_id"), world.accounts[0])


def _stored_day(rng: random.Random, world: World) -> int:
    """A stored day: 0-2 days before the last one (a late arrival), or anywhere far back."""
    if rng.random() < 0.4:
        return world.last - rng.randrange(3)
    return rng.randrange(world.last + 1)


def _any_day(rng: random.Random, world: World) -> int:
    """A stored day, or now and then a new one."""
    return world.last + rng.randint(1, 2) if rng.random() < 0.2 else _stored_day(rng, world)


def _user(rng: random.Random, world: World) -> str:
    """Any user, the more often one whose rows are special: without consent, or whose events
    mostly come without an account."""
    r = rng.random()
    if world.opted_out and r < 0.2:
        return world.opted_out[0][0]
    if world.implicit and r < 0.5:
        return rng.choice(sorted(world.implicit))
    return rng.choice(world.users)


def _late_events(rng, world):
    """Activity on stored dates, 1-3 days late or far back: anywhere, continuing a stored
    session around midnight, or a user's first event, long before their stored first day."""
    out = []
    night = [
        r
        for r in world.rows
        if r.get("user_id") and r.get("event_name") and r["event_time"].hour in (23, 0)
    ]
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.25 and night:
            row = rng.choice(night)
            when = row["event_time"] + timedelta(minutes=rng.randint(5, 29))
            who, account = {"user_id": row["user_id"]}, row["account_id"]
            out.append(_activity(rng, who, when, account))
            continue
        u = _user(rng, world)
        n = _stored_day(rng, world)
        if r < 0.5:  # before the first day of the user who started last, or of another
            if rng.random() < 0.5:
                u = max(world.users, key=lambda u: world.start[u])
            n = rng.randrange(max(world.start[u], 1))
        account = rng.choice([world.home[u], rng.choice(world.accounts), None])
        out.append(_activity(rng, {"user_id": u}, _when(rng, n), account))
    return out, []


def _in_a_long_session(rng, world):
    """Late events in the stored session longer than a day, midnights after its start, or
    just after its end (other late events in a world without one)."""
    if not world.long:
        return _late_events(rng, world)
    out = []
    for _ in range(rng.randint(1, 2)):
        row = rng.choice([*world.long[len(world.long) * 2 // 3 :], world.long[-1]])
        when = row["event_time"] + timedelta(minutes=rng.randint(5, 19))
        out.append(_activity(rng, {"user_id": row["user_id"]}, when, row["account_id"]))
    return out, []


def _new_dates(rng, world):
    """Activity after the stored last date, now and then after days without any event."""
    out, first = [], world.last + rng.choice([1, 1, 3])
    for _ in range(rng.randint(1, 6)):
        u = _user(rng, world)
        n = first + rng.randint(0, 1)
        out.append(_activity(rng, {"user_id": u}, _when(rng, n), rng.choice([world.home[u], None])))
    return out, []


def _first_day(world: World, u: str, **match) -> int | None:
    """The first day of `u`'s events with the `match`ing fields, if any."""
    days = [
        (r["event_time"].date() - day(0).date()).days
        for r in world.rows
        if r.get("user_id") == u and all(r.get(k) == v for k, v in match.items())
    ]
    return min(days, default=None)


def _earlier_activation(rng, world):
    """A "Project Created" earlier than the user's first one, or for a user with none. Half
    the time, when there is one, more than a MAU window earlier and after the user's link to
    the home account began: the first activation moves past the rebuilt dates, and nothing
    else there changes."""
    firsts = {u: _first_day(world, u, event_name="Project Created") for u in world.users}
    links = {u: _first_day(world, u, account_id=world.home[u]) for u in world.users}
    far = [
        u
        for u in world.users
        if firsts[u] is not None and links[u] is not None and links[u] + 1 < firsts[u] - 28
    ]
    if far and rng.random() < 0.5:
        u = max(far, key=lambda u: firsts[u] - links[u]) if rng.random() < 0.5 else rng.choice(far)
        n = rng.randrange(links[u] + 1, min(links[u] + 4, firsts[u] - 28))
        return [track(u, "Project Created", day(n, 13), world.home[u])], []
    u = _user(rng, world)
    limit = firsts[u] if firsts[u] is not None else world.last + 1
    if rng.random() < 0.6:
        limit = min(limit, world.last) - 28
    n = rng.randrange(max(limit, 1))
    account = rng.choice([world.home[u], None, rng.choice(world.accounts)])
    return [track(u, "Project Created", _when(rng, n), account)], []


def _role_change(rng, world):
    """An identify with a new role (a promotion or demotion), or a group call's role."""
    u = _user(rng, world)
    role = rng.choice(["admin", "member", None])
    when = day(_any_day(rng, world), 12)
    if rng.random() < 0.5:
        return [_identify(u, when, role=role)], []
    return [_group(u, world.home[u], when, role or "member")], []


def _membership(rng, world):
    """A group call adding a membership, maybe of a new account, with or without activity."""
    u = _user(rng, world)
    account = rng.choice([*world.accounts, *world.accounts, "acc8"])
    n = _any_day(rng, world)
    out = [_group(u, account, day(n, 8), rng.choice(["admin", None]))]
    for _ in range(rng.randrange(3)):
        n2 = min(n + rng.randrange(3), world.last + 2)
        out.append(_activity(rng, {"user_id": u}, _when(rng, n2), rng.choice([account, None])))
    return out, []


def _new_account(rng, world):
    """Events of a brand new account, by a known user or a new one."""
    u = rng.choice([_user(rng, world), "u50"])
    out = []
    for _ in range(rng.randint(1, 3)):
        out.append(_activity(rng, {"user_id": u}, _when(rng, _any_day(rng, world)), "acc9"))
    return out, []


def _merge(rng, world):
    """An identify linking an anonymous id with history to a (known or new) user id, or an
    alias joining two known users."""
    when = day(_any_day(rng, world), 10)
    if world.unlinked and rng.random() < 0.7:
        a = rng.choice(world.unlinked)
        return [_identify(rng.choice([_user(rng, world), "u60"]), when, anonymous=a)], []
    one, other = _user(rng, world), rng.choice(world.users)
    if one == other:
        other = "u60"
    return [{"type": "alias", "previous_id": one, "user_id": other, "event_time": when}], []


def _consent(rng, world):
    """A user withdraws analytics consent, or one who had withdrawn gives it back (or sends a
    consent older than the withdrawal, which changes nothing)."""
    if world.opted_out and rng.random() < 0.6:
        u, n = world.opted_out[0]
        back = rng.randint(n + 1, world.last + 2) if rng.random() < 0.8 else n
        return [_identify(u, day(back, 7 if back > n else 5), consent_analytics=True)], []
    u = _user(rng, world)
    return [_identify(u, day(_any_day(rng, world), 11), consent_analytics=False)], []


def _late_billing(rng, world):
    """Billing rows taking effect on a stored date, or a new one."""
    rows = []
    for _ in range(rng.randint(1, 2)):
        n = rng.randrange(world.last + 2)
        rows.append((rng.choice(world.accounts), _when(rng, n), *rng.choice(PLAN_ROWS)))
    return [], rows


ARRIVALS = {
    "late": _late_events,
    "long_session": _in_a_long_session,
    "new_dates": _new_dates,
    "activation": _earlier_activation,
    "role": _role_change,
    "membership": _membership,
    "new_account": _new_account,
    "merge": _merge,
    "consent": _consent,
    "billing": _late_billing,
}


def arrival(rng: random.Random, world: World, kind: str) -> tuple[list[str], list[dict], list]:
    """`kind` of arrival mixed with up to two others: the kinds, the events and billing rows."""
    others = rng.choice([0, 0, 1, 2])
    kinds = [kind, *rng.sample(sorted(set(ARRIVALS) - {kind}), others)]
    events, bill = [], []
    for k in kinds:
        more_events, more_bill = ARRIVALS[k](rng, world)
        events += more_events
        bill += more_bill
    _name_accounts(world, events)
    return kinds, labelled(events), bill


# ---------------------------------------------------------------- the update, as the asset runs it


def _opted_out(events: pl.LazyFrame, identity_map: pl.DataFrame) -> pl.DataFrame:
    consent = user_consent(events, identity_map)
    return consent.filter(~pl.col("consent_analytics")).select("canonical_user_id").collect()


def whole(rows: list[dict], bill: pl.LazyFrame, opted_out: pl.DataFrame) -> ActivityTables:
    """The full build of `rows`, without the users who withdrew analytics consent (`opted_out`,
    of a full identity build of `rows`)."""
    if opted_out.is_empty():
        return full_tables(rows, bill)
    attributed, _, members = pipeline(rows)
    consenting = attributed.join(opted_out.lazy(), on="canonical_user_id", how="anti")
    built = activity_tables(consenting, members, bill, CAT, PLANS, CFG)
    return ActivityTables(*(rows.frame for rows in built))


@dataclass
class Update:
    """What the activity asset reads for one arrival on the stored tables of `base`, and the
    full build of all rows that the update must equal."""

    existing: ActivityTables
    want: ActivityTables
    attributed: pl.LazyFrame
    members: pl.LazyFrame
    bill: pl.LazyFrame
    activations: pl.LazyFrame
    arrived: pl.LazyFrame
    dates: list[date]
    billing_from: date | None
    users: pl.Series
    identity_map: pl.DataFrame

    def run(self, *, arrived: bool, activations: bool, identity_map: bool) -> ActivityTables:
        return update(
            self.existing, self.attributed, self.members, self.bill, CAT, PLANS, CFG,
            self.activations if activations else None, dates=self.dates,
            billing_from=self.billing_from, arrived=self.arrived if arrived else None,
            changed_users=self.users, identity_map=self.identity_map if identity_map else None,
        )  # fmt: skip


def prepare(
    base: list[dict], late: list[dict], base_bill: list[tuple], late_bill: list[tuple]
) -> Update:
    before_bill, bill = billing(base_bill), billing(base_bill + late_bill)
    base_events, arrived, all_events = (
        make_events(base),
        make_events(late),
        make_events(base + late),
    )
    before, _ = update_identity(None, base_events, CFG.identity)
    now, _ = update_identity(before, arrived, CFG.identity)
    full, _ = update_identity(None, all_events, CFG.identity)
    ids = ["id", "canonical_user_id"]
    assert now.identity_map.select(ids).sort("id").equals(full.identity_map.select(ids).sort("id"))
    opted_out, opted_out_before = (
        _opted_out(all_events, now.identity_map),
        _opted_out(base_events, before.identity_map),
    )
    attributed, _, members = pipeline(base + late)
    attributed = attributed.join(opted_out.lazy(), on="canonical_user_id", how="anti")
    changed_ids, users = changed_users(
        before.identity_map.select(ids), now.identity_map.select(ids), opted_out_before, opted_out
    )
    # what the asset keeps: each id's first activation, merged with the arrived events'
    candidates = activation_candidates(
        pl.concat(
            [
                activation_candidates(base_events, CAT).collect().lazy(),
                arrived.select(ACTIVATION_COLUMNS),
            ]
        ),
        CAT,
    )
    activations = first_activations(
        attribute_events(candidates, now.identity_map, members).join(
            opted_out.lazy(), on="canonical_user_id", how="anti"
        ),
        CAT,
    )
    existing = whole(base, before_bill, opted_out_before)
    theirs = attributed.join(arrived.select("event_id"), on="event_id", how="semi")
    reached = changes_from(theirs, existing.sessions.lazy(), CFG.sessions)
    return Update(
        existing=existing,
        want=whole(base + late, bill, _opted_out(all_events, full.identity_map)),
        attributed=attributed,
        members=members,
        bill=bill,
        activations=activations.collect().lazy(),
        arrived=arrived,
        dates=affected_dates(
            arrived,
            changed_ids,
            id_dates(base_events, arrived),
            reached,
            sessions=existing.sessions.lazy(),
            users=users,
        ),
        billing_from=billing_changed_from(before_bill.collect(), bill.collect()),
        users=users,
        identity_map=now.identity_map,
    )


VARIANTS = [
    {"arrived": False, "activations": False, "identity_map": False},
    {"arrived": False, "activations": True, "identity_map": False},
    {"arrived": True, "activations": False, "identity_map": False},
    {"arrived": True, "activations": True, "identity_map": True},
]


def difference(got: ActivityTables, want: ActivityTables) -> str:
    """Which rows of which tables differ (by key), and in which columns: a failure's summary."""
    found = []
    for name, keys in TABLE_KEYS.items():
        a, b = getattr(got, name), getattr(want, name)
        only_got = a.join(b, on=a.columns, how="anti", nulls_equal=True)
        only_want = b.join(a, on=a.columns, how="anti", nulls_equal=True)
        both = only_got.join(only_want, on=keys, suffix="_want")
        columns = [
            c
            for c in a.columns
            if c not in keys and not both[c].eq_missing(both[f"{c}_want"]).all()
        ]
        for what, rows in (
            ("missing", only_want.join(only_got, on=keys, how="anti")),
            ("extra", only_got.join(only_want, on=keys, how="anti")),
            (f"differ in {columns}", both),
        ):
            if rows.height:
                first = rows.sort(keys).select(keys).rows()[:3]
                found.append(f"{name}: {rows.height} rows {what}, e.g. {first}")
    return "; ".join(found)


def check(base, late, base_bill=(), late_bill=(), variants=VARIANTS, label="") -> None:
    """Every variant of the update of `base`'s stored tables for the `late` rows (labelled) and
    billing rows equals the full build of all rows; the failing variants are named."""
    ready = prepare(base, late, list(base_bill), list(late_bill))
    failed = []
    for variant in variants:
        got = ready.run(**variant)
        try:
            assert_tables_equal(got, ready.want)
        except AssertionError:
            failed.append(f"{variant}: {difference(got, ready.want)}")
    assert not failed, "\n".join([label, *failed])


SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(ARRIVALS))
def test_random_update_equals_full_build(kind, seed):
    """A random world, and an arrival of `kind` mixed with up to two other kinds."""
    rng = random.Random(f"{kind}-{seed}")
    world = base_world(rng)
    kinds, late, late_bill = arrival(rng, world, kind)
    check(world.rows, late, world.bill, late_bill, label=f"arrival: {kinds}")


# ---------------------------------------------------------------- what the random scenarios found


def test_an_opted_out_users_late_membership_adds_account_rows_the_update_leaves_out():
    """u2 has withdrawn analytics consent; a group call arrives late putting u2 in acc2 on
    day 2. account_daily's grid comes from memberships, which count users without consent
    too, so the full build has acc2 rows from day 2. The update with `arrived` (the arrived
    events attributed without users who withheld consent, as the asset passes them) finds no
    touched user, so no touched account: acc2's rows on the stored days 2-4 are missing (only
    the variants with arrived fail). The same happens when such a user's late event moves an
    existing account's first membership earlier."""
    base = [track("u1", "Feature Used", day(n), "acc1", feature="sso") for n in range(5)]
    base.append(_identify("u2", day(0, 6), consent_analytics=False))
    check(base, labelled([_group("u2", "acc2", day(2))]))


def test_a_session_starting_on_the_last_rebuilt_date_keeps_its_events_after_midnight():
    """u5's session starts at 23:59 on day 29 and goes on at 00:11 on day 30. A late event on
    day 2 (no new dates) rebuilds days 1 to 2 + 27 = 29; the rebuild sessionizes only the
    events up to day 29, so the session loses its 00:11 event: sessions (session_end, events,
    duration_s) and session_seconds of u5's user_daily and acc1's account_daily on day 29
    differ from the full build. u5's own late event makes every variant fail; another user's
    would make only the ones without arrived fail (they rebuild every user of those dates)."""
    base = [
        track("u1", "Feature Used", day(0), "acc1", feature="sso"),
        track("u1", "Feature Used", day(40), "acc1", feature="sso"),
        track("u5", "Feature Used", day(29, 23, 59), "acc1", feature="sso"),
        track("u5", "Report Exported", day(30, 0, 11), "acc1"),
    ]
    check(base, labelled([track("u5", "Report Exported", day(2), "acc1")]))


def test_a_late_membership_moves_account_less_events_past_the_rebuilt_dates():
    """u1's events carry no account and are attributed through u1's membership of acc1 (from
    day 0). A group call arrives late that puts u1 in acc2 on day 10: from then on u1's events
    count for acc2, on every later date. Only the group call's own date is affected, so the
    update rebuilds days 9 to 10 + 27 = 37: u1's stored sessions and user-days past day 37 stay
    in acc1, with acc1's and acc2's account_daily counts (events, active users, sessions,
    features) on those dates, and acc2's wau/mau after day 37 miss u1's days inside the
    rebuilt range (an explicit-account event arriving late, which also starts a membership,
    does the same)."""
    base = [_group("u1", "acc1", day(0, 1)), _group("u2", "acc2", day(0, 1))]
    base += [track("u1", "Feature Used", day(n), None, feature="sso") for n in (0, 20, 36, 45)]
    base.append(track("u2", "Feature Used", day(45), "acc2", feature="sso"))
    check(base, labelled([_group("u1", "acc2", day(10))]))


def test_seat_utilisation_of_kept_rows_is_the_float_a_full_build_gives():
    """acc1 is on a 10-seat plan and has 3 weekly users: seat_utilisation 3 / 10 = 0.3. A late
    event of u9 in acc2 touches only acc2, so acc1's rows of the rebuilt dates are kept and
    re-priced (`_recounted` -> `_with_billing`). In that frame every row's seats comes from
    the same billing row, and Polars (2.1) computes some of the quotients wau / seats as
    wau * (1 / seats): 3 * 0.1 = 0.30000000000000004. The full build, where acc2's rows have
    other seats, divides exactly: account_daily's seat_utilisation differs in the last bit on
    acc1's kept days 1 and 2 (only the variants with arrived fail)."""
    base = [
        track(u, "Feature Used", day(n), "acc1", feature="sso")
        for u in ("u1", "u2", "u3")
        for n in range(4)
    ]
    base += [track("u9", "Feature Used", day(n), "acc2", feature="sso") for n in range(4)]
    bill = [("acc1", day(0, 0), "pro", 10, 150.0)]
    check(base, labelled([track("u9", "Report Exported", day(2), "acc2")]), bill)


def test_a_late_membership_moves_account_less_days_whose_windows_reach_past_the_rebuilt_dates():
    """As in test_a_late_membership_moves_account_less_events_past_the_rebuilt_dates, but u1's
    account-less events after the late link (day 35) fall inside the rebuilt days 9 to 37 and
    none after them (found at a04dd24, after that test's fix): day 35 is rebuilt in acc2, yet the
    wau and mau windows of day 35 reach days 38-41 and 38-45 (the last day), whose stored
    account_daily rows still count u1 in acc1 and not in acc2 (wau, mau, seat_utilisation of
    both accounts on days 38-45 differ; every variant fails)."""
    base = [_group("u1", "acc1", day(0, 1)), _group("u2", "acc2", day(0, 1))]
    base += [track("u1", "Feature Used", day(n), None, feature="sso") for n in (0, 35)]
    base.append(track("u2", "Feature Used", day(45), "acc2", feature="sso"))
    check(base, labelled([_group("u1", "acc2", day(10))]))


def test_a_merge_into_a_user_with_a_session_longer_than_a_day_rebuilds_that_session():
    """Found by hand. u47's session runs from day 4 to day 7; a9's event at 12:10 on day 7
    falls between two of its events. An identify on day 20 merges a9 into u47, and u47's rows
    are rebuilt from the day before a9's first event (day 6), where the session had not
    started: the affected dates reach back to day 4, so that it is rebuilt whole and counts
    a9's event."""
    base = [
        *random_rows(16),
        *long_session("u47", day(4, 0), 4),
        _activity(random.Random(0), {"anonymous_id": "a9"}, day(7, 12, 10), "acc1"),
    ]
    check(base, labelled([_identify("u47", day(20, 10), anonymous="a9")]))
