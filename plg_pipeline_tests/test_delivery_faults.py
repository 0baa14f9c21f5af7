"""Injected destination faults: what the server saw per Idempotency-Key, and what the ledger says."""

import socket
import time

import polars as pl

from plg_pipeline.lib import delivery, warehouse
from plg_pipeline.lib import ledger as ledger_lib
from plg_pipeline.receiver import Fault, Receiver
from plg_pipeline_tests.test_delivery import (
    candidates,
    endpoints,
    expected_rows,
    fast_config,
    read_ledger,
    receiver_secrets,
)

N = 3  # t000 -> inapp, t001 -> crm, t002 -> crm + slack
ROWS = expected_rows(N)


def first_n(n: int, fault: Fault):
    """Inject `fault` on the first n requests of every key, then behave."""
    return lambda path, key, nth: fault if nth <= n else None


def run(tmp_path, rx: Receiver, **settings) -> tuple[delivery.DeliveryReport, pl.DataFrame]:
    db = tmp_path / "wh.duckdb"
    report = delivery.run_actions(
        db, candidates(N), fast_config(**settings), endpoints(rx.base_url)
    )
    return report, read_ledger(db)


def assert_applied_once(rx: Receiver) -> None:
    applied = rx.applied()
    assert len(applied) == ROWS and set(applied.values()) == {1}


def test_500s_then_success_retries_with_the_same_key(tmp_path):
    with Receiver(receiver_secrets(), faults=first_n(2, Fault.error(500))) as rx:
        report, table = run(tmp_path, rx)
    assert set(rx.requests_by_key().values()) == {3}  # 500, 500, 200 per key
    assert_applied_once(rx)
    assert report.requests == 3 * ROWS and report.outcomes == {"delivered": ROWS}
    assert table["status"].to_list() == ["delivered"] * ROWS
    assert table["attempts"].to_list() == [3] * ROWS


def test_429_honours_retry_after(tmp_path):
    with Receiver(receiver_secrets(), faults=first_n(1, Fault.error(429, retry_after="1"))) as rx:
        _, table = run(tmp_path, rx)
    assert set(rx.requests_by_key().values()) == {2}
    for key in rx.requests_by_key():
        times = [r.at for r in rx.requests if r.idempotency_key == key]
        assert times[1] - times[0] >= 0.95  # waited the Retry-After, not the 0.01 s backoff
    assert_applied_once(rx)
    assert table["attempts"].to_list() == [2] * ROWS and set(table["status"]) == {"delivered"}


def test_read_timeout_is_retried_and_applied_once(tmp_path):
    # the server applies the first request only after the client's 0.3 s read timeout
    with Receiver(receiver_secrets(), faults=first_n(1, Fault.hang(0.8))) as rx:
        report, table = run(tmp_path, rx, read_timeout_s=0.3)
        deadline = time.monotonic() + 5
        while len(rx.requests) < 2 * ROWS and time.monotonic() < deadline:
            time.sleep(0.05)  # the hung handlers finish (and log) after the client gave up
    assert set(rx.requests_by_key().values()) == {2}
    assert_applied_once(rx)
    assert report.outcomes == {"delivered": ROWS}
    assert table["attempts"].to_list() == [2] * ROWS


def test_a_sender_killed_mid_body_leaves_no_request_and_no_effect(tmp_path):
    """Headers sent, the body cut short (the sender was killed between its writes): nothing
    reached the destination to act on, and the next, whole requests are served as usual."""
    with Receiver(receiver_secrets()) as rx:
        host, port = rx.base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /inapp HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"Idempotency-Key: cut\r\n\r\n" + b'{"trigger_id": "t9'
            )
        deadline = time.monotonic() + 5
        while rx.incomplete == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rx.incomplete == 1 and rx.requests == [] and rx.effects == {}
        _, table = run(tmp_path, rx)
    assert_applied_once(rx)
    assert all(r.signature_ok for r in rx.requests)
    assert set(table["status"]) == {"delivered"}


def test_connection_reset_is_retried(tmp_path):
    with Receiver(receiver_secrets(), faults=first_n(1, Fault.reset())) as rx:
        _, table = run(tmp_path, rx)
    assert set(rx.requests_by_key().values()) == {2}
    assert [r.outcome for r in rx.requests].count("fault:reset") == ROWS
    assert_applied_once(rx)
    assert table["attempts"].to_list() == [2] * ROWS and set(table["status"]) == {"delivered"}


def test_lost_response_is_resent_with_the_same_key_and_deduplicated(tmp_path):
    with Receiver(receiver_secrets(), faults=first_n(1, Fault.drop_after_apply())) as rx:
        _, table = run(tmp_path, rx)
    for key in rx.requests_by_key():
        outcomes = [r.outcome for r in rx.requests if r.idempotency_key == key]
        assert outcomes == ["applied+dropped", "duplicate"]
    assert_applied_once(rx)
    assert table["attempts"].to_list() == [2] * ROWS and set(table["status"]) == {"delivered"}


def test_400_fails_without_retry(tmp_path):
    with Receiver(
        receiver_secrets(),
        faults=lambda path, key, nth: Fault.error(400) if path == "/crm" else None,
    ) as rx:
        report, table = run(tmp_path, rx)
    crm = table.filter(pl.col("destination") == "crm")
    assert crm["status"].to_list() == ["failed", "failed"] and crm["attempts"].to_list() == [1, 1]
    assert all(e.startswith("HTTP 400") for e in crm["last_error"])
    assert sum(n for k, n in rx.requests_by_key().items() if k in set(crm["idempotency_key"])) == 2
    assert report.outcomes == {"failed": 2, "delivered": ROWS - 2}


def test_destination_down_for_good_is_dead_lettered(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}/slack"
    db = tmp_path / "wh.duckdb"
    with Receiver(receiver_secrets()) as rx:
        eps = {**endpoints(rx.base_url), "slack": delivery.Endpoint(dead_url, "s-slack")}
        report = delivery.run_actions(db, candidates(N), fast_config(max_attempts=3), eps)
    table = read_ledger(db)
    slack = table.filter(pl.col("destination") == "slack").row(0, named=True)
    assert slack["status"] == "dead_letter" and slack["attempts"] == 3
    assert slack["last_error"].startswith("gave up after 3 attempts: ConnectError")
    assert report.outcomes == {"dead_letter": 1, "delivered": ROWS - 1}
    assert len(rx.effects) == ROWS - 1


def test_dead_letters_are_retried_on_request_and_applied_once(tmp_path):
    down = {"on": True}
    plan = lambda path, key, nth: Fault.error(503) if down["on"] and path == "/slack" else None  # noqa: E731
    db = tmp_path / "wh.duckdb"
    with Receiver(receiver_secrets(), faults=plan) as rx:
        delivery.run_actions(db, candidates(N), fast_config(max_attempts=3), endpoints(rx.base_url))
        slack_key = read_ledger(db).filter(pl.col("destination") == "slack")["idempotency_key"][0]
        assert rx.requests_by_key()[slack_key] == 3
        down["on"] = False
        plain = delivery.run_actions(
            db, candidates(N), fast_config(max_attempts=3), endpoints(rx.base_url)
        )
        assert plain.rows_sent == 0  # dead letters wait for an explicit retry
        retried = delivery.run_actions(
            db,
            candidates(N),
            fast_config(max_attempts=3),
            endpoints(rx.base_url),
            retry_dead_letters=True,
        )
    assert retried.revived == 1 and retried.outcomes == {"delivered": 1}
    assert rx.requests_by_key()[slack_key] == 4
    assert_applied_once(rx)
    table = read_ledger(db)
    assert set(table["status"]) == {"delivered"}
    with warehouse.connect(db) as con:
        assert ledger_lib.retry_dead_letters(con) == 0
