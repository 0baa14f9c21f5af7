"""Billing, CRM and privacy CSVs: valid rows typed and deduplicated, bad rows quarantined."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest

from plg_pipeline.lib.ingest import ingest_accounts, ingest_billing, ingest_deletion_requests

BILLING_HEADER = "event_id,account_id,occurred_at,plan,seats,mrr,status,change,overage_usd"


def write(root: Path, rel: str, text: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def balanced(result) -> dict[int, str]:
    s = result.stats
    assert s["rows_in"] == s["accepted"] + s["quarantined"] + s["duplicates"]
    assert s["accepted"] == result.frame.height and s["quarantined"] == result.quarantine.height
    return dict(result.quarantine.select("line", "reason").iter_rows())


def test_billing_rows_are_typed_deduplicated_and_sorted(tmp_path):
    write(
        tmp_path,
        "billing/subscription_events.csv",
        "\n".join(
            [
                BILLING_HEADER,
                "b3,acct2,2026-02-01T00:00:00Z,pro,5,100,active,upgrade,",
                "b1,acct1,2026-01-15T12:00:00+01:00,free,3,0,trialing,new,0",
                "b2,acct1,2026-01-10 08:00:00,pro,4,80.5,active,upgrade,12.25",  # late, no offset
                "b1,acct1,2026-01-15T12:00:00+01:00,free,3,0,trialing,new,0",  # resent
            ]
        )
        + "\n",
    )
    result = ingest_billing(tmp_path)
    assert balanced(result) == {}
    assert result.stats["duplicates"] == 1
    frame = result.frame
    assert frame["event_id"].to_list() == ["b2", "b1", "b3"]
    assert frame["occurred_at"].to_list()[1] == datetime(2026, 1, 15, 11, tzinfo=UTC)
    assert frame["seats"].to_list() == [4, 3, 5]
    assert frame["mrr"].to_list() == [80.5, 0.0, 100.0]
    assert frame["overage_usd"].to_list() == [12.25, 0.0, 0.0]


def test_bad_billing_rows_each_have_a_reason(tmp_path):
    rows = [
        BILLING_HEADER,
        ",acct1,2026-01-01T00:00:00Z,pro,1,10,active,new,0",
        "b2,acct1,last tuesday,pro,1,10,active,new,0",
        "b3,acct1,2026-01-01T00:00:00Z,pro,two,10,active,new,0",
        "b4,acct1,2026-01-01T00:00:00Z,pro,1,-5,active,new,0",
        "b5,acct1,2026-01-01T00:00:00Z,pro,1,10,paused,new,0",
        "b6,acct1,2026-01-01T00:00:00Z,pro,1,10,active,expand,0",
        "b7,acct1,2026-01-01T00:00:00Z,pro,1,10,active",
        "b8,acct1,2026-01-01T00:00:00Z,pro,1.5,10,active,new,0",
        "b9,acct1,2026-01-01T00:00:00Z,pro,1,nan,active,new,0",
        "",
        "b11,acct1,2026-01-01T00:00:00Z,pro,1,10,active,new,-1",
        'b12,acct1,2026-01-01T00:00:00Z,"pro',
        'plus",1,10,active,new,0',
        "b13,acct1,2026-01-01T00:00:00Z,pro,1,10,active,renewal,0",
    ]
    write(tmp_path, "billing/subscription_events.csv", "\n".join(rows) + "\n")
    result = ingest_billing(tmp_path)
    got = {n: r.split(":")[0] for n, r in balanced(result).items()}
    assert got == {
        2: "missing_event_id",
        3: "unparseable_timestamp",
        4: "invalid_number",
        5: "negative",
        6: "unknown_status",
        7: "unknown_change",
        8: "wrong_field_count",
        9: "invalid_number",
        10: "invalid_number",
        11: "blank_line",
        12: "negative",
    }
    assert result.frame["event_id"].to_list() == ["b12", "b13"]
    assert result.frame["plan"].to_list()[0] == "pro\nplus"
    raw = dict(result.quarantine.select("line", "raw").iter_rows())
    assert raw[8] == rows[7]
    assert set(result.quarantine["source"]) == {"billing"}
    assert set(result.quarantine["source_file"]) == {"billing/subscription_events.csv"}


def test_missing_empty_and_headerless_files(tmp_path):
    missing = ingest_billing(tmp_path)
    assert missing.frame.height == 0 and missing.stats["files"] == 0 and balanced(missing) == {}
    write(tmp_path, "billing/subscription_events.csv", "")
    assert balanced(ingest_billing(tmp_path)) == {0: "empty_file"}
    write(tmp_path, "billing/subscription_events.csv", "event_id,account_id\nb1,a1\nb2,a2\n")
    reasons = balanced(ingest_billing(tmp_path))
    assert reasons == {
        2: "missing_column:occurred_at,plan,seats,mrr,status,change,overage_usd",
        3: "missing_column:occurred_at,plan,seats,mrr,status,change,overage_usd",
    }
    write(tmp_path, "billing/subscription_events.csv", BILLING_HEADER + "\n")
    header_only = ingest_billing(tmp_path)
    assert header_only.frame.height == 0 and balanced(header_only) == {}


def test_accounts_hash_the_owner_and_check_segments(tmp_path):
    write(
        tmp_path,
        "crm/accounts.csv",
        "\ufeffaccount_id,name,domain,segment,owner_email,industry,created_at\n"
        "a1,Initech,initech.com,smb,Peter@Initech.com,Software,2025-06-01T00:00:00Z\n"
        "a2,Globex,,mid_market,,,2025-07-01\n"
        "a3,Hooli,hooli.com,giant,x@hooli.com,Tech,2025-01-01T00:00:00Z\n"
        "a4,Acme,acme.com,enterprise,y@acme.com,Retail,\n"
        "a1,Initech again,initech.com,smb,p@initech.com,Software,2025-06-01T00:00:00Z\n"
        "a5,\xe9t\xe9,x.com,smb,z@x.com,Retail,2025-01-01T00:00:00Z\n".encode("utf-8")
        + b"a6,Bad\xff,x.com,smb,z@x.com,Retail,2025-01-01T00:00:00Z\n",
    )
    result = ingest_accounts(tmp_path, "k")
    reasons = {n: r.split(":")[0] for n, r in balanced(result).items()}
    assert reasons == {4: "unknown_segment", 5: "missing_created_at", 8: "invalid_utf8"}
    frame = result.frame
    assert frame["account_id"].to_list() == ["a1", "a2", "a5"]
    assert frame["name"].to_list() == ["Initech", "Globex", "\xe9t\xe9"]
    expected = hmac.new(b"k", b"peter@initech.com", hashlib.sha256).hexdigest()
    assert frame["owner_hash"].to_list()[:2] == [expected, None]
    assert frame["domain"].to_list()[1] is None
    assert frame["created_at"].to_list()[1] == datetime(2025, 7, 1, tzinfo=UTC)
    assert "owner_email" not in frame.columns
    assert result.stats["duplicates"] == 1


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("r1,,2026-01-01T00:00:00Z", "missing_user_id"),
        ("r1,u1,", "missing_requested_at"),
        (",u1,2026-01-01T00:00:00Z", "missing_request_id"),
        ("r1,u1,soon", "unparseable_timestamp:requested_at=soon"),
    ],
)
def test_bad_deletion_requests(tmp_path, row, reason):
    write(
        tmp_path,
        "privacy/deletion_requests.csv",
        f"request_id,user_id,requested_at\nr0,u0,2026-01-02T03:04:05Z\n{row}\n",
    )
    result = ingest_deletion_requests(tmp_path)
    assert balanced(result) == {3: reason}
    assert result.frame.rows() == [("r0", "u0", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))]
    assert result.quarantine["source"].to_list() == ["privacy"]
