"""PII: keyed hashes, truncated IPs, scrubbed JSON; and no clear PII in curated events."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import date

import polars as pl
import pytest

from plg_pipeline.lib.catalog import load_catalog
from plg_pipeline.lib.ingest import IngestConfig, ingest_arrival_day
from plg_pipeline.lib.pii import JsonScrubber, hash_emails, hmac_hex, truncate_ip

EMAIL = re.compile(r"[^@\s\"]+@[^@\s\"]+\.[a-z]+", re.I)
FULL_IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.(?!0/24)\d{1,3}\b")


def test_hmac_is_stable_per_key_and_differs_across_keys():
    values = pl.Series(["a", "b", None, "a"])
    one = hmac_hex(values, "k1")
    assert one.to_list()[0] == hmac.new(b"k1", b"a", hashlib.sha256).hexdigest()
    assert one[0] == one[3] and one[0] != one[1] and one[2] is None
    assert hmac_hex(values, "k1").equals(one)
    other = hmac_hex(values, "k2")
    assert other[0] != one[0]
    as_expr = pl.DataFrame({"v": values}).select(hmac_hex(pl.col("v"), "k1")).to_series()
    assert as_expr.to_list() == one.to_list()
    with pytest.raises(ValueError, match="PLG_HASH_KEY"):
        hmac_hex(values, "")


def test_emails_hash_in_one_canonical_form():
    frame = pl.DataFrame({"e": ["Ann@Example.COM ", "ann@example.com", None]})
    hashed = frame.select(hash_emails(pl.col("e"), "k")).to_series()
    assert hashed[0] == hashed[1] == hmac.new(b"k", b"ann@example.com", hashlib.sha256).hexdigest()


def test_truncate_ip():
    ips = ["192.168.1.77", "10.0.0.1", "2001:db8:abcd:12::1", "::1", "not an ip", None, "1.2.3"]
    got = pl.DataFrame({"ip": ips}).select(truncate_ip(pl.col("ip"))).to_series().to_list()
    assert got == ["192.168.1.0/24", "10.0.0.0/24", "2001:db8:abcd::/48", "::/48", None, None, None]


@pytest.fixture
def scrubber():
    return JsonScrubber("k", ["email", "invitee_email"], ["name", "first_name", "phone", "address"])


def test_scrubber_hashes_emails_and_drops_names_at_any_depth(scrubber):
    texts = pl.Series(
        [
            json.dumps(
                {
                    "name": "Ann",
                    "plan": "pro",
                    "Email": "Ann@X.com",
                    "team": {
                        "lead": {"first_name": "Bo", "email": "bo@x.com", "n": 1},
                        "phone": "+1 555",
                    },
                    "people": [{"name": "Cy", "note": "mail cy@x.org"}, "dee@x.io"],
                    "address": {"street": "6th St", "city": "SF"},
                    "invitee_email": ["e1@x.com", "E2@x.com"],
                }
            ),
            '{"a": 1, "name": null}',
            '{"first_name": "Z"}',
            '{"a": 1, "phone": "555", "b": {"name": "x", "c": [1, {"name": "q"}]}}',
            None,
            '{"plain": "nothing here"}',
        ]
    )
    out = scrubber.scrub(texts)
    docs = [json.loads(t) if t is not None else None for t in out.to_list()]
    h = scrubber.hash_email
    assert docs[0] == {
        "plan": "pro",
        "Email": h("ann@x.com"),
        "team": {"lead": {"email": h("bo@x.com"), "n": 1}},
        "people": [{"note": f"mail {h('cy@x.org')}"}, h("dee@x.io")],
        "invitee_email": [h("e1@x.com"), h("e2@x.com")],
    }
    assert docs[1] == {"a": 1, "name": None}
    assert docs[2] == {}
    assert docs[3] == {"a": 1, "b": {"c": [1, {}]}}
    assert docs[4] is None
    assert out[5] == texts[5]


def test_scrubber_regex_path_matches_the_json_walk(scrubber):
    texts = [
        '{"name":"Ann","email":"A@b.co","x":{"phone":"1","k":"v"},"y":"z@q.io","first_name":"F"}',
        '{"k": 1, "email" : "c@d.ee", "name": "Q"}',
        '{"email":"quote\\"d@x.com"}',
        '{"note":"write to Ann@X.com or bob@x.co.uk", "name": "Ann", "k": "ann@x.com"}',
    ]
    fast = scrubber.scrub(pl.Series(texts)).to_list()
    assert [json.loads(t) for t in fast] == [json.loads(scrubber.scrub_text(t)) for t in texts]


def test_no_email_name_or_full_ip_reaches_curated_events(tmp_path):
    lines = [
        {
            "messageId": "m1",
            "type": "identify",
            "userId": "u1",
            "timestamp": "2026-03-10T10:00:00Z",
            "traits": {
                "email": "Ann.Lee@Corp.com",
                "name": "Ann Lee",
                "firstName": "Ann",
                "lastName": "Lee",
                "phone": "+1 555 0100",
                "address": {"street": "1 Main St"},
                "role": "admin",
            },
            "context": {"ip": "203.0.113.77", "userAgent": "UA"},
        },
        {
            "messageId": "m2",
            "type": "track",
            "event": "Invite Sent",
            "userId": "u1",
            "timestamp": "2026-03-10T10:01:00Z",
            "properties": {
                "invitee_email": "bob@corp.com",
                "role": "member",
                "note": "cc carol@corp.com",
            },
            "context": {"ip": "2001:db8:1:2::9", "groupId": "acct1"},
        },
        {
            "messageId": "m3",
            "type": "track",
            "event": "Invite Accepted",
            "userId": "u2",
            "timestamp": "2026-03-10T10:02:00Z",
            "properties": {"invited_by": "Ann.Lee@corp.com"},
        },
    ]
    folder = tmp_path / "events" / "dt=2026-03-10"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))

    def ingest(key: str) -> pl.DataFrame:
        day = date(2026, 3, 10)
        config = IngestConfig()
        return ingest_arrival_day(
            tmp_path, day, catalog=load_catalog(), hash_key=key, config=config
        ).events

    events = ingest("k1")
    assert events.height == 3
    for column in events.select(pl.col(pl.String)).columns:
        for value in events[column].drop_nulls():
            assert not EMAIL.search(value), (column, value)
            assert not FULL_IPV4.search(value), (column, value)
            for name in ("Ann Lee", '"Lee"', "1 Main St", "555 0100"):
                assert name not in value, (column, value)
    by_id = {r["event_id"]: r for r in events.iter_rows(named=True)}
    assert by_id["m1"]["context_ip"] == "203.0.113.0/24"
    assert by_id["m2"]["context_ip"] == "2001:db8:1::/48"
    assert by_id["m1"]["email_hash"] == by_id["m3"]["invited_by"]
    assert json.loads(by_id["m1"]["traits"]) == {
        "email": by_id["m1"]["email_hash"],
        "role": "admin",
    }
    assert json.loads(by_id["m2"]["properties"])["invitee_email"] == by_id["m2"]["invitee_hash"]
    assert by_id["m2"]["role"] == "member" and by_id["m1"]["role"] == "admin"
    again, other = ingest("k1"), ingest("k2")
    assert again["email_hash"].equals(events["email_hash"])
    assert other["email_hash"][0] != events["email_hash"][0]
