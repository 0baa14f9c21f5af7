"""SIGKILL a real delivery process mid-flight, run it again: nothing lost, nothing applied twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from plg_pipeline.lib import delivery, lake
from plg_pipeline.receiver import Receiver
from plg_pipeline_tests.test_delivery import (
    SECRETS,
    candidates,
    expected_rows,
    read_ledger,
    receiver_secrets,
)

N = 30
ROWS = expected_rows(N)
REPO = Path(__file__).resolve().parent.parent


def delivery_process(tmp_path: Path, base_url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name, secret in SECRETS.items():
        env[f"PLG_{name.upper()}_URL"] = f"{base_url}/{name}"
        env[f"PLG_{name.upper()}_SECRET"] = secret
    cmd = [sys.executable, "-m", "plg_pipeline.lib.delivery", "--warehouse", str(tmp_path / "wh.duckdb"),
           "--lake", str(tmp_path / "lake"), "--config-dir", str(tmp_path / "config")]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_killed_delivery_resumes_without_duplicates(tmp_path):
    lake.write_parquet(candidates(N), lake.table_path(tmp_path / "lake", "trigger_candidates"))
    rules = yaml.safe_load(delivery.config_path(delivery.CONFIG_FILE).read_text())
    rules["delivery"].update(concurrency=2, ledger_batch=1, backoff_base_s=0.01, read_timeout_s=5.0)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / delivery.CONFIG_FILE).write_text(yaml.safe_dump(rules))

    with Receiver(receiver_secrets(), delay_s=0.15) as rx:  # slow destination: ~13 req/s
        proc = delivery_process(tmp_path, rx.base_url)
        deadline = time.monotonic() + 30
        while len(rx.effects) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # let the server finish requests that were in flight at the kill

        after_kill = read_ledger(tmp_path / "wh.duckdb")
        recorded = set(after_kill.filter(after_kill["status"] == "delivered")["idempotency_key"])
        assert after_kill.height == ROWS  # the outbox was complete before the first send
        assert 0 < len(recorded) < ROWS and len(rx.effects) >= len(recorded)

        rx.delay_s = 0.0
        proc = delivery_process(tmp_path, rx.base_url)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out)["rows_sent"] == ROWS - len(recorded)

    table = read_ledger(tmp_path / "wh.duckdb")
    assert table["status"].to_list() == ["delivered"] * ROWS
    per_key = rx.requests_by_key()
    assert set(per_key) == set(table["idempotency_key"])
    assert all(per_key[k] == 1 for k in recorded)  # recorded delivered -> never sent again
    assert max(per_key.values()) <= 2  # at most the one in flight at the kill is resent
    applied = rx.applied()
    assert len(applied) == ROWS and set(applied.values()) == {1}
    assert all(r.signature_ok for r in rx.requests)
