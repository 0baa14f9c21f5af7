"""A small local stand-in for the action destinations (in-app, CRM, Slack webhooks).

It does what a well-behaved destination does: verifies the HMAC signature, applies each
Idempotency-Key once and answers a repeat with 200 "duplicate". It records every request, and
can inject faults (error statuses, hangs, resets, a response lost after the effect was applied)
so the demo and the tests can watch delivery stay exactly-once.

    python -m plg_pipeline.receiver --port 8787
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from plg_pipeline.lib.delivery import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, load_destinations


@dataclass(frozen=True)
class Fault:
    """What to do to one request instead of answering it normally."""

    kind: str  # status | hang | reset | drop_after_apply
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def error(cls, status: int, retry_after: str | None = None) -> Fault:
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Apply the request, but only after `seconds` (a client with a shorter read timeout gives up)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the connection (TCP RST) before applying anything."""
        return cls("reset")

    @classmethod
    def drop_after_apply(cls) -> Fault:
        """Apply the request, then close the socket without a response: the lost-response case."""
        return cls("drop_after_apply")


FaultPlan = Callable[[str, str | None, int], Fault | None]
"""(path, idempotency key, n-th request with that key) -> fault to inject, or None."""


@dataclass(frozen=True)
class Received:
    path: str
    idempotency_key: str | None
    body: bytes
    signature_ok: bool
    outcome: str
    at: float


class Receiver:
    """Threaded HTTP server on 127.0.0.1 recording requests and applying each key once."""

    def __init__(
        self,
        secrets: Mapping[str, str],
        faults: FaultPlan | None = None,
        delay_s: float = 0.0,
        echo: bool = False,
    ):
        self.secrets = dict(secrets)  # path -> signing secret
        self.faults = faults
        self.delay_s = delay_s
        self.echo = echo
        self.requests: list[Received] = []
        self.effects: dict[str, tuple[str, dict]] = {}  # key -> (path, payload) applied once
        self._seen: Counter[str | None] = Counter()  # requests admitted per key, answered or not
        self.incomplete = 0  # requests whose client went away before sending the whole body
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.base_url

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_by_key(self) -> Counter[str | None]:
        with self._lock:
            return Counter(r.idempotency_key for r in self.requests)

    def applied(self) -> Counter[tuple[str, str]]:
        """(path, trigger_id) -> times its effect was applied; exactly-once means all 1."""
        with self._lock:
            return Counter((path, body.get("trigger_id")) for path, body in self.effects.values())

    def _verify(self, path: str, body: bytes, signature: str | None) -> bool:
        secret = self.secrets.get(path)
        if secret is None or not signature:
            return False
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    def _admit(
        self, path: str, key: str | None, body: bytes, signature: str | None
    ) -> tuple[int, Fault | None, bool]:
        with self._lock:
            self._seen[key] += 1
            nth = self._seen[key]
        fault = self.faults(path, key, nth) if self.faults else None
        return nth, fault, self._verify(path, body, signature)

    def _apply(self, path: str, key: str, body: bytes) -> str:
        with self._lock:
            if key in self.effects:
                return "duplicate"
            self.effects[key] = (path, json.loads(body))
            return "applied"

    def _log(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)
        if self.echo:
            line = {
                "path": received.path,
                "key": received.idempotency_key,
                "outcome": received.outcome,
            }
            print(json.dumps(line), flush=True)


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            summary = {"requests": len(rx.requests), "effects": len(rx.effects)}
            self._answer(200, summary)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if len(body) < length:
                # The client went away mid-request (a killed sender): like any HTTP server, act
                # on nothing and answer nothing; the request is counted, not recorded.
                with rx._lock:
                    rx.incomplete += 1
                self.close_connection = True
                return
            key = self.headers.get(IDEMPOTENCY_HEADER)
            _, fault, signature_ok = rx._admit(path, key, body, self.headers.get(SIGNATURE_HEADER))
            if rx.delay_s:
                time.sleep(rx.delay_s)
            outcome = self._handle(path, key, body, signature_ok, fault)
            rx._log(Received(path, key, body, signature_ok, outcome, time.time()))

        def _handle(
            self, path: str, key: str | None, body: bytes, signature_ok: bool, fault: Fault | None
        ) -> str:
            if fault and fault.kind == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._answer(fault.status, {"error": "injected"}, headers)
                return f"fault:{fault.status}"
            if fault and fault.kind == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self._abort()
                return "fault:reset"
            if not signature_ok:
                self._answer(401, {"error": "bad signature"})
                return "rejected:401"
            if not key:
                self._answer(400, {"error": f"missing {IDEMPOTENCY_HEADER}"})
                return "rejected:400"
            if fault and fault.kind == "hang":
                time.sleep(fault.seconds)
            outcome = rx._apply(path, key, body)
            if fault and fault.kind == "drop_after_apply":
                self._abort()
                return f"{outcome}+dropped"
            self._answer(200, {"status": outcome})
            return outcome

        def _abort(self) -> None:
            self.close_connection = True
            self.connection.close()

        def _answer(
            self, status: int, payload: dict, headers: Mapping[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (read timeout): the effect, if any, is already applied

        def finish(self) -> None:
            with contextlib.suppress(OSError, ValueError):  # socket closed by an injected fault
                super().finish()

    return Handler


def secrets_from_env(config_dir: str | None = None) -> dict[str, str]:
    """Path -> secret for every destination whose URL and secret variables are set."""
    out = {}
    for dest in load_destinations(config_dir).destinations.values():
        url, secret = os.environ.get(dest.url_env), os.environ.get(dest.secret_env)
        if url and secret:
            out[urlsplit(url).path or "/"] = secret
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Local destination receiver for plg_pipeline actions."
    )
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", action="append", default=[], metavar="PATH=SECRET",
                        help="signing secret of a path (default: from the destinations' env vars)")  # fmt: skip
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before each answer"
    )
    parser.add_argument("--config-dir")
    args = parser.parse_args(argv)
    secrets = secrets_from_env(args.config_dir)
    secrets.update(dict(item.split("=", 1) for item in args.secret))
    if not secrets:
        print(
            "no secrets: set the destinations' URL/secret env vars or pass --secret",
            file=sys.stderr,
        )
        return 2
    rx = Receiver(secrets, delay_s=args.delay, echo=True)
    rx.start(args.port, args.host)
    print(json.dumps({"listening": rx.base_url, "paths": sorted(secrets)}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        rx.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
