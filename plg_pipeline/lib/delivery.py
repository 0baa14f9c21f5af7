"""Deliver eligible triggers to the in-app, CRM and Slack destinations, each effect exactly once.

Exactly once end to end = at-least-once sending + a stable Idempotency-Key the destination
dedups on. The outbox ledger (lib/ledger.py) is written before anything is sent and after each
response, never held open across HTTP calls, so a killed run can simply be run again.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import queue
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

import httpx
import polars as pl
from pydantic import Field, ValidationInfo, field_validator

from plg_pipeline.lib import lake, ledger, warehouse
from plg_pipeline.lib.configfile import ConfigError, StrictModel, config_path, load_config

CONFIG_FILE = "destinations.yaml"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-PLG-Signature"
CANDIDATES_TABLE = "trigger_candidates"

TEMPLATE_FIELDS = frozenset(
    {
        "trigger_id", "account_id", "user_id", "trigger_type", "as_of_date", "route", "program",
        "surface", "response", "owner", "due_at", "expansion_mrr_potential", "score", "tier",
        "explanation",
    }
)  # fmt: skip
"""Columns a message template may use: pseudonymous ids and trigger facts, nothing personal."""

REQUIRED_COLUMNS = (*sorted(TEMPLATE_FIELDS), "suppressed", "holdout")

_ENV_NAME = r"^[A-Z][A-Z0-9_]*$"
_EMAIL = re.compile(r"[^\s@\"]+@[^\s@\"]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


class DeliverySettings(StrictModel):
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0)
    concurrency: int = Field(8, ge=1, le=64)
    ledger_batch: int = Field(50, ge=1)
    max_trigger_age_days: int | None = Field(3, ge=0)
    """Only triggers this close to the newest as_of_date are sent: history is not news."""


class Destination(StrictModel):
    kind: Literal["inapp", "crm_task", "slack"]
    url_env: str = Field(pattern=_ENV_NAME)
    secret_env: str = Field(pattern=_ENV_NAME)
    template: str
    copy_by_response: dict[str, str] = {}
    expiry_hours: int = Field(72, ge=1)

    @field_validator("template", "copy_by_response")
    @classmethod
    def _templates_use_known_fields(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        for text in [value] if isinstance(value, str) else value.values():
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name}
            if unknown := used - TEMPLATE_FIELDS:
                raise ValueError(f"template uses unknown fields {sorted(unknown)}")
        return value


class DestinationsConfig(StrictModel):
    delivery: DeliverySettings = DeliverySettings()
    destinations: dict[str, Destination]
    routes: dict[str, list[str]]

    @field_validator("routes")
    @classmethod
    def _routes_name_destinations(
        cls, routes: dict[str, list[str]], info: ValidationInfo
    ) -> dict[str, list[str]]:
        known = set(info.data.get("destinations") or {})
        for route, names in routes.items():
            if unknown := set(names) - known:
                raise ValueError(f"route {route!r} names unknown destinations {sorted(unknown)}")
        return routes


def load_destinations(config_dir: Path | str | None = None) -> DestinationsConfig:
    return load_config(config_path(CONFIG_FILE, config_dir), DestinationsConfig)


@dataclass(frozen=True)
class Endpoint:
    url: str
    secret: str = field(repr=False)


def endpoints_from_env(
    config: DestinationsConfig, environ: Mapping[str, str] = os.environ
) -> dict[str, Endpoint]:
    """URL and signing secret of every destination, from the variables the config names."""
    out = {}
    for name, dest in config.destinations.items():
        for var in (dest.url_env, dest.secret_env):
            if not environ.get(var):
                raise ConfigError("<environment>", var, f"not set (needed by destination {name!r})")
        out[name] = Endpoint(environ[dest.url_env], environ[dest.secret_env])
    return out


def idempotency_key(trigger_id: str, destination: str) -> str:
    """Same trigger and destination -> same key, in every run, so a resend is recognisable."""
    return hashlib.sha256(f"{trigger_id}\x1f{destination}".encode()).hexdigest()[:40]


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def eligible(candidates: pl.DataFrame, max_age_days: int | None = None) -> pl.DataFrame:
    """Not suppressed, not held out, and (with max_age_days) recent relative to the newest trigger.

    Age is measured against the data's newest as_of_date, not the wall clock, so a re-run of
    old data sends the same set.
    """
    keep = ~pl.col("suppressed").fill_null(False) & ~pl.col("holdout").fill_null(False)
    if max_age_days is not None:
        keep &= pl.col("as_of_date") >= pl.col("as_of_date").max() - pl.duration(days=max_age_days)
    return candidates.filter(keep)


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 2)
    return value


PAYLOAD_FIELDS = {
    "inapp": ("trigger_id", "account_id", "user_id", "trigger_type", "program", "surface", "response"),
    "crm_task": (
        "trigger_id", "account_id", "user_id", "trigger_type", "program", "owner", "score", "tier",
        "explanation", "due_at", "expansion_mrr_potential",
    ),
    "slack": ("trigger_id", "account_id", "trigger_type", "owner", "due_at"),
}  # fmt: skip
"""The allow-list: the only candidate columns each destination kind ever receives."""


def _payload(dest: Destination, facts: dict[str, object]) -> dict[str, object]:
    body = {k: facts[k] for k in PAYLOAD_FIELDS[dest.kind]}
    text_facts = {k: "" if v is None else v for k, v in facts.items()}
    if dest.kind == "inapp":
        as_of = datetime.fromisoformat(str(facts["as_of_date"])).replace(tzinfo=UTC)
        template = dest.copy_by_response.get(str(facts["response"]), dest.template)
        body.update(
            type="inapp_message",
            copy=template.format_map(text_facts),
            expires_at=(as_of + timedelta(hours=dest.expiry_hours)).isoformat(),
        )
    elif dest.kind == "crm_task":
        body.update(type="crm_task", subject=dest.template.format_map(text_facts))
    else:
        body["text"] = dest.template.format_map(text_facts)
    return body


def build_outbox(candidates: pl.DataFrame, config: DestinationsConfig) -> pl.DataFrame:
    """One row per eligible trigger x destination of its route, with the exact body to send.

    Columns: trigger_id, destination, account_id, route, idempotency_key, payload (JSON text,
    keys sorted, so the bytes, and so the signature, are the same in every run).
    """
    if missing := set(REQUIRED_COLUMNS) - set(candidates.columns):
        raise ValueError(f"trigger_candidates lacks columns {sorted(missing)}")
    todo = eligible(candidates, config.delivery.max_trigger_age_days)
    if unknown := set(todo["route"].unique().to_list()) - set(config.routes):
        raise ValueError(
            f"routes {sorted(map(str, unknown))} have no destinations in {CONFIG_FILE}"
        )
    rows = []
    for facts in todo.select(sorted(TEMPLATE_FIELDS)).iter_rows(named=True):
        facts = {k: _plain(v) for k, v in facts.items()}
        for name in config.routes[facts["route"]]:
            body = json.dumps(
                _payload(config.destinations[name], facts), sort_keys=True, separators=(",", ":")
            )
            if _EMAIL.search(body) or _IPV4.search(body):
                raise ValueError(
                    f"payload of trigger {facts['trigger_id']} for {name} looks like it holds an email or IP"
                )
            rows.append(
                {
                    "trigger_id": facts["trigger_id"],
                    "destination": name,
                    "account_id": facts["account_id"],
                    "route": facts["route"],
                    "idempotency_key": idempotency_key(facts["trigger_id"], name),
                    "payload": body,
                }
            )
    return pl.DataFrame(rows, schema=dict.fromkeys(ledger.OUTBOX_COLUMNS, pl.String))


def read_candidates(lake_dir: Path | str, warehouse_path: Path | str) -> pl.DataFrame | None:
    """trigger_candidates from the lake, else from the warehouse; None when neither has it yet."""
    path = lake.table_path(lake_dir, CANDIDATES_TABLE)
    if path.exists():
        return pl.read_parquet(path)
    if not Path(warehouse_path).exists():
        return None
    with warehouse.connect(warehouse_path) as con:
        if not warehouse.table_exists(con, CANDIDATES_TABLE):
            return None
        return warehouse.read_table(con, CANDIDATES_TABLE)


def retry_after_s(value: str | None, cap: float) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


def backoff_s(attempt: int, settings: DeliverySettings) -> float:
    """Exponential backoff with equal jitter: many rows failing together do not retry in lockstep."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


_RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def send(
    client: httpx.Client,
    row: ledger.PendingRow,
    endpoint: Endpoint,
    settings: DeliverySettings,
    emit: Callable[[ledger.Attempt], None],
) -> None:
    """POST one row until delivered, rejected (4xx) or out of attempts; `emit` each outcome."""
    body = row.payload.encode()
    headers = {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: row.idempotency_key,
        SIGNATURE_HEADER: sign(body, endpoint.secret),
    }
    attempts = row.attempts
    while True:
        attempts += 1
        code, wait = None, None
        try:
            response = client.post(endpoint.url, content=body, headers=headers)
        except _RETRYABLE_ERRORS as exc:
            error, retry = f"{type(exc).__name__}: {exc}", True
        else:
            code = response.status_code
            if 200 <= code < 300:
                emit(_attempt(row, "delivered", attempts, None, code))
                return
            error = f"HTTP {code}: {response.text[:200]}"
            retry = code >= 500 or code in (408, 429)
            wait = retry_after_s(response.headers.get("Retry-After"), settings.max_retry_after_s)
        if not retry:
            emit(_attempt(row, "failed", attempts, error, code))
            return
        if attempts >= settings.max_attempts:
            emit(
                _attempt(
                    row,
                    "dead_letter",
                    attempts,
                    f"gave up after {attempts} attempts: {error}",
                    code,
                )
            )
            return
        emit(_attempt(row, "pending", attempts, error, code))
        time.sleep(wait if wait is not None else backoff_s(attempts, settings))


def _attempt(
    row: ledger.PendingRow, status: str, attempts: int, error: str | None, code: int | None
) -> ledger.Attempt:
    return ledger.Attempt(
        row.trigger_id, row.destination, status, attempts, error, code, datetime.now(UTC)
    )


@dataclass
class DeliveryReport:
    enqueued: int = 0
    revived: int = 0
    rows_sent: int = 0
    requests: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def deliver_pending(
    warehouse_path: Path | str, config: DestinationsConfig, endpoints: Mapping[str, Endpoint]
) -> DeliveryReport:
    """Send every pending ledger row; outcomes are written in short batches as they arrive."""
    settings = config.delivery
    with warehouse.connect(warehouse_path) as con:
        rows = ledger.pending(con)
    if missing := {r.destination for r in rows} - set(endpoints):
        raise ConfigError(
            "<environment>", ",".join(sorted(missing)), "no URL/secret for these destinations"
        )
    report = DeliveryReport(rows_sent=len(rows))
    outcomes: queue.Queue[ledger.Attempt] = queue.Queue()
    timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    limits = httpx.Limits(max_connections=settings.concurrency)
    with (
        httpx.Client(timeout=timeout, limits=limits) as client,
        ThreadPoolExecutor(settings.concurrency) as pool,
    ):
        futures = [
            pool.submit(send, client, r, endpoints[r.destination], settings, outcomes.put)
            for r in rows
        ]
        finals: Counter[str] = Counter()
        while True:
            all_done = all(f.done() for f in futures)
            batch = _drain(outcomes, settings.ledger_batch)
            if batch:
                with warehouse.connect(warehouse_path) as con:
                    ledger.record(con, batch)
                report.requests += len(batch)
                finals.update(a.status for a in batch if a.status != "pending")
            elif all_done:
                break
        for f in futures:
            f.result()
    report.outcomes = dict(finals)
    return report


def _drain(outcomes: queue.Queue[ledger.Attempt], limit: int) -> list[ledger.Attempt]:
    try:
        batch = [outcomes.get(timeout=0.05)]
    except queue.Empty:
        return []
    while len(batch) < limit:
        try:
            batch.append(outcomes.get_nowait())
        except queue.Empty:
            break
    return batch


def run_actions(
    warehouse_path: Path | str,
    candidates: pl.DataFrame | None,
    config: DestinationsConfig,
    endpoints: Mapping[str, Endpoint] | None,
    *,
    dry_run: bool = False,
    retry_dead_letters: bool = False,
) -> DeliveryReport:
    """Outbox first (one transaction), then delivery. Dry run: ledger rows `dry_run`, nothing sent."""
    outbox = build_outbox(candidates, config) if candidates is not None else None
    with warehouse.connect(warehouse_path) as con:
        revived = ledger.retry_dead_letters(con) if retry_dead_letters and not dry_run else 0
        enqueued = ledger.enqueue(con, outbox, dry_run=dry_run) if outbox is not None else 0
    if dry_run:
        return DeliveryReport(enqueued=enqueued)
    report = deliver_pending(warehouse_path, config, endpoints or {})
    report.enqueued, report.revived = enqueued, revived
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Deliver eligible trigger_candidates (outbox ledger)."
    )
    parser.add_argument("--warehouse", required=True, help="DuckDB warehouse file")
    parser.add_argument("--lake", help="lake folder (default: <warehouse dir>/lake)")
    parser.add_argument("--config-dir", help="folder overriding destinations.yaml")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--retry-dead-letters", action="store_true")
    args = parser.parse_args(argv)
    config = load_destinations(args.config_dir)
    lake_dir = args.lake or Path(args.warehouse).parent / "lake"
    endpoints = None if args.dry_run else endpoints_from_env(config)
    report = run_actions(
        args.warehouse,
        read_candidates(lake_dir, args.warehouse),
        config,
        endpoints,
        dry_run=args.dry_run,
        retry_dead_letters=args.retry_dead_letters,
    )
    json.dump(asdict(report), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
