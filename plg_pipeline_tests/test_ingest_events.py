"""Event ingestion: every input row ends up accepted, quarantined with its reason, or counted."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.configfile import ConfigError
from plg_pipeline.lib.ingest import (
    IngestConfig,
    arrival_days,
    drop_seen,
    ingest_arrival_day,
    ingest_arrival_days,
    load_ingest_config,
)
from plg_pipeline.lib.pii import hmac_hex

DAY = date(2026, 3, 10)
KEY = "test-key"


def event(i: int | str, **fields) -> dict:
    base = {
        "messageId": f"m{i}",
        "type": "track",
        "event": "Feature Used",
        "userId": "u1",
        "timestamp": "2026-03-10T12:00:00Z",
        "properties": {"feature": "sso", "tier": 2},
        "context": {"groupId": "acct1", "ip": "10.1.2.3"},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def line(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


def gz_lines(lines: list[str]) -> bytes:
    return gzip.compress(jsonl_bytes(lines))


def jsonl_bytes(lines: list[str]) -> bytes:
    return "".join(f"{x}\n" for x in lines).encode()


def write(root: Path, name: str, lines: list[str], day: date = DAY) -> Path:
    path = root / "events" / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gz_lines(lines) if name.endswith(".gz") else jsonl_bytes(lines))
    return path


def ingest(root: Path, day: date = DAY, **kwargs):
    result = ingest_arrival_day(
        root, day, catalog=load_catalog(), hash_key=KEY, config=IngestConfig(), **kwargs
    )
    s = result.stats
    assert s["rows_in"] == s["accepted"] + s["quarantined"] + s["duplicates_in_day"] + s["erased"]
    assert s["accepted"] == result.events.height and s["quarantined"] == result.quarantine.height
    return result


def reasons(result) -> dict[int, str]:
    return dict(result.quarantine.select("line", "reason").iter_rows())


def test_bad_rows_are_quarantined_each_with_its_own_reason(tmp_path):
    rows = [
        line(event(1)),
        '{"messageId":"m2","type":"track"',  # cut line
        line(event(3, messageId=...)),
        line(event(4, userId=None)),
        line(event(5, timestamp="yesterday")),
        line(event(6, timestamp=...)),
        line(event(7, timestamp="2026-03-12T01:00:00Z")),  # > end of day + 24 h
        line(event(8, event=...)),
        line(event(9, properties="feature=sso")),
        line(event(10, userId=12345)),
        line(event(11, type="launch")),
        line(event(12, type="alias", previousId=...)),
        line(event(13, type="group", groupId=None)),
        "",
        "[1, 2]",
        line(event(16, context="web")),
        line(event(17, type=...)),
        '{"messageId":"m18","userId":"u1","type":"track","event":"x","timestamp":NaN}',
        line(event(19, properties=[1, 2])),
        line(event(20, anonymousId={"id": 1}, userId=None)),
        line(event(21, timestamp="2026-03-10T12:00:00")),  # no offset
        line(event(22, context={"ip": 10})),
    ]
    write(tmp_path, "a.jsonl", rows)
    result = ingest(tmp_path)
    got = {
        n: r.split(":")[0] + (":" + r.split(":")[1] if r.startswith("wrong_type") else "")
        for n, r in reasons(result).items()
    }
    assert got == {
        2: "invalid_json",
        3: "missing_message_id",
        4: "missing_user_and_anonymous_id",
        5: "unparseable_timestamp",
        6: "missing_timestamp",
        7: "future_timestamp",
        8: "track_without_event",
        9: "wrong_type:properties",
        10: "wrong_type:userId",
        11: "unknown_type",
        12: "missing_previous_id",
        13: "missing_group_id",
        14: "blank_line",
        15: "wrong_type:line is a JSON list, not an object",
        16: "wrong_type:context",
        17: "missing_type",
        18: "invalid_json",
        19: "wrong_type:properties",
        20: "wrong_type:anonymousId",
        21: "unparseable_timestamp",
        22: "wrong_type:context.ip",
    }
    assert result.events["line"].to_list() == [1]
    raw = dict(result.quarantine.select("line", "raw").iter_rows())
    assert raw[2] == rows[1] and raw[10] == rows[9]
    assert result.quarantine["source_file"].unique().to_list() == [f"events/dt={DAY}/a.jsonl"]


def test_future_cutoff_is_the_end_of_the_arrival_day_plus_tolerance(tmp_path):
    write(
        tmp_path,
        "a.jsonl",
        [
            line(event(1, timestamp="2026-03-11T23:59:59Z")),
            line(event(2, timestamp="2026-03-12T00:00:01Z")),
            line(event(3, timestamp="2026-03-12T01:30:00+02:00")),  # 23:30 UTC on the 11th
        ],
    )
    result = ingest(tmp_path)
    assert sorted(result.events["event_id"]) == ["m1", "m3"]
    assert reasons(result)[2].startswith("future_timestamp")
    strict = ingest_arrival_day(
        tmp_path,
        DAY,
        catalog=load_catalog(),
        hash_key=KEY,
        config=IngestConfig(future_tolerance_hours=0),
    )
    assert strict.events["event_id"].to_list() == []


def test_offsets_become_utc_and_late_events_keep_their_own_date(tmp_path):
    write(
        tmp_path,
        "a.jsonl",
        [
            line(event(1, timestamp="2026-03-10T01:30:00+02:00")),
            line(event(2, timestamp="2026-03-09T22:15:00.250-05:00")),
            line(event(3, timestamp="2026-03-07T08:00:00Z", receivedAt="2026-03-10T00:00:05Z")),
        ],
    )
    events = ingest(tmp_path).events.sort("event_id")
    assert events["event_time"].to_list() == [
        datetime(2026, 3, 9, 23, 30, tzinfo=UTC),
        datetime(2026, 3, 10, 3, 15, 0, 250000, tzinfo=UTC),
        datetime(2026, 3, 7, 8, 0, tzinfo=UTC),
    ]
    assert events["event_date"].to_list() == [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 7)]
    assert events["arrival_date"].unique().to_list() == [DAY]
    assert events["received_at"].to_list()[2] == datetime(2026, 3, 10, 0, 0, 5, tzinfo=UTC)


def test_truncated_gzip_keeps_complete_lines_and_quarantines_the_tail(tmp_path):
    rows = [line(event(i)) for i in range(200)]
    data = gz_lines(rows)
    path = tmp_path / "events" / f"dt={DAY}" / "cut.jsonl.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data[: len(data) * 2 // 3])
    result = ingest(tmp_path)
    kept = result.events.height
    assert 0 < kept < 200
    assert result.events["line"].to_list() == list(range(1, kept + 1))
    assert result.quarantine.select("line", "reason").rows() == [
        (kept + 1, "truncated_gzip:stream ends before its end marker")
    ]
    tail = result.quarantine["raw"][0]
    assert rows[kept].startswith(tail)


def test_a_gzip_of_several_members_is_read_whole(tmp_path):
    """`cat a.gz b.gz` is a valid gzip file (zero padding after a member too): every member counts."""
    rows = [line(event(i)) for i in range(300)]
    path = write(tmp_path, "joined.jsonl.gz", rows[:100])
    path.write_bytes(path.read_bytes() + gz_lines(rows[100:]) + b"\x00" * 8)
    result = ingest(tmp_path)
    assert result.events["line"].to_list() == list(range(1, 301))
    assert result.events["event_id"].to_list() == [f"m{i}" for i in range(300)]
    assert result.quarantine.height == 0


def test_bytes_after_a_gzip_member_keep_its_lines_and_quarantine_the_rest(tmp_path):
    rows = [line(event(i)) for i in range(50)]
    path = write(tmp_path, "tail.jsonl.gz", rows)
    path.write_bytes(path.read_bytes() + b"not gzip at all")
    result = ingest(tmp_path)
    assert result.events["line"].to_list() == list(range(1, 51))
    [(number, reason)] = result.quarantine.select("line", "reason").rows()
    assert number == 51 and reason.startswith("corrupt_gzip:")


def test_empty_files_count_as_one_row_each(tmp_path):
    write(tmp_path, "empty.jsonl", [])
    write(tmp_path, "empty.jsonl.gz", [])
    pl.DataFrame(schema={"messageId": pl.String}).write_parquet(
        tmp_path / "events" / f"dt={DAY}" / "empty.parquet"
    )
    result = ingest(tmp_path)
    assert result.stats["files"] == 3 and result.stats["rows_in"] == 3
    assert result.quarantine.select("line", "reason").rows() == [(0, "empty_file")] * 3


def test_invalid_utf8_and_unknown_files(tmp_path):
    path = write(tmp_path, "a.jsonl", [line(event(1))])
    path.write_bytes(
        path.read_bytes() + b'{"messageId":"\xff"}\n' + line(event(3)).encode() + b"\n"
    )
    (path.parent / "notes.txt").write_text("hello")
    (path.parent / "_SUCCESS").write_text("")
    result = ingest(tmp_path)
    assert result.events["line"].to_list() == [1, 3]
    got = result.quarantine.select("source_file", "line", "reason").rows()
    assert got[0][1:] == (2, "invalid_utf8:invalid start byte at byte 14")
    assert got[1] == (f"events/dt={DAY}/notes.txt", 0, "unsupported_file:notes.txt")
    assert result.stats["files"] == 2


def test_bad_lines_inside_a_large_file_are_found_exactly(tmp_path):
    rows = [line(event(i)) for i in range(6000)]
    for n in (17, 2500, 5999):
        rows[n] = rows[n].replace('"userId"', '"userId" "')  # still brace-delimited, not JSON
    rows[4000] = rows[4000].replace('"tier":2', '"tier":1e400')  # valid for Python, not Polars
    write(tmp_path, "big.jsonl.gz", rows)
    result = ingest(tmp_path)
    assert sorted(reasons(result)) == [18, 2501, 4001, 6000]
    assert all(r.startswith("invalid_json") for r in reasons(result).values())
    assert result.stats["accepted"] == 5996


def test_numeric_looking_string_ids_are_strings(tmp_path):
    write(
        tmp_path,
        "a.jsonl",
        [
            line(event(1, userId="12345", messageId="42")),
            line(event(2, userId="true")),
            '{"messageId" : "m3", "type":"track","event":"e","userId": 7,'
            ' "timestamp":"2026-03-10T00:00:00Z"}',
        ],
    )
    result = ingest(tmp_path)
    assert result.events["user_id"].to_list() == ["12345", "true"]
    assert result.events["event_id"].to_list() == ["42", "m2"]
    assert reasons(result) == {3: "wrong_type:userId"}


def test_segment_call_types_are_normalised(tmp_path):
    rows = [
        line(event(1, type=..., action="track")),
        line(event(2, type="page", event=..., name="Pricing", properties={"page": "/pricing"})),
        line(event(3, type="screen", event=..., name="Home")),
        line(
            event(
                4,
                type="identify",
                event=...,
                traits={"role": "admin", "plan": "pro", "consent": {"analytics": False}},
            )
        ),
        line(event(5, type="group", event=..., groupId="acct9", traits={"name": "Initech"})),
        line(event(6, type="alias", event=..., previousId="anon-1", anonymousId="anon-1")),
        line(
            event(
                7,
                event="Limit Reached",
                properties={"limit": "seats", "used": 5, "allowed": "5", "plan": "free"},
            )
        ),
        line(
            event(8, event="Usage Reported", properties={"metric": "api_calls", "quantity": 12.5})
        ),
    ]
    write(tmp_path, "a.jsonl", rows)
    ev = ingest(tmp_path).events.sort("line")
    assert ev["type"].to_list() == [
        "track",
        "page",
        "screen",
        "identify",
        "group",
        "alias",
        "track",
        "track",
    ]
    assert ev["event_name"].to_list() == [
        "Feature Used",
        "Pricing",
        "Home",
        None,
        None,
        None,
        "Limit Reached",
        "Usage Reported",
    ]
    assert ev["account_id"].to_list() == [
        "acct1",
        "acct1",
        "acct1",
        "acct1",
        "acct9",
        "acct1",
        "acct1",
        "acct1",
    ]
    assert ev["group_id"].to_list()[4] == "acct9"
    assert ev["previous_id"].to_list()[5] == "anon-1"
    assert ev["page"].to_list()[1] == "/pricing"
    identify = ev.row(3, named=True)
    assert (identify["role"], identify["plan"], identify["consent_analytics"]) == (
        "admin",
        "pro",
        False,
    )
    limit = ev.row(6, named=True)
    assert (limit["limit_name"], limit["used"], limit["allowed"], limit["plan"]) == (
        "seats",
        5.0,
        5.0,
        "free",
    )
    usage = ev.row(7, named=True)
    assert (usage["limit_name"], usage["quantity"]) == ("api_calls", 12.5)
    assert ev.row(0, named=True)["feature"] == "sso" and ev.row(0, named=True)["tier"] == "2"


def test_duplicates_within_a_day_keep_the_first_arrival(tmp_path):
    write(tmp_path, "a.jsonl", [line(event(1)), line(event(2)), line(event(1, event="Retry"))])
    write(tmp_path, "b.jsonl.gz", [line(event(2)), line(event(3))])
    result = ingest(tmp_path)
    assert result.stats["duplicates_in_day"] == 2
    assert result.events.select("event_id", "source_file", "line").rows() == [
        ("m1", f"events/dt={DAY}/a.jsonl", 1),
        ("m2", f"events/dt={DAY}/a.jsonl", 2),
        ("m3", f"events/dt={DAY}/b.jsonl.gz", 2),
    ]
    assert result.events["event_name"].to_list()[0] == "Feature Used"


def test_drop_seen_removes_ids_from_earlier_days(tmp_path):
    day_events = pl.DataFrame({"event_id": ["a", "b", "c", "d"], "x": [1, 2, 3, 4]})
    earlier = pl.LazyFrame({"event_id": ["b", "d", "z", "b"]})
    kept, dropped = drop_seen(day_events, earlier)
    assert kept.rows() == [("a", 1), ("c", 3)]
    assert dropped == 2
    none_seen, zero = drop_seen(day_events, pl.LazyFrame(schema={"event_id": pl.String}))
    assert none_seen.equals(day_events) and zero == 0


@settings(max_examples=60, deadline=None)
@given(
    day_ids=st.lists(st.text("ab\u00e9", max_size=4), max_size=40),
    earlier_ids=st.lists(st.text("ab\u00e9", max_size=4), max_size=40),
)
def test_drop_seen_is_an_order_keeping_anti_join(day_ids, earlier_ids):
    day_events = pl.DataFrame({"event_id": day_ids, "i": range(len(day_ids))})
    earlier = pl.LazyFrame({"event_id": earlier_ids}, schema={"event_id": pl.String})
    kept, dropped = drop_seen(day_events, earlier)
    want = [(e, i) for i, e in enumerate(day_ids) if e not in set(earlier_ids)]
    assert kept.rows() == want
    assert dropped == len(day_ids) - len(want)


def test_erased_people_are_removed_and_counted(tmp_path):

    write(
        tmp_path,
        "a.jsonl",
        [
            line(event(1, userId="gone")),
            line(event(2, userId=None, anonymousId="anon-gone")),
            line(event(3, userId="stays")),
            line(event(4, userId="gone", timestamp="bad")),
            line(event(5, type="alias", event=..., userId="new", previousId="gone")),
        ],
    )
    erased = frozenset(hmac_hex(pl.Series(["gone", "anon-gone"]), KEY).to_list())
    result = ingest(tmp_path, erased_id_hashes=erased)
    assert result.events["user_id"].to_list() == ["stays"]
    assert result.stats["erased"] == 4 and result.quarantine.height == 0


def test_parquet_with_structs_or_json_strings(tmp_path):
    folder = tmp_path / "events" / f"dt={DAY}"
    folder.mkdir(parents=True)
    structs = pl.DataFrame(
        {
            "messageId": ["p1", "p2", None],
            "type": ["track", "identify", "track"],
            "event": ["Invite Sent", None, "x"],
            "userId": ["u1", "u2", "u3"],
            "timestamp": ["2026-03-10T10:00:00+01:00"] * 3,
            "properties": [{"invitee_email": "Bob@Example.com"}, None, None],
            "traits": [None, {"email": "u2@example.com"}, None],
            "context": [{"groupId": "a1", "ip": "192.168.7.9"}] * 3,
        }
    )
    structs.write_parquet(folder / "a.parquet")
    strings = pl.DataFrame(
        {
            "messageId": ["p3", "p4", "p5", "p6"],
            "type": ["track"] * 4,
            "event": ["Feature Used"] * 4,
            "userId": ["u1"] * 4,
            "timestamp": [datetime(2026, 3, 10, 9, tzinfo=UTC)] * 4,
            "properties": ['{"feature": "sso"}', "not json", '{"feature": "api"}', '{"feature": '],
            "context": ['{"groupId": "a2"}', None, '"web"', None],
            "seats": [1, 2, 3, 4],
        }
    )
    strings.write_parquet(folder / "b.parquet")
    (folder / "c.parquet").write_bytes(b"PAR1 not really")
    result = ingest(tmp_path)
    ev = result.events.sort("event_id")
    assert ev["event_id"].to_list() == ["p1", "p2", "p3"]
    assert ev["context_group_id"].to_list() == ["a1", "a1", "a2"]
    assert ev["context_ip"].to_list() == ["192.168.7.0/24", "192.168.7.0/24", None]
    assert ev["event_time"].to_list()[2] == datetime(2026, 3, 10, 9, tzinfo=UTC)
    bob = hmac.new(KEY.encode(), b"bob@example.com", hashlib.sha256).hexdigest()
    assert ev["invitee_hash"].to_list() == [bob, None, None]
    assert ev["feature"].to_list()[2] == "sso"
    got = result.quarantine.select("source_file", "line", "reason").rows()
    assert got[0] == (f"events/dt={DAY}/a.parquet", 3, "missing_message_id")
    assert got[1] == (f"events/dt={DAY}/b.parquet", 2, "wrong_type:properties")
    assert got[2] == (f"events/dt={DAY}/b.parquet", 3, "wrong_type:context")
    assert got[3][:2] == (f"events/dt={DAY}/b.parquet", 4)
    assert got[3][2].startswith("invalid_json:properties: ")
    assert got[4][:2] == (f"events/dt={DAY}/c.parquet", 0)
    assert got[4][2].startswith("unreadable_file:")
    assert json.loads(result.quarantine["raw"][0])["userId"] == "u3"


def test_parquet_with_a_wrongly_typed_column(tmp_path):
    folder = tmp_path / "events" / f"dt={DAY}"
    folder.mkdir(parents=True)
    pl.DataFrame(
        {
            "messageId": ["p1", "p2"],
            "type": ["track"] * 2,
            "event": ["e"] * 2,
            "userId": [5, None],
            "anonymousId": ["a", "b"],
            "timestamp": ["2026-03-10T10:00:00Z"] * 2,
        }
    ).write_parquet(folder / "a.parquet")
    result = ingest(tmp_path)
    assert result.events["event_id"].to_list() == ["p2"]
    assert reasons(result) == {1: "wrong_type:userId"}


@pytest.mark.parametrize("group_bytes", [1, 1 << 30])  # each day alone; all in one group
def test_several_days_at_once_equal_one_day_at_a_time_in_order(tmp_path, group_bytes):
    days = [date(2026, 3, d) for d in (12, 9, 10, 11, 13)]  # the caller's order, not the calendar's
    for n, day in enumerate(days[:4]):
        rows = [line(event(f"{n}-{i}", timestamp=f"{day}T08:00:00Z")) for i in range(50 * n)]
        late = [
            line(event(f"{n}-0")),  # a retry within the day
            line(event("everyday", timestamp=f"{day}T09:00:00Z")),  # and one on every day
            line(event(f"{n}-erased", timestamp=f"{day}T23:00:00Z", userId="gone")),
            line(event(f"{n}-ahead", timestamp="2026-03-12T12:00:00Z")),
        ]
        write(tmp_path, "a.jsonl.gz", [*rows, "not json", *late], day)
    write(tmp_path, "b.jsonl", ['{"messageId":"m1"', line(event(1, userId="u9"))], days[1])
    kwargs = {
        "catalog": load_catalog(),
        "hash_key": KEY,
        "config": IngestConfig(),
        "erased_id_hashes": frozenset(hmac_hex(pl.Series(["gone"]), KEY).to_list()),
    }
    for workers in (1, 3):
        got = list(
            ingest_arrival_days(
                tmp_path, iter(days), workers=workers, group_bytes=group_bytes, **kwargs
            )
        )
        assert [day for day, _ in got] == days
        for day, result in got:
            alone = ingest_arrival_day(tmp_path, day, **kwargs)
            assert result.events.equals(alone.events)
            assert result.quarantine.equals(alone.quarantine)
            assert result.stats == alone.stats
            assert set(result.events["arrival_date"]) <= {day}
            assert set(result.quarantine["arrival_date"]) <= {day}
    by_day = dict(got)
    # each day's bad line; the event stamped on the 12th is in the future for the 9th and 10th
    # only (24 h of tolerance); the 9th's second file has a cut line; the 13th has no folder
    assert [r.stats["quarantined"] for r in by_day.values()] == [1, 3, 2, 1, 0]
    for day, end in ((days[1], "2026-03-11"), (days[2], "2026-03-12")):
        future = by_day[day].quarantine.filter(pl.col("reason").str.starts_with("future"))
        assert future["reason"].to_list() == [f"future_timestamp:after {end}T00:00:00+00:00"]
    # a messageId sent again on a later day stays in both: `drop_seen` takes it from the later
    assert all("meveryday" in r.events["event_id"].to_list() for r in list(by_day.values())[:4])
    assert [r.stats["erased"] for r in by_day.values()] == [1, 1, 1, 1, 0]
    assert [r.stats["duplicates_in_day"] for r in by_day.values()] == [0, 1, 1, 1, 0]
    twice = list(ingest_arrival_days(tmp_path, days[:2] * 2, group_bytes=group_bytes, **kwargs))
    assert [day for day, _ in twice] == days[:2] * 2
    assert twice[0][1].events.equals(twice[2][1].events)
    assert list(ingest_arrival_days(tmp_path, [], **kwargs)) == []
    with pytest.raises(ValueError, match="workers"):
        list(ingest_arrival_days(tmp_path, days, workers=0, **kwargs))


def test_arrival_days_lists_dt_folders_in_order(tmp_path):
    for name in ("dt=2026-03-02", "dt=2026-02-28", "dt=garbage", "other"):
        (tmp_path / "events" / name).mkdir(parents=True)
    (tmp_path / "events" / "dt=2026-03-05").write_text("a file, not a folder")
    assert arrival_days(tmp_path) == [date(2026, 2, 28), date(2026, 3, 2)]
    assert arrival_days(tmp_path / "missing") == []


def test_a_day_without_files_is_empty(tmp_path):
    result = ingest(tmp_path)
    assert result.events.height == 0 and result.quarantine.height == 0
    assert result.stats == {
        "files": 0,
        "rows_in": 0,
        "accepted": 0,
        "quarantined": 0,
        "duplicates_in_day": 0,
        "erased": 0,
    }


def test_ingest_config_defaults_and_errors_name_file_and_key(tmp_path):
    cfg = load_ingest_config()
    assert (cfg.dedup_lookback_days, cfg.future_tolerance_hours) == (7, 24)
    (tmp_path / "ingest.yaml").write_text("dedup_lookback_days: 0\n")
    with pytest.raises(ConfigError) as err:
        load_ingest_config(tmp_path)
    assert "ingest.yaml" in str(err.value) and err.value.key == "dedup_lookback_days"
    (tmp_path / "ingest.yaml").write_text("future_tolerance_hour: 3\n")
    with pytest.raises(ConfigError) as err:
        load_ingest_config(tmp_path)
    assert err.value.key == "future_tolerance_hour"
