"""user_daily and account_daily (ARCHITECTURE.md "activity"), in full or for a range of dates.

Counts come from attributed events (identity.attribute_events) of the activity types; event
names map to roles through the event catalog, feature tiers through the plan catalog. Rolling
WAU / MAU count distinct users without exploding every user-day into 7 or 28 rows: each active
day opens an interval that lasts until the window ends or the user's next active day, so the
intervals of one user never overlap and the active count on any date is a running sum of
+1 / -1 marks. Late events only change the dates they fall on and the windows covering them,
which is what `activity_tables` recomputes and splices in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
from pydantic import Field

from plg_pipeline.lib import lake
from plg_pipeline.lib.catalog import EventCatalog, Role
from plg_pipeline.lib.configfile import StrictModel, config_path, load_config
from plg_pipeline.lib.identity import IdentityConfig, identity_key, latest
from plg_pipeline.lib.plans import LIMIT_NAMES, PlanCatalog
from plg_pipeline.lib.sessions import SessionConfig, sessionize


class ActivityConfig(StrictModel):
    identity: IdentityConfig = IdentityConfig()
    sessions: SessionConfig = SessionConfig()
    wau_days: int = Field(default=7, ge=1)
    mau_days: int = Field(default=28, ge=1)
    admin_roles: list[str] = ["admin"]


def load_activity_config(config_dir: Path | str | None = None) -> ActivityConfig:
    return load_config(config_path("activity.yaml", config_dir), ActivityConfig)


_COUNTED_ROLES = {
    "gated_feature_views": "gated_feature_viewed",
    "limit_hits": "limit_reached",
    "invites_sent": "invite_sent",
    "invites_accepted": "invite_accepted",
    "integrations_connected": "integration_connected",
    "exports": "report_exported",
    "shares": "report_shared",
    "admin_page_views": "admin_page_viewed",
    "pricing_page_views": "pricing_page_viewed",
    "prompt_views": "prompt_viewed",
    "prompt_clicks": "prompt_clicked",
    "prompt_dismissals": "prompt_dismissed",
}


_ROLES = pl.Enum(Role.__args__)
_ZERO_FILLED = ("session_seconds", "api_calls")
"""Float sums that are 0 on a day without activity (integer counts are zero-filled too)."""


def _exact_sum(column: str) -> pl.Expr:
    """Sum in millionths (durations in microseconds, usage quantities): a float sum depends on
    thread and row order, and reruns and incremental builds must give identical tables."""
    return (pl.col(column) * 1_000_000).round().cast(pl.Int64).sum() / 1_000_000


def _is(role: str) -> pl.Expr:
    return pl.col("_role") == role


def _flags(cfg: ActivityConfig) -> dict[str, pl.Expr]:
    """Per-event flags (and readings) that the daily tables count or max.

    Computed once per event so that the group-bys run plain sums, Polars' fast path, rather
    than a filter per group and figure; booleans, not 0/1 integers, an eighth of the memory to
    sum (10M events, the per-user figures: 2.4 -> 1.95 s).
    """
    limit = _is("limit_reached")
    usage = _is("usage_reported")
    return {
        **{col: _is(role) for col, role in _COUNTED_ROLES.items()},
        **{f"limit_hits_{name}": limit & (pl.col("limit_name") == name) for name in LIMIT_NAMES},
        "admin_invites_sent": _is("invite_sent") & pl.col("role").is_in(cfg.admin_roles),
        "signed_up": _is("signup"),
        "max_limit_utilisation": pl.when(limit & (pl.col("allowed") > 0)).then(
            pl.col("used") / pl.col("allowed")
        ),
        "api_calls": pl.when(usage & (pl.col("limit_name") == "api_calls")).then("quantity"),
        "storage_gb": pl.when(usage & (pl.col("limit_name") == "storage_gb")).then("quantity"),
    }


_READINGS = ("max_limit_utilisation", "storage_gb", "api_calls")


def _totals(sums: list[str]) -> list[pl.Expr]:
    return [
        pl.col(sums).sum().cast(pl.Int64),  # a sum over no values is 0, never null
        _exact_sum("api_calls"),
        pl.col("max_limit_utilisation", "storage_gb").max(),
    ]


_FLAGGED_ROLES = (*_COUNTED_ROLES.values(), "signup", "usage_reported")
"""The roles some flag or reading of `_flags` needs: every other event (2 in 3 at 10M: features
used, pages) only counts as an event."""


def _aggregate(ev: pl.LazyFrame, keys: list[str], cfg: ActivityConfig) -> pl.LazyFrame:
    """Events, counts and readings per `keys` (storage is a level: the day's highest reading).

    The flags are taken and summed over the events of `_FLAGGED_ROLES` only, joined to the
    event counts of all (10M events, the per-user figures: 2.28 -> 1.74 s).
    """
    flags = _flags(cfg)
    sums = [c for c in flags if c not in _READINGS]
    counts = ev.group_by(keys).agg(pl.len().cast(pl.Int64).alias("events"))
    flagged = (
        ev.filter(pl.col("_role").is_in(_FLAGGED_ROLES))
        .with_columns(**flags)
        .group_by(keys)
        .agg(*_totals(sums))
    )
    return counts.join(flagged, on=keys, how="left").with_columns(
        pl.col(sums).fill_null(0), pl.col("api_calls").fill_null(0.0)
    )


def _rolled_up(finer: pl.LazyFrame, keys: list[str], cfg: ActivityConfig) -> pl.LazyFrame:
    """`_aggregate` figures of finer groups taken up to `keys`: the same as `_aggregate` of their
    events (the exact sum stays exact, its parts being whole millionths), from far fewer rows."""
    sums = ["events", *(c for c in _flags(cfg) if c not in _READINGS)]
    return finer.group_by(keys).agg(*_totals(sums))


def _feature_tier(plans: PlanCatalog) -> pl.Expr:
    """The used feature's tier: the plan catalog's first (it is the truth); else the event's own
    tier property, as a plan name or a number; else an ungated feature."""
    plan_tiers = {p.name: p.tier for p in plans.plans}
    gated = {feature: plan_tiers[plan] for feature, plan in plans.gated_features.items()}
    return pl.coalesce(
        pl.col("feature").replace_strict(gated, default=None, return_dtype=pl.Int64),
        pl.col("tier").replace_strict(plan_tiers, default=None, return_dtype=pl.Int64),
        pl.col("tier").cast(pl.Int64, strict=False),
        pl.lit(0, pl.Int64),
    )


def _feature_tiers(ev: pl.LazyFrame, keys: list[str], plans: PlanCatalog) -> pl.LazyFrame:
    """One row per `keys` x feature used, with its highest tier seen (`_tier`). Tiers are
    looked up after the filter, on feature events only, and before the group-by: inside its
    aggregation they were taken group by group (10M events: 1.8 -> 0.9 s)."""
    return (
        ev.filter(_is("feature_used") & pl.col("feature").is_not_null())
        .with_columns(_tier=_feature_tier(plans))
        .group_by(*keys, "feature")
        .agg(pl.col("_tier").max())
    )


def _feature_counts(
    features: pl.LazyFrame, keys: list[str], plans: PlanCatalog, per_tier: bool
) -> pl.LazyFrame:
    """Distinct features used per `keys`, from their `_feature_tiers`: all, premium (tier > 0)
    and, if `per_tier`, per tier."""
    tier = pl.col("_tier")
    tiers = [p.tier for p in plans.plans] if per_tier else []
    return features.group_by(keys).agg(
        distinct_features=pl.len().cast(pl.Int64),
        premium_features=(tier > 0).sum().cast(pl.Int64),
        **{f"features_tier_{t}": (tier == t).sum().cast(pl.Int64) for t in tiers},
    )


def _activity_events(
    attributed: pl.LazyFrame,
    catalog: EventCatalog,
    cfg: ActivityConfig,
    dates: tuple[date, date] | None,
) -> pl.LazyFrame:
    """Attributed activity events with their catalog role."""
    ev = attributed.filter(
        pl.col("canonical_user_id").is_not_null()
        & pl.col("account_id").is_not_null()
        & pl.col("type").is_in(cfg.sessions.activity_types)
    )
    if dates is not None:
        ev = ev.filter(pl.col("event_date").is_between(*dates))
    names = {name: role for role, name in catalog.roles.items()}
    return ev.with_columns(
        # an Enum: the many role tests below compare small integers, not strings
        _role=pl.col("event_name").replace_strict(names, default=None, return_dtype=_ROLES),
    )


_USER_KEYS = ["canonical_user_id", "account_id", "date"]


class _PerUser(NamedTuple):
    """Activity events taken per canonical user x account x date: their figures (`_aggregate`)
    and the features used (`_feature_tiers`). user_daily is made of them and account_daily
    rolled up from them, so that both tables built together compute them once."""

    figures: pl.LazyFrame
    features: pl.LazyFrame


def _per_user(
    attributed: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    dates: tuple[date, date] | None,
) -> _PerUser:
    ev = _activity_events(attributed, catalog, cfg, dates).rename({"event_date": "date"})
    return _PerUser(_aggregate(ev, _USER_KEYS, cfg), _feature_tiers(ev, _USER_KEYS, plans))


ATTRIBUTED_COLUMNS = (
    "event_id", "type", "event_name", "user_id", "anonymous_id", "canonical_user_id",
    "account_id", "event_time", "event_date", "role", "feature", "tier", "limit_name",
    "used", "allowed", "quantity",
)  # fmt: skip
"""The columns of attributed events that sessions, user_daily and account_daily read."""
ACTIVATION_COLUMNS = (
    "event_id", "type", "event_name", "user_id", "anonymous_id", "account_id", "event_time",
    "event_date",
)  # fmt: skip


def activation_candidates(events: pl.LazyFrame, catalog: EventCatalog) -> pl.LazyFrame:
    """Each id's earliest activation event, in ACTIVATION_COLUMNS.

    A user's first activation is the earliest among their ids' earliest ones, so these few
    rows stand in for the whole history: a new day merges in as
    `activation_candidates(concat([stored, new_events]))`, and attributing them gives what
    `first_activations` of all attributed events gives.
    """
    return latest(
        events.filter(pl.col("event_name") == catalog.event("activation"))
        .select(ACTIVATION_COLUMNS)
        .with_columns(_id=identity_key()),
        ["_id"],
        first=True,
    ).drop("_id")


def first_activations(attributed: pl.LazyFrame, catalog: EventCatalog) -> pl.LazyFrame:
    """Each user's first activation event ever: its date and the account it counted for."""
    order = ("event_time", "event_id")
    return (
        attributed.filter(
            (pl.col("event_name") == catalog.event("activation"))
            & pl.col("canonical_user_id").is_not_null()
        )
        .group_by("canonical_user_id")
        .agg(
            activation_date=pl.col("event_date").sort_by(*order).first(),
            activation_account=pl.col("account_id").sort_by(*order).first(),
        )
    )


def user_daily(
    attributed: pl.LazyFrame,
    sessions: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    dates: tuple[date, date] | None = None,
    activations: pl.LazyFrame | None = None,
    per_user: _PerUser | None = None,
) -> pl.LazyFrame:
    """One row per canonical user x account x date with any activity event.

    `activations` (first_activations of all history) saves reading all events when only
    `dates` are built; `per_user` (`_per_user` of these events and dates), computing them.
    """
    if activations is None:
        activations = first_activations(attributed, catalog)
    if per_user is None:
        per_user = _per_user(attributed, catalog, plans, cfg, dates)
    keys = _USER_KEYS
    features = _feature_counts(per_user.features, keys, plans, per_tier=False).select(
        *keys, features_used="distinct_features", premium_features_used="premium_features"
    )
    per_day = per_user.figures.join(features, on=keys, how="left").with_columns(
        pl.col("features_used", "premium_features_used").fill_null(0),
        signed_up=pl.col("signed_up") > 0,
    )
    session_days = (
        sessions.filter(pl.col("account_id").is_not_null())
        .group_by("canonical_user_id", "account_id", date="session_date")
        .agg(sessions=pl.len().cast(pl.Int64), session_seconds=_exact_sum("duration_s"))
    )
    return (
        per_day.join(session_days, on=keys, how="left")
        .with_columns(pl.col("sessions").fill_null(0), pl.col("session_seconds").fill_null(0.0))
        .pipe(_with_user_flags, account_memberships, activations, cfg)
    )


def _with_user_flags(
    frame: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    activations: pl.LazyFrame,
    cfg: ActivityConfig,
) -> pl.LazyFrame:
    """is_admin and activated: they follow the user's latest role and first activation, which
    later data can change, not the day's own events."""
    return (
        frame.pipe(_with_admin, account_memberships, cfg)
        .join(activations.select("canonical_user_id", "activation_date"), on="canonical_user_id",
              how="left")
        .with_columns(activated=(pl.col("activation_date") <= pl.col("date")).fill_null(False))
        .drop("activation_date")
    )  # fmt: skip


def _admins(account_memberships: pl.LazyFrame, cfg: ActivityConfig) -> pl.LazyFrame:
    return (
        account_memberships.lazy()
        .filter(pl.col("role").is_in(cfg.admin_roles))
        .select("canonical_user_id", "account_id", is_admin=pl.lit(True))
    )


def _with_admin(
    frame: pl.LazyFrame, account_memberships: pl.LazyFrame, cfg: ActivityConfig
) -> pl.LazyFrame:
    """is_admin: the user's latest role in the account is an admin role (on every date)."""
    return frame.join(
        _admins(account_memberships, cfg), on=["canonical_user_id", "account_id"], how="left"
    ).with_columns(pl.col("is_admin").fill_null(False))


def _rolling_marks(
    presence: pl.LazyFrame, windows: dict[str, int], since: pl.Expr | None = None
) -> pl.LazyFrame:
    """+1/-1 marks per account x date whose running sum is the distinct users in each window.

    With `since` (each account's first date, over account_id) the marks before it are added
    to it, so that a running sum starting there needs no earlier dates.
    """
    # each user's next active day in the account: the next row's, once sorted, if it is theirs
    # (a window over the pair grouped again what the sort had just put together: 10M events,
    # 613k user-days, 0.21 -> 0.14 s)
    following = [pl.col(c).shift(-1) for c in ("account_id", "canonical_user_id", "date")]
    theirs = (pl.col("account_id") == following[0]) & (pl.col("canonical_user_id") == following[1])
    presence = presence.sort("account_id", "canonical_user_id", "date").with_columns(
        _next=pl.when(theirs).then(following[2])
    )
    opens = presence.select("account_id", "date", **{col: pl.lit(1) for col in windows})
    closes = [
        presence.select(
            "account_id",
            date=pl.min_horizontal("_next", pl.col("date") + timedelta(days=days)),
            **{other: pl.lit(-1 if other == col else 0) for other in windows},
        )
        for col, days in windows.items()
    ]
    marks = pl.concat([opens, *closes])
    if since is not None:
        marks = marks.with_columns(pl.max_horizontal("date", since))
    return marks.group_by("account_id", "date").agg(pl.col(list(windows)).sum())


def _with_members(frame: pl.LazyFrame, account_memberships: pl.LazyFrame) -> pl.LazyFrame:
    """members: distinct users linked to the account on or before each date."""
    counts = (
        account_memberships.lazy()
        .group_by("account_id", date=pl.col("valid_from").dt.date())
        .agg(members=pl.len())
        .sort("account_id", "date")
        .with_columns(pl.col("members").cum_sum().over("account_id").cast(pl.Int64))
        .sort("date")
    )
    return (
        frame.sort("date")
        .join_asof(counts, on="date", by="account_id", check_sortedness=False)
        .with_columns(pl.col("members").fill_null(0))
    )


_BILLING_COLUMNS = ("plan", "plan_tier", "seats", "mrr", "seat_utilisation")


def _with_billing(
    frame: pl.LazyFrame, billing_events: pl.LazyFrame, plans: PlanCatalog
) -> pl.LazyFrame:
    """plan, plan_tier, seats, mrr, seat_utilisation from the latest billing row by each day's end.

    Accounts without billing are on the lowest plan with no MRR and as many seats as members.
    """
    latest = (
        billing_events.lazy()
        .sort("account_id", "occurred_at", "event_id")
        .group_by("account_id", "occurred_at")
        .agg(pl.col("plan", "seats", "mrr").last())
        .sort("occurred_at")
    )
    day_end = (pl.col("date") + timedelta(days=1)).cast(pl.Datetime("us", "UTC")) - timedelta(
        microseconds=1
    )
    tiers = {p.name: p.tier for p in plans.plans}
    return (
        frame.with_columns(_day_end=day_end)
        .sort("_day_end")
        .join_asof(
            latest,
            left_on="_day_end",
            right_on="occurred_at",
            by="account_id",
            check_sortedness=False,
        )
        .with_columns(
            plan=pl.col("plan").fill_null(plans.plans[0].name),
            seats=pl.col("seats").fill_null(pl.col("members")).cast(pl.Int64),
            mrr=pl.col("mrr").fill_null(0.0),
        )
        .with_columns(
            plan_tier=pl.col("plan").replace_strict(tiers, default=None, return_dtype=pl.Int64),
            seat_utilisation=pl.when(pl.col("seats") > 0).then(_quotient("wau", "seats")),
        )
        .drop("_day_end", "occurred_at")
    )


def _quotient(numerator: str, denominator: str) -> pl.Expr:
    """numerator / denominator, row by row. Polars (2.1) multiplies by the reciprocal when the
    divisor is one repeated value (3 / 10 -> 0.30000000000000004), which a join can leave
    behind; through a struct's fields it divides, so an update and a full build agree."""
    pair = pl.struct(numerator, denominator)
    return pair.struct.field(numerator) / pair.struct.field(denominator)


def account_daily(
    attributed: pl.LazyFrame,
    sessions: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    billing_events: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    dates: tuple[date, date] | None = None,
    activations: pl.LazyFrame | None = None,
    presence: pl.LazyFrame | None = None,
    first_row: pl.Expr | None = None,
    per_user: _PerUser | None = None,
) -> pl.LazyFrame:
    """account_daily: every account x date from its first event to the last date in the data.

    With `dates` (first, last) only those dates are built, and with `first_row` (an expression
    over account_id: the first date, in `dates`, of each account's rows) only each account's
    rows from then on. The rolling counts need who was active in the MAU window before: `presence`
    (user_daily's account, user and date columns) gives it; without it those days' events are
    read again. `activations` and `per_user` are as in user_daily (`per_user` of the dates
    read: with the MAU window before `dates` when there is no `presence`).
    max_limit_utilisation and storage_gb stay null on days without a reading (no reading is not
    a zero).
    """
    members = account_memberships.lazy()
    if activations is None:
        activations = first_activations(attributed, catalog)
    last = dates[1] if dates else attributed.select(pl.col("event_date").max()).collect().item()
    lookback = (dates[0] - timedelta(days=cfg.mau_days - 1), dates[1]) if dates else None
    windows = {"active_users": 1, "wau": cfg.wau_days, "mau": cfg.mau_days}

    firsts = members.group_by("account_id").agg(_first=pl.col("valid_from").min().dt.date())
    since = None
    if dates:
        since = pl.lit(dates[0]) if first_row is None else pl.max_horizontal(first_row, dates[0])
    grid_start = pl.col("_first") if since is None else pl.max_horizontal("_first", since)
    grid = (
        firsts.filter(pl.col("_first") <= last)
        .select("account_id", date=pl.date_ranges(grid_start, pl.lit(last)))
        .explode("date")
    )
    keys = ["account_id", "date"]
    window = presence is None  # the events of the MAU window before `dates` give who was active
    if per_user is None:
        per_user = _per_user(attributed, catalog, plans, cfg, lookback if window else dates)
    figures, features = per_user
    if window:
        presence = figures.select(_PRESENCE)
        if dates:
            figures, features = (f.filter(pl.col("date") >= dates[0]) for f in per_user)
    elif lookback is not None:
        presence = presence.filter(pl.col("date").is_between(*lookback))
    rolling = (
        grid.join(_rolling_marks(presence, windows, since), on=["account_id", "date"], how="left")
        .with_columns(pl.col(list(windows)).fill_null(0))
        .sort("account_id", "date")
        .with_columns(pl.col(list(windows)).cum_sum().over("account_id").cast(pl.Int64))
    )
    session_days = sessions.group_by("account_id", date="session_date").agg(
        sessions=pl.len().cast(pl.Int64), session_seconds=_exact_sum("duration_s")
    )
    features = features.group_by(*keys, "feature").agg(pl.col("_tier").max())
    frame = (
        _with_members(rolling, members)
        .join(_rolled_up(figures, keys, cfg), on=keys, how="left")
        .join(_feature_counts(features, keys, plans, per_tier=True), on=keys, how="left")
        .join(session_days, on=keys, how="left")
        .join(_activation_counts(activations), on=keys, how="left")
    )
    counts = [
        c for c, dtype in frame.collect_schema().items() if dtype.is_integer() or c in _ZERO_FILLED
    ]
    frame = frame.with_columns(pl.col(counts).fill_null(0))
    return _with_billing(frame, billing_events, plans).select(_column_order(plans)).sort(keys)


def _activation_counts(activations: pl.LazyFrame) -> pl.LazyFrame:
    return activations.group_by(account_id="activation_account", date="activation_date").agg(
        activations=pl.len().cast(pl.Int64)
    )


def _column_order(plans: PlanCatalog) -> list[str]:
    return [
        "account_id", "date", "plan", "plan_tier", "seats", "mrr", "active_users", "wau", "mau",
        "members", "events", "sessions", "session_seconds", "seat_utilisation",
        "distinct_features", "premium_features", *[f"features_tier_{p.tier}" for p in plans.plans],
        "gated_feature_views", "limit_hits", *[f"limit_hits_{n}" for n in LIMIT_NAMES],
        "max_limit_utilisation", "api_calls", "storage_gb", "invites_sent", "invites_accepted",
        "admin_invites_sent", "activations", "integrations_connected", "exports", "shares",
        "admin_page_views", "pricing_page_views", "prompt_views", "prompt_clicks",
        "prompt_dismissals",
    ]  # fmt: skip


def affected_dates(
    new_events: pl.LazyFrame,
    changed_ids: pl.DataFrame | None = None,
    id_dates: pl.DataFrame | pl.LazyFrame | None = None,
    reached: pl.LazyFrame | None = None,
    *,
    sessions: pl.LazyFrame | None = None,
    users: Iterable[str] = (),
) -> list[date]:
    """Event dates whose figures new data may change: the new events' own dates, plus the
    first and last date on which one of `changed_ids` (an "id" column) has events, from
    `id_dates` (the identity facts' "dates": id, first_date, last_date): ids relabelled (a
    merge turns two active users into one) or whose consent changed, plus the `reached` dates
    (`changes_from` of the new events: where a stored session they may join started, however
    long it ran). Each with the day before: an event may belong to a session that started
    then, which that day holds (`_touched` narrows this to the users whose sessions can).
    Dates in between need no listing, as a rebuild runs from the first to past the last, and
    the facts hold two dates per id: the cost does not grow with history. Given the stored
    `sessions` and `users` (`changed_users`: rebuilt from the first date), they reach back to
    the start of any session of those users that ran into the first date from before: a
    merged id's events may join it.
    """
    parts = [new_events]
    if changed_ids is not None and id_dates is not None and changed_ids.height:
        theirs = id_dates.lazy().join(changed_ids.lazy().select("id"), on="id", how="semi")
        parts += [theirs.select(event_date=side) for side in ("first_date", "last_date")]
    if reached is not None:
        parts.append(reached.select(event_date="changes"))
    found = pl.concat(
        [
            *(part.select("event_date") for part in parts),
            *(part.select(pl.col("event_date") - timedelta(days=1)) for part in parts),
        ]
    )
    dates = sorted(found.unique().drop_nulls().collect()["event_date"].to_list())
    users = pl.Series(list(users), dtype=pl.String).implode()
    while dates and sessions is not None:
        start = (
            sessions.filter(
                pl.col("canonical_user_id").is_in(users)
                & (pl.col("session_date") < dates[0])
                # on the column itself, so that the files' statistics skip older sessions
                & (pl.col("session_end") >= pl.lit(dates[0]).cast(pl.Datetime("us", "UTC")))
            )
            .select(pl.col("session_date").min())
            .collect()
            .item()
        )
        if start is None:
            break
        dates = [start, *dates]
    return dates


def changed_users(
    identity_before: pl.DataFrame,
    identity_now: pl.DataFrame,
    opted_out_before: pl.DataFrame,
    opted_out_now: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.Series]:
    """Users whose rows change on every date they have: ids relabelled between the two identity
    maps (id, canonical_user_id), and users who withdrew or gave analytics consent. Returns
    their raw ids (for `affected_dates`) and canonical ids, old and new (for `activity_tables`).
    """
    relabelled = identity_before.join(identity_now, on="id", suffix="_now").filter(
        pl.col("canonical_user_id") != pl.col("canonical_user_id_now")
    )
    consent = pl.concat(
        [f.select("canonical_user_id") for f in (opted_out_before, opted_out_now)]
    ).filter(pl.len().over("canonical_user_id") == 1)
    ids = pl.concat(
        [
            relabelled.select("id"),
            *(
                i.join(consent, on="canonical_user_id").select("id")
                for i in (identity_before, identity_now)
            ),
        ]
    ).unique()
    users = pl.concat(
        [
            relabelled["canonical_user_id"],
            relabelled["canonical_user_id_now"],
            consent["canonical_user_id"],
        ]
    ).unique()
    return ids, users


def rebuild_note(account_daily: pl.DataFrame, changed_users: Iterable[str]) -> str:
    """What an update rebuilt (its account_daily rows) and whether `changed_users` sent it back:
    the answer to "why did one new day rewrite a month?". 10M, day 60: 17 user ids relabelled
    or with changed consent took it back 28 days, where the late events reached back 4: 29
    dates (activity tables 2.1-2.4 s, writes 0.45-0.49 s); with those ids left out, for the
    measurement only, 6 dates (1.5 s, 0.22 s)."""
    dates = account_daily["date"]
    note = f"{dates.n_unique()} date(s) rebuilt" + (f" from {dates.min()}" if dates.len() else "")
    users = len(set(changed_users))
    if users:
        note += f", {users} user id(s) relabelled or with changed consent (rebuilt from the first)"
    return note


def _after_midnight(sessions: SessionConfig) -> pl.Expr:
    """True for an event that may continue a session of the day before."""
    gap = timedelta(minutes=sessions.inactivity_gap_minutes)
    return pl.col("event_time") - pl.col("event_time").dt.truncate("1d") <= gap


def changes_from(
    arrived: pl.LazyFrame, stored_sessions: pl.LazyFrame, cfg: SessionConfig
) -> pl.LazyFrame:
    """(canonical_user_id, changes) of the arrived events that change a date before their own:
    those that may join a stored session started earlier, one that ran across midnight into
    their date or, within the gap after midnight, one of the day before (which may itself
    have run into that day from earlier). `changes` is that session's start date: it is then
    rebuilt whole, however many midnights it crossed. Only events up to the date the last
    stored session ends, or just after midnight of the next, can: only those are read.
    """
    day, end = pl.col("event_date"), pl.col("session_end")
    keys = ["canonical_user_id", "event_date"]
    none = pl.LazyFrame(schema={"canonical_user_id": pl.String, "changes": pl.Date})
    last = stored_sessions.select(end.max()).collect().item()
    if last is None:
        return none
    late = (
        arrived.filter(
            (day <= last.date()) | ((day == last.date() + timedelta(days=1)) & _after_midnight(cfg))
        )
        .select(*keys, "event_time")
        .collect()
    )
    if late.is_empty():
        return none
    since = pl.lit(late["event_date"].min() - timedelta(days=1)).cast(pl.Datetime("us", "UTC"))
    reach = (
        stored_sessions.filter((end >= since) & (end.dt.date() > pl.col("session_date")))
        .select(
            "canonical_user_id",
            "session_date",
            event_date=pl.date_ranges(pl.col("session_date") + timedelta(days=1), end.dt.date()),
        )
        .explode("event_date")
        .group_by("canonical_user_id", "event_date")
        .agg(_here=pl.col("session_date").min())
    )
    the_day_before = reach.select(
        "canonical_user_id", event_date=day + timedelta(days=1), _before=pl.col("_here")
    )
    after_midnight = pl.when(_after_midnight(cfg)).then(
        pl.min_horizontal(day - timedelta(days=1), "_before")
    )
    return (
        late.lazy()
        .join(reach, on=keys, how="left")
        .join(the_day_before, on=keys, how="left")
        .select(*keys, changes=pl.min_horizontal(day, "_here", after_midnight))
        .filter(pl.col("changes") < day)
        .drop("event_date")
        .collect()
        .lazy()
    )


def recompute_range(
    existing: pl.LazyFrame | pl.DataFrame,
    dates: Iterable[date],
    attributed: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    cfg: ActivityConfig,
    events: pl.LazyFrame | None = None,
    sessions: pl.LazyFrame | None = None,
) -> tuple[date, date] | None:
    """The (first, last) dates to rebuild after changes on `dates`; None when nothing changed.

    From the earliest affected date to the last date an affected MAU window reaches, or to
    the last date in the data when the data grew, an account appeared (their new rows run
    to the end) or a user with account-less events after the affected dates got a link between
    the first and the last of them (they may count for its account now, and their MAU windows
    reach on: `events`, attributed with account_source, default `attributed`, is read only
    then). `attributed` need only hold the events from the first affected date on. sessions
    and user_daily can be spliced over the same range; given the stored `sessions`, a range
    that ends before the last date reaches on to the day before a session starting in it ends
    (its events are read up to a day past the range), so that a session longer than a day is
    rebuilt whole. A range never starts after the day following the stored last date. Of the
    stored account_daily (`existing`) only the date column and the last date's accounts are
    read: every account has a row on the last date. Member counts may change after the range
    too: activity_tables recounts those stored rows.
    """
    dates = sorted(dates)
    if not dates:
        return None
    existing = existing.lazy()
    old_last = existing.select(pl.col("date").max()).collect().item()
    seen = attributed.select(pl.col("event_date").max()).collect().item()
    last = max(d for d in (seen, old_last) if d is not None)
    known = existing.filter(pl.col("date") == old_last).select("account_id")
    new_accounts = (
        account_memberships.lazy()
        .join(known, on="account_id", how="anti")
        .select(pl.len())
        .collect()
        .item()
    )
    grew = old_last is None or last > old_last or new_accounts > 0
    window_end = min(dates[-1] + timedelta(days=cfg.mau_days - 1), last)
    if not grew:
        # A link starting on an affected date (a late group call or first event in an account)
        # moves its user's account-less events after it to that account, on every later date.
        # Any date from the first to the last: `affected_dates` does not list those between.
        linked = (
            account_memberships.lazy()
            .filter(pl.col("valid_from").dt.date().is_between(dates[0], dates[-1]))
            .select("canonical_user_id")
        )
        # after the last affected date: the MAU windows of those events reach past window_end
        later = (events if events is not None else attributed).filter(
            (pl.col("event_date") > dates[-1]) & (pl.col("account_source") == "membership")
        )
        moved = (
            later.join(linked, on="canonical_user_id", how="semi").select(pl.len()).collect().item()
        )
        grew = moved > 0
    end = last if grew else window_end
    while sessions is not None and end < last:
        runs_to = (
            sessions.filter(pl.col("session_date").is_between(dates[0], end))
            .select(pl.col("session_end").max().dt.date())
            .collect()
            .item()
        )
        if runs_to is None or runs_to <= end + timedelta(days=1):
            break
        end = min(runs_to - timedelta(days=1), last)
    # dates without any event between the stored last date and the new ones: a full build has
    # every account's rows on them too (no activity, rolling windows still open)
    first = dates[0] if old_last is None else min(dates[0], old_last + timedelta(days=1))
    return first, end


def billing_changed_from(before: pl.DataFrame, now: pl.DataFrame) -> date | None:
    """The earliest date whose billing columns `now` changes: billing rows added or removed take
    effect from their own time on (they arrive late and out of order)."""
    keys = before.columns
    changed = pl.concat(
        [
            before.join(now, on=keys, how="anti", nulls_equal=True),
            now.join(before, on=keys, how="anti", nulls_equal=True),
        ]
    )
    first = changed["occurred_at"].min()
    return first.date() if first is not None else None


def first_date_read(dates: Iterable[date]) -> date:
    """The earliest event date an update of `activity_tables` reads for changes on `dates`."""
    return min(dates) - timedelta(days=1)


class ActivityTables(NamedTuple):
    """The three activity tables: as DateRows from `activity_tables`, as lazy scans when stored."""

    sessions: Any
    user_daily: Any
    account_daily: Any


DATE_COLUMNS = ActivityTables("session_date", "date", "date")
"""Each table's date: the lake stores them one file per date, and updates replace dates."""
_PRESENCE = ("account_id", "canonical_user_id", "date")


def _recounted(
    frame: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    billing_events: pl.LazyFrame,
    plans: PlanCatalog,
    activations: pl.LazyFrame,
) -> pl.DataFrame:
    """Stored account_daily rows with what later data changes without new events on their
    dates taken again: members, the billing columns and activations."""
    stripped = (
        frame.lazy()
        .drop("members", "activations", *_BILLING_COLUMNS)
        .join(_activation_counts(activations), on=["account_id", "date"], how="left")
        .with_columns(pl.col("activations").fill_null(0))
    )
    return (
        _with_billing(_with_members(stripped, account_memberships), billing_events, plans)
        .select(_column_order(plans))
        .sort("account_id", "date")
        .collect()
    )


def activity_tables(
    attributed: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    billing_events: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    activations: pl.LazyFrame | None = None,
    stored: ActivityTables | None = None,
    dates: Iterable[date] = (),
    billing_from: date | None = None,
    arrived: pl.LazyFrame | None = None,
    changed_users: Iterable[str] = (),
    identity_map: pl.DataFrame | None = None,
    reached: pl.LazyFrame | None = None,
) -> ActivityTables:
    """sessions, user_daily and account_daily as `DateRows`: built whole from `attributed`, or,
    given the `stored` tables (lazy scans), the rows of the dates to rebuild after changes on
    `dates` (`recompute_range`), for the caller to put in place of the stored ones.

    An update reads only events from a day before the first affected date (sessions may start
    the day before): pass `attributed` built on just those events and, with `activations`
    (first_activations of all history), nothing older is read at all. Of the stored tables it
    reads the user-days of the MAU window before that date and account_daily's last date, so
    its cost follows the dates rebuilt, not the history. Stored rows outside the rebuilt dates
    change in these ways, and only those columns are refreshed: member counts (a late first
    event moves a link's start earlier; activations are taken again with them), billing
    (`billing_from`, the earliest date a changed billing row takes effect) and is_admin (a role
    change holds for every day of that user).

    On the stored dates only the users and accounts `_touched` finds are read and rebuilt, each
    from the date its rows change, given `arrived` (the new events, attributed as `attributed`)
    and `changed_users` (canonical ids whose rows change on every date they have: relabelled
    ids' old and new users, users whose consent changed); without `arrived` every user of those
    dates is. With `identity_map` (what `attributed` was built with), the events before the late
    events' dates are filtered on their raw ids before attribution: a consent change far back
    then costs its users' and accounts' events, not every event since. `reached` is
    `changes_from(arrived, ...)` when the caller has it already (for `affected_dates`).
    """
    if stored is None:
        sessions = sessionize(attributed, cfg.sessions).collect()
        users, accounts = daily_tables(
            attributed, sessions.lazy(), account_memberships, billing_events, catalog, plans, cfg,
            activations=activations,
        )  # fmt: skip
        return _date_rows(ActivityTables(sessions, users, accounts), None)
    dates = sorted(dates)
    span = None
    if activations is None:
        activations = first_activations(attributed, catalog)
    touched = None
    if dates:
        read = attributed.filter(pl.col("event_date") >= first_date_read(dates))
        if arrived is not None:
            if reached is None:
                reached = changes_from(arrived, stored.sessions, cfg.sessions)
            touched = _touched(arrived, reached, changed_users, stored, account_memberships, dates)
        if touched is not None:
            read = touched.read(
                attributed, first_date_read(dates), identity_map, account_memberships
            )
        recent, activations = (  # attributed once: every step below reads these rows
            frame.lazy() for frame in pl.collect_all([read.select(ATTRIBUTED_COLUMNS), activations])
        )
        span = recompute_range(
            stored.account_daily, dates, recent, account_memberships, cfg, read, stored.sessions
        )
    if span is None:
        rebuilt = _date_rows(
            ActivityTables(*(t.clear().collect() for t in stored)), lake.EMPTY_SPAN
        )
    else:
        rebuilt = _date_rows(
            _rebuild(recent, account_memberships, billing_events, catalog, plans, cfg, activations,
                     stored, span, touched),
            span,
        )  # fmt: skip
    rebuilt = _with_flags_refreshed(
        rebuilt, stored.user_daily, account_memberships, activations, cfg
    )
    refresh = _to_recount(
        stored.account_daily, account_memberships, dates, span, billing_from, activations
    )
    if refresh is None:
        return rebuilt
    (first, last), again = _around(stored.account_daily, refresh, span)
    repriced = _recounted(again, account_memberships, billing_events, plans, activations)
    accounts = pl.concat([repriced, rebuilt.account_daily.frame.select(repriced.columns)])
    return rebuilt._replace(account_daily=lake.DateRows(accounts, "date", (first, last)))


def _around(
    stored: pl.LazyFrame, found: tuple[date, date], span: tuple[date, date] | None
) -> tuple[tuple[date, date], pl.LazyFrame]:
    """The dates from `found` through the rebuilt `span` (one range, as DateRows replace whole
    dates), and the stored rows in them outside `span`: the ones to refresh and write again."""
    first, last = found if span is None else (min(found[0], span[0]), max(found[1], span[1]))
    outside = ~pl.col("date").is_between(*span) if span else pl.lit(True)
    return (first, last), stored.filter(pl.col("date").is_between(first, last) & outside)


def _with_flags_refreshed(
    rebuilt: ActivityTables,
    stored: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    activations: pl.LazyFrame,
    cfg: ActivityConfig,
) -> ActivityTables:
    """is_admin and activated follow the user's latest role and first activation, so a role
    change or a late, earlier activation flips them on stored days of that user outside the
    rebuilt ones: those user_daily rows are re-flagged (only then read).

    A role change flips every day of the user; a moved activation only the days between the old
    and the new one. Taking the user's whole history for either rewrote all of user_daily on
    most updates (10M, day 60: 58 dates instead of the 29 rebuilt), a cost growing with history.
    """
    keys = ["canonical_user_id", "account_id"]
    day, activated = pl.col("date"), pl.col("activated")
    # the activated and inactive days as columns first: a filter inside the aggregation runs
    # group by group (60 days of user_daily at 10M: 0.13 -> 0.08 s)
    flags = (
        stored.with_columns(_on=pl.when(activated).then(day), _off=pl.when(~activated).then(day))
        .group_by(keys)
        .agg(
            pl.col("is_admin").first(),
            first=day.min(),
            last=day.max(),
            first_activated=pl.col("_on").min(),
            last_activated=pl.col("_on").max(),
            last_inactive=pl.col("_off").max(),
        )
    )
    now = _admins(account_memberships, cfg).rename({"is_admin": "now"})
    since = pl.col("activation_date")
    # days now inactive that were activated: all of them without an activation, else those
    # before it; days now activated that were inactive: from the activation to the last one
    lost_to = pl.when(since.is_null()).then("last_activated").otherwise(since - timedelta(days=1))
    lost = pl.col("first_activated") <= lost_to
    gained = pl.col("last_inactive") >= since
    role_changed = pl.col("is_admin") != pl.col("now").fill_null(False)
    changed = (
        flags.join(now, on=keys, how="left")
        .join(activations.select("canonical_user_id", "activation_date"), on="canonical_user_id",
              how="left")
        .select(
            first=pl.when(role_changed).then("first").otherwise(
                pl.min_horizontal(pl.when(lost).then("first_activated"), pl.when(gained).then(since))
            ),
            last=pl.when(role_changed).then("last").otherwise(
                pl.max_horizontal(pl.when(lost).then(lost_to), pl.when(gained).then("last_inactive"))
            ),
        )
        .select(pl.col("first").min(), pl.col("last").max())
        .collect()
    )  # fmt: skip
    first, last = changed.row(0)
    users = rebuilt.user_daily
    span = users.span if users.span != lake.EMPTY_SPAN else None
    if first is None or (span and span[0] <= first and last <= span[1]):
        return rebuilt
    (first, last), again = _around(stored, (first, last), span)
    columns = users.frame.columns
    reflagged = _with_user_flags(
        again.drop("is_admin", "activated"), account_memberships, activations, cfg
    ).select(columns)
    frame = pl.concat([reflagged.collect(), users.frame])
    return rebuilt._replace(user_daily=lake.DateRows(frame, "date", (first, last)))


def _to_recount(
    stored: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    dates: list[date],
    span: tuple[date, date] | None,
    billing_from: date | None,
    activations: pl.LazyFrame,
) -> tuple[date, date] | None:
    """The stored account_daily dates outside `span` whose members, activations or billing
    columns change.

    Billing changes every date from `billing_from` on. A member count changes from a changed
    link's first event, an affected date, to the link's old first event, which may be any later
    date; a late activation moves a user's first one from any later date to an affected one:
    the stored counts from the first affected date on are compared with the new ones.
    """
    found: list[date] = []
    if billing_from is not None:
        last = stored.select(pl.col("date").max()).collect().item()
        if last is not None and billing_from <= last:
            found += [billing_from, last]
    if dates:
        keys = ["account_id", "date"]
        rows = stored.filter(pl.col("date") >= dates[0]).select(*keys, "members", "activations")
        now = _with_members(rows.select(keys), account_memberships).join(
            _activation_counts(activations), on=keys, how="left"
        )
        differ = (
            rows.join(now, on=keys, suffix="_now")
            .filter(
                (pl.col("members") != pl.col("members_now"))
                | (pl.col("activations") != pl.col("activations_now").fill_null(0))
            )
            .select(first=pl.col("date").min(), last=pl.col("date").max())
            .collect()
        )
        found += [d for d in differ.row(0) if d is not None]
    if not found or (span and all(span[0] <= d <= span[1] for d in found)):
        return None
    return min(found), max(found)


class _Touched(NamedTuple):
    """What an update changes on the stored dates (to `stored_last`): the rows of these users
    and accounts from the date in "from" on."""

    users: pl.DataFrame  # canonical_user_id, from
    accounts: pl.DataFrame  # account_id, from
    stored_last: date
    late_from: date | None  # the first date late events change

    def user_rows(self, date_col: str, days_before: int = 0) -> pl.Expr:
        return _on_or_after(self.users, "canonical_user_id", date_col, days_before)

    def account_rows(self, date_col: str) -> pl.Expr:
        return _on_or_after(self.accounts, "account_id", date_col, 0)

    def first_account_row(self, new_from: date) -> pl.Expr:
        """Each account's first rebuilt date (over account_id): its "from" if touched, else
        `new_from`, the first date after the stored ones, which is built for every account."""
        start = pl.col("account_id").replace_strict(
            self.accounts["account_id"], self.accounts["from"], default=None, return_dtype=pl.Date
        )
        return pl.min_horizontal(start, new_from)

    def read(
        self,
        attributed: pl.LazyFrame,
        since: date,
        identity_map: pl.DataFrame | None,
        account_memberships: pl.LazyFrame,
    ) -> pl.LazyFrame:
        """The attributed events an update reads: all of the new dates, and the touched users'
        (with the day before, for sessions) and accounts' from their dates."""
        wanted = (
            (pl.col("event_date") > self.stored_last)
            | self.user_rows("event_date", 1)
            | self.account_rows("event_date")
        )
        # from here on every event is read: the late events touch too many users to pick theirs
        near = self.late_from - timedelta(days=1) if self.late_from else self.stored_last
        if identity_map is None or near <= since:
            return attributed.filter(pl.col("event_date") >= since).filter(wanted)
        # Before `near` only a few users' and accounts' rows change (a merge, a consent): their
        # members' raw ids select those events before attribution, in the scan.
        early = self.accounts.filter(pl.col("from") < near)
        users = pl.concat(
            [
                self.users.filter(pl.col("from") <= near)["canonical_user_id"],
                account_memberships.join(early.lazy(), on="account_id", how="semi")
                .select("canonical_user_id")
                .collect()
                .to_series(),
            ]
        )
        ids = identity_map.filter(pl.col("canonical_user_id").is_in(users.implode()))["id"]
        before = attributed.filter(
            pl.col("event_date").is_between(since, near, closed="left")
            & pl.coalesce("user_id", "anonymous_id").is_in(ids.implode())
        )
        # Collected alone: shared with the other part, the plan would be attributed whole first.
        # Only the columns read later: a projection after this collect would not reach the scan
        # (10M, day 60, 24 days of a few users: 0.44 -> 0.35 s; the JSON properties go undecoded).
        columns = [*ATTRIBUTED_COLUMNS, "account_source"]
        before = before.filter(wanted).select(columns).collect().lazy()
        later = attributed.filter(pl.col("event_date") >= near).filter(wanted).select(columns)
        return pl.concat([before, later])


def _on_or_after(froms: pl.DataFrame, key: str, date_col: str, days_before: int) -> pl.Expr:
    """True on a row whose `key` is in `froms` and whose date is on or after its "from" date
    (less `days_before`); False elsewhere."""
    start = pl.col(key).replace_strict(
        froms[key], froms["from"], default=None, return_dtype=pl.Date
    )
    return (pl.col(date_col) >= start - timedelta(days=days_before)).fill_null(False)


def _touched(
    arrived: pl.LazyFrame,
    reached: pl.LazyFrame,
    changed_users: Iterable[str],
    stored: ActivityTables,
    account_memberships: pl.LazyFrame,
    dates: list[date],
) -> _Touched | None:
    """The users whose stored rows an update changes and the accounts those rows are in, each
    from the date they change; None when no stored date changes.

    Users with arrived events on stored dates (or the next date) change from the earliest
    date one of them changes (`changes_from`: its own, or the start of a stored session it
    may join), and `changed_users` from the first affected date. An account changes from the
    date any of its members' changes does (an event counts only for one of the user's
    accounts, and their stored rows show where they counted before); that covers an account
    whose rows now start earlier, as only a member's late event can move its first member's
    day. Other users' and accounts' stored rows depend on nothing that arrived.

    Each changed user from the eve of its own ids' first event (or the stored session running
    into it) was measured too: at 10M, day 60, their 17 dates spread over 4 weeks, yet the
    update was no faster (activity tables 2.50-2.64 s against 2.35-2.47): the earliest still
    has the early dates scanned (24 days of events filtered to 300 random ids: 0.19-0.23 s).
    """
    stored_last = stored.account_daily.select(pl.col("date").max()).collect().item()
    if stored_last is None or stored_last < dates[0]:
        return None
    day = pl.col("event_date")
    late = (
        pl.concat(
            [
                arrived.filter(day <= stored_last).select("canonical_user_id", changes=day),
                reached,
            ]
        )
        .filter(pl.col("changes") <= stored_last)
        .group_by("canonical_user_id")
        .agg(pl.col("changes").min())
        .collect()
    )
    late_from = late["changes"].min()
    users = pl.concat(
        [
            late.lazy().select("canonical_user_id", pl.col("changes").alias("from")),
            pl.LazyFrame(
                {"canonical_user_id": list(changed_users)}, schema={"canonical_user_id": pl.String}
            ).with_columns(pl.lit(dates[0], pl.Date).alias("from")),
        ]
    )
    users = users.drop_nulls().group_by("canonical_user_id").agg(pl.col("from").min()).collect()
    mine = users.lazy()
    members = account_memberships.lazy()
    stored_rows = [
        stored.sessions.select("canonical_user_id", "account_id", date="session_date"),
        stored.user_daily.select("canonical_user_id", "account_id", "date"),
    ]
    accounts = pl.concat(
        [
            *(
                rows.filter(pl.col("date") >= dates[0])
                .join(mine, on="canonical_user_id")
                .filter(pl.col("date") >= pl.col("from"))
                .select("account_id", "from")
                for rows in stored_rows
            ),
            members.join(mine, on="canonical_user_id").select("account_id", "from"),
            _started_earlier(members, stored.account_daily, dates[0], stored_last),
        ]
    )
    accounts = accounts.drop_nulls().group_by("account_id").agg(pl.col("from").min()).collect()
    return _Touched(users, accounts, stored_last, late_from)


def _started_earlier(
    members: pl.LazyFrame, stored: pl.LazyFrame, first: date, stored_last: date
) -> pl.LazyFrame:
    """Accounts (account_id, from) whose rows now start on a stored date before their stored
    first row: a late link of a user without analytics consent, who has no rows to touch,
    still starts an account's rows (memberships count every user)."""
    starts = (
        members.group_by("account_id")
        .agg(pl.col("valid_from").min().dt.date().alias("from"))
        .filter(pl.col("from").is_between(first, stored_last))
    )
    stored_first = (
        stored.filter(pl.col("date") >= first)
        .group_by("account_id")
        .agg(_first=pl.col("date").min())
    )
    return (
        starts.join(stored_first, on="account_id", how="left")
        .filter(pl.col("_first").is_null() | (pl.col("_first") > pl.col("from")))
        .select("account_id", "from")
    )


def _rebuild(
    recent: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    billing_events: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    activations: pl.LazyFrame,
    stored: ActivityTables,
    span: tuple[date, date],
    touched: _Touched | None,
) -> ActivityTables:
    """The three tables' rows of the dates in `span`, from the events since the day before it.

    With `touched`, the stored dates in `span` are rebuilt only for its users and accounts, each
    from its own date (10M, day 60: about 40% of users and 65% of accounts from the late
    events' dates): the other rows of those dates are kept, with what later data changes
    refreshed (`_with_user_flags`, `_recounted`). Later dates are new and built for everyone.
    """
    window = span[0] - timedelta(days=cfg.mau_days - 1), span[0] - timedelta(days=1)
    users_before = stored.user_daily.filter(pl.col("date").is_between(*window))
    if touched is None:
        sessions = sessionize(recent, cfg.sessions, span).collect()
        users, accounts = daily_tables(
            recent, sessions.lazy(), account_memberships, billing_events, catalog, plans, cfg,
            span, activations, users_before,
        )  # fmt: skip
        return ActivityTables(sessions, users, accounts)
    old = span[0], min(touched.stored_last, span[1])
    new_from = old[1] + timedelta(days=1)
    user_rows = touched.user_rows
    # an untouched user's sessions on new dates start on them (else they would be touched)
    new = pl.col("event_date") >= new_from
    sessions, kept_sessions, kept_users = pl.collect_all(
        [
            sessionize(recent.filter(new | user_rows("event_date", 1)), cfg.sessions, span).filter(
                (pl.col("session_date") >= new_from) | user_rows("session_date")
            ),
            stored.sessions.filter(
                pl.col("session_date").is_between(*old) & ~user_rows("session_date")
            ),
            stored.user_daily.filter(pl.col("date").is_between(*old) & ~user_rows("date")),
        ]
    )
    all_sessions = pl.concat([kept_sessions, sessions]).lazy()
    theirs = touched.account_rows
    # Taken per user once for both tables; a user x account x date is wholly in or out of
    # either's rows, so each keeps its own from these.
    per_user = pl.collect_all(
        _per_user(
            recent.filter(new | user_rows("event_date") | theirs("event_date")), catalog, plans,
            cfg, span,
        )
    )  # fmt: skip
    new_day = pl.col("date") >= new_from
    users = user_daily(  # the rebuilt sessions are these users' (and dates') own
        recent, sessions.lazy(), account_memberships, catalog, plans, cfg, span, activations,
        _PerUser(*(f.lazy().filter(new_day | user_rows("date")) for f in per_user)),
    ).collect()  # fmt: skip
    kept_users = _with_user_flags(
        kept_users.lazy().drop("is_admin", "activated"), account_memberships, activations, cfg
    ).select(users.columns)
    all_users = pl.concat([kept_users.collect(), users])
    first_row = touched.first_account_row(new_from)
    accounts = account_daily(
        recent,
        all_sessions.filter((pl.col("session_date") >= new_from) | theirs("session_date")),
        account_memberships, billing_events, catalog, plans, cfg, span, activations,
        _presence([users_before, all_users.lazy()], first_row),
        first_row,
        _PerUser(*(f.lazy().filter(new_day | theirs("date")) for f in per_user)),
    )  # fmt: skip
    kept_accounts = stored.account_daily.filter(pl.col("date").is_between(*old) & ~theirs("date"))
    accounts, kept_accounts = pl.collect_all([accounts, kept_accounts])
    refreshed = _recounted(kept_accounts, account_memberships, billing_events, plans, activations)
    return ActivityTables(
        pl.concat([kept_sessions, sessions]), all_users, pl.concat([refreshed, accounts])
    )


def _presence(user_days: list[pl.LazyFrame], since: pl.Expr) -> pl.LazyFrame:
    """Who was active where and when (of user_daily rows), for the rolling counts from each
    account's `since` date on (an expression over account_id).

    A user's window opened on an earlier day closes by their next active day, so of the days
    before `since` only each user's latest reaches past it: one row per user and account stands
    in for the window (10M, one date: the rolling marks 0.34 -> 0.10 s).
    """
    rows = pl.concat([days.select(_PRESENCE) for days in user_days])
    earlier = pl.col("date") < since
    latest = (
        rows.filter(earlier).group_by("account_id", "canonical_user_id").agg(pl.col("date").max())
    )
    return pl.concat([latest.select(_PRESENCE), rows.filter(~earlier)])


def daily_tables(
    attributed: pl.LazyFrame,
    sessions: pl.LazyFrame,
    account_memberships: pl.LazyFrame,
    billing_events: pl.LazyFrame,
    catalog: EventCatalog,
    plans: PlanCatalog,
    cfg: ActivityConfig,
    dates: tuple[date, date] | None = None,
    activations: pl.LazyFrame | None = None,
    users_before: pl.LazyFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """user_daily and account_daily, from the events taken per user once (10M events: 7.5-7.8 ->
    5.0-5.3 s), collected together so that Polars runs them side by side.

    With `dates` and `users_before` (the stored user-days of the MAU window before them),
    account_daily's rolling windows take who was active from user_daily instead of events.
    """
    per_user = _PerUser(
        *(f.lazy() for f in pl.collect_all(_per_user(attributed, catalog, plans, cfg, dates)))
    )
    users = user_daily(
        attributed, sessions, account_memberships, catalog, plans, cfg, dates, activations,
        per_user,
    )  # fmt: skip
    presence = None  # account_daily reads the window's events itself
    if dates is not None and users_before is not None:
        presence = _presence([users_before, users], pl.lit(dates[0]))
    # per_user covers `dates` only, not the window before them that account_daily would read
    shared = per_user if dates is None or presence is not None else None
    accounts = account_daily(
        attributed, sessions, account_memberships, billing_events, catalog, plans, cfg, dates,
        activations, presence, per_user=shared,
    )  # fmt: skip
    built = pl.collect_all([users, accounts])
    return built[0], built[1]


def _date_rows(tables: ActivityTables, span: tuple[date, date] | None) -> ActivityTables:
    return ActivityTables(
        *(lake.DateRows(frame, col, span) for frame, col in zip(tables, DATE_COLUMNS, strict=True))
    )
