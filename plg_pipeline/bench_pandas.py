"""The straightforward pandas pipeline the benchmark compares against: the same stages and rules.

`json.loads` per line into records, pandas frames after that: validation, in-day and cross-day
dedup, PII hashing, identity by union-find with the over-merge guard, memberships and as-of
account attribution, consent, sessions by group-by, and account_daily's counts with rolling
WAU / MAU. It is what one writes first; `bench` checks its account_daily counts equal ours.
"""

from __future__ import annotations

import gzip
import hmac
import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from plg_pipeline.lib.activity import load_activity_config
from plg_pipeline.lib.ingest import load_ingest_config
from plg_pipeline.lib.schemas import EVENT_TYPES

COMPARED = ["account_id", "date", "events", "active_users", "wau", "mau", "sessions"]


def _text(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _parse_line(line: str, key: bytes) -> dict | None:
    """One accepted line as a record, or None when the contract rejects it."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    kind = _text(obj, "type") or _text(obj, "action")
    props = obj.get("properties") if isinstance(obj.get("properties"), dict) else {}
    traits = obj.get("traits") if isinstance(obj.get("traits"), dict) else {}
    context = obj.get("context") if isinstance(obj.get("context"), dict) else {}
    row = {
        "event_id": _text(obj, "messageId"),
        "type": kind,
        "event_name": _text(obj, "event") if kind == "track" else _text(obj, "name"),
        "user_id": _text(obj, "userId"),
        "anonymous_id": _text(obj, "anonymousId"),
        "previous_id": _text(obj, "previousId"),
        "group_id": _text(obj, "groupId"),
        "timestamp": _text(obj, "timestamp"),
        "context_group_id": _text(context, "groupId"),
        "role": traits.get("role") or props.get("role"),
        "consent": (traits.get("consent") or {}).get("analytics")
        if isinstance(traits.get("consent"), dict)
        else None,
        "feature": props.get("feature"),
        "limit_name": props.get("limit") or props.get("metric"),
        "quantity": props.get("quantity"),
    }
    email = traits.get("email")
    row["email_hash"] = (
        hmac.digest(key, email.strip().lower().encode(), "sha256").hex()
        if isinstance(email, str)
        else None
    )
    ip = context.get("ip")
    row["context_ip"] = ip.rsplit(".", 1)[0] + ".0/24" if isinstance(ip, str) else None
    if kind not in EVENT_TYPES or row["event_id"] is None or row["timestamp"] is None:
        return None
    if row["user_id"] is None and row["anonymous_id"] is None:
        return None
    if (kind == "track" and row["event_name"] is None) or (
        (kind == "alias" and row["previous_id"] is None)
        or (kind == "group" and row["group_id"] is None)
    ):
        return None
    return row


def ingest(raw: Path, days: list[date], hash_key: str) -> tuple[pd.DataFrame, int]:
    """Accepted, deduplicated events of `days` (earliest arrival wins) and the lines read."""
    cfg = load_ingest_config()
    key, frames, rows_in = hash_key.encode(), [], 0
    for day in days:
        records = []
        for path in sorted((raw / "events" / f"dt={day}").glob("*.jsonl*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    rows_in += 1
                    row = _parse_line(line, key)
                    if row is not None:
                        records.append(row)
        frame = pd.DataFrame.from_records(records)
        frame["event_time"] = pd.to_datetime(
            frame["timestamp"], utc=True, format="ISO8601", errors="coerce"
        )
        latest = pd.Timestamp(day + timedelta(days=1), tz="UTC") + pd.Timedelta(
            hours=cfg.future_tolerance_hours
        )
        frame = frame[frame["event_time"].notna() & (frame["event_time"] <= latest)]
        frame = frame.drop_duplicates("event_id")
        frame["arrival_date"] = day
        frames.append(frame)
    kept = []
    for i, frame in enumerate(frames):
        earlier = [f["event_id"] for f in kept[max(0, i - cfg.dedup_lookback_days) : i]]
        if earlier:
            frame = frame[~frame["event_id"].isin(pd.concat(earlier))]
        kept.append(frame)
    events = pd.concat(kept, ignore_index=True)
    events["account_id"] = events["group_id"].where(
        events["type"] == "group", events["context_group_id"]
    )
    events["event_date"] = events["event_time"].dt.date
    return events, rows_in


def canonical_ids(events: pd.DataFrame, max_users: int) -> dict[str, str]:
    """id -> canonical user id: union-find over links, ids linked to too many users left out."""
    both = events[events["user_id"].notna() & events["anonymous_id"].notna()]
    both = both[both["user_id"] != both["anonymous_id"]]
    alias = events[(events["type"] == "alias") & events["previous_id"].notna()]
    alias = alias[alias["user_id"].notna() & (alias["previous_id"] != alias["user_id"])]
    links = pd.concat(
        [
            pd.DataFrame({"id": both["anonymous_id"], "user_id": both["user_id"]}),
            pd.DataFrame({"id": alias["previous_id"], "user_id": alias["user_id"]}),
        ]
    ).drop_duplicates()
    crowded = links.groupby("id")["user_id"].nunique()
    links = links[~links["id"].isin(crowded[crowded > max_users].index)]
    users = set(events["user_id"].dropna())
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for col in ("user_id", "anonymous_id", "previous_id"):
        for x in events[col].dropna().unique():
            find(x)
    for a, b in zip(links["id"], links["user_id"], strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    canonical = {}
    for members in groups.values():
        real = [m for m in members if m in users]
        name = min(real) if real else min(members)
        canonical.update(dict.fromkeys(members, name))
    return canonical


def attribute(events: pd.DataFrame, canonical: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Consenting events with canonical_user_id and account_id (explicit, else the latest
    membership begun by then), and the memberships (canonical_user_id, account_id, valid_from)."""
    events = events.copy()
    events["canonical_user_id"] = events["user_id"].fillna(events["anonymous_id"]).map(canonical)
    linked = events[events["canonical_user_id"].notna() & events["account_id"].notna()]
    members = (
        linked.groupby(["canonical_user_id", "account_id"])["event_time"]
        .min()
        .rename("valid_from")
        .reset_index()
    )
    timeline = (
        members.groupby(["canonical_user_id", "valid_from"])["account_id"]
        .min()
        .rename("member_account")
        .reset_index()
        .sort_values("valid_from")
    )
    events = events.reset_index(drop=True)
    need = events[events["account_id"].isna() & events["canonical_user_id"].notna()]
    matched = pd.merge_asof(
        need[["event_time", "canonical_user_id"]].reset_index().sort_values("event_time"),
        timeline,
        left_on="event_time",
        right_on="valid_from",
        by="canonical_user_id",
    ).set_index("index")
    events.loc[matched.index, "account_id"] = matched["member_account"]
    consent = events[events["consent"].notna() & events["canonical_user_id"].notna()]
    latest = consent.sort_values(["event_time", "event_id"]).groupby("canonical_user_id").last()
    opted_out = latest.index[latest["consent"] == False]  # noqa: E712 (a pandas mask)
    events = events[~events["canonical_user_id"].isin(opted_out)]
    return events, members


def sessions(events: pd.DataFrame, gap_minutes: float, types: list[str]) -> pd.DataFrame:
    ev = events[events["canonical_user_id"].notna() & events["type"].isin(types)]
    ev = ev.sort_values(["canonical_user_id", "event_time"])
    new = (ev["canonical_user_id"] != ev["canonical_user_id"].shift()) | (
        ev["event_time"].diff() > pd.Timedelta(minutes=gap_minutes)
    )
    ev = ev.assign(session_no=new.cumsum())
    out = ev.groupby("session_no").agg(
        canonical_user_id=("canonical_user_id", "first"),
        account_id=("account_id", "first"),  # pandas' first skips nulls
        session_start=("event_time", "min"),
        events=("event_time", "size"),
    )
    out["session_date"] = out["session_start"].dt.date
    return out


def account_daily(
    events: pd.DataFrame, members: pd.DataFrame, sess: pd.DataFrame, types: list[str], windows
) -> pd.DataFrame:
    """account x date from the account's first membership to the last event date: counts."""
    last = events["event_date"].max()
    ev = events[
        events["canonical_user_id"].notna()
        & events["account_id"].notna()
        & events["type"].isin(types)
    ]
    firsts = members.groupby("account_id")["valid_from"].min().dt.date
    grid = pd.DataFrame(
        [(a, d.date()) for a, f in firsts.items() for d in pd.date_range(f, last)],
        columns=["account_id", "date"],
    )
    out = grid.merge(
        ev.groupby(["account_id", "event_date"]).size().rename("events").reset_index(),
        left_on=["account_id", "date"],
        right_on=["account_id", "event_date"],
        how="left",
    ).drop(columns="event_date")
    presence = ev[["account_id", "canonical_user_id", "event_date"]].drop_duplicates()
    for name, days in windows.items():
        spread = pd.concat(
            [presence.assign(date=presence["event_date"] + timedelta(days=i)) for i in range(days)]
        )
        active = spread.groupby(["account_id", "date"])["canonical_user_id"].nunique()
        out = out.merge(active.rename(name).reset_index(), on=["account_id", "date"], how="left")
    per_day = (
        sess[sess["account_id"].notna()]
        .groupby(["account_id", "session_date"])
        .size()
        .rename("sessions")
        .reset_index()
        .rename(columns={"session_date": "date"})
    )
    out = out.merge(per_day, on=["account_id", "date"], how="left")
    counts = ["events", *windows, "sessions"]
    out[counts] = out[counts].fillna(0).astype("int64")
    return out[COMPARED].sort_values(["account_id", "date"]).reset_index(drop=True)


def run_pandas(raw: Path, days: list[date], hash_key: str) -> dict:
    """The whole pandas pipeline over `days`: lines read and the compared account_daily columns."""
    cfg = load_activity_config()
    events, rows_in = ingest(Path(raw), days, hash_key)
    canonical = canonical_ids(events, cfg.identity.max_users_per_anonymous_id)
    attributed, members = attribute(events, canonical)
    types = cfg.sessions.activity_types
    sess = sessions(attributed, cfg.sessions.inactivity_gap_minutes, types)
    windows = {"active_users": 1, "wau": cfg.wau_days, "mau": cfg.mau_days}
    daily = account_daily(attributed, members, sess, types, windows)
    return {"rows_in": rows_in, "account_daily": daily}
