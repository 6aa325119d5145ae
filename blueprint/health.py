"""An optional HTTP health endpoint, for platforms that insist on a web port.

Off unless PORT or LUNARA_HEALTH_PORT is set (a worker needs no port; exposing one that
nothing answers is what put the first version in a restart loop); a value that is not a
port stops the watchdog before it starts anything (exit 6). Served by the watchdog, so
it answers while the bot restarts. It binds LUNARA_HEALTH_HOST (default 127.0.0.1;
platforms that probe from outside need 0.0.0.0).

- GET /healthz → 200 while the bot is running and healthy, 503 otherwise, with a small
  JSON body: state, heartbeat age, restarts (nothing secret).
- GET /metrics → Prometheus text: restarts, RSS, heartbeat age, up, the bot's own
  counters (blueprint.metrics), and per dependency whether the bot reaches it.

Where it binds 0.0.0.0 anyone can connect, so what a client can hold is bounded: a
connection waits for its request without a thread (one selector thread reads every
request head), has READ_TIMEOUT_S to send it, and beyond MAX_PENDING waiting
connections the oldest is dropped, so idle clients can neither grow the watchdog's
threads nor shut out a probe. Complete requests are answered by WORKERS threads, at
most MAX_QUEUED waiting; one request per connection.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import selectors
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING, Any, cast

from blueprint.clock import parse_iso
from blueprint.errors import ConfigError
from blueprint.metrics import BOT_METRICS, METRICS_FILE, read_metrics
from blueprint.paths import HomePaths
from blueprint.states import Reachability
from blueprint.status import StatusReport, compute_status
from blueprint.units import MIB

if TYPE_CHECKING:
    from blueprint.ledger import Ledger
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror

DEFAULT_HOST = "127.0.0.1"
PORT_VARIABLES = ("LUNARA_HEALTH_PORT", "PORT")  # the first one set wins
PORT_PATTERN = re.compile(r"[0-9]{1,5}")


def health_address(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """Where to listen, or None when the endpoint is off.

    A port that is not one is a configuration error (exit 6) naming the variable: a
    watchdog that carried on without the endpoint would look healthy here and be
    restarted by the platform whose probe it never answers.
    """
    for variable in PORT_VARIABLES:
        raw = environ.get(variable, "").strip()
        if raw:
            break
    else:
        return None
    if not PORT_PATTERN.fullmatch(raw) or not 0 < int(raw) < 65536:
        raise ConfigError(
            f"invalid configuration: {variable}: must be a port number from 1 to 65535 "
            f"(got {raw[:10]!r})"
        )
    return environ.get("LUNARA_HEALTH_HOST") or DEFAULT_HOST, int(raw)


def render_metrics(report: StatusReport, bot: Mapping[str, float]) -> str:
    """Prometheus text exposition of one status report and the bot's counters."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, value: float | None) -> None:
        if value is None:
            return
        lines.append(f"# HELP lunara_{name} {help_text}")
        lines.append(f"# TYPE lunara_{name} {kind}")
        # Counts and byte sizes are whole numbers: written as such (146800640, not 1.468e8).
        shown = str(int(value)) if float(value).is_integer() else repr(float(value))
        lines.append(f"lunara_{name} {shown}")

    metric("up", "gauge", "1 when the bot is running and healthy.", 1.0 if report.healthy else 0.0)
    metric("restarts_total", "counter", "Bot restarts since start.", float(report.restarts))
    rss = None if report.rss_mib is None else round(report.rss_mib * MIB)
    metric("bot_rss_bytes", "gauge", "Resident memory of the bot's process tree.", rss)
    metric(
        "heartbeat_age_seconds",
        "gauge",
        "Seconds since the bot's last heartbeat.",
        report.heartbeat_age_s,
    )
    for name, help_text in BOT_METRICS.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        metric(name, kind, help_text, bot.get(name))
    lines.extend(_dependency_metrics(report.dependencies))
    return "\n".join(lines) + "\n"


def _dependency_metrics(dependencies: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """One series per dependency the bot uses (those that are `off` have none): alert on
    `lunara_dependency_up == 0`, which `lunara_up` does not cover (a restart would not
    help)."""
    if not dependencies:
        return []
    up: list[str] = []
    seen: list[str] = []
    for name, view in dependencies.items():
        state = view.get("state")
        if state == Reachability.OFF:
            continue
        label = f'{{dependency="{name}"}}'
        up.append(f"lunara_dependency_up{label} {1 if state == Reachability.OK else 0}")
        last_ok = parse_iso(view.get("last_ok_at"))
        if last_ok is not None:
            seen.append(f"lunara_dependency_last_ok_timestamp_seconds{label} {last_ok:.3f}")
    lines: list[str] = []
    if up:
        lines += [
            "# HELP lunara_dependency_up 1 when the bot reaches the dependency, 0 when it is down.",
            "# TYPE lunara_dependency_up gauge",
            *up,
        ]
    if seen:
        lines += [
            "# HELP lunara_dependency_last_ok_timestamp_seconds When the bot last reached it.",
            "# TYPE lunara_dependency_last_ok_timestamp_seconds gauge",
            *seen,
        ]
    return lines


READ_TIMEOUT_S = 5.0
"""How long a client has to send its request head, and a worker to send the answer."""
MAX_PENDING = 256
"""Connections waiting for their request head; past this the oldest is dropped."""
MAX_REQUEST_HEAD = 8 * 1024
"""A probe's GET is a few hundred bytes; a longer head is refused."""
WORKERS = 2
"""Threads answering complete requests (each reads the ledger and the process table)."""
MAX_QUEUED = 32
"""Complete requests waiting for a worker; past this a new one is dropped unanswered."""
_SELECT_S = 0.5  # how often the selector wakes to expire heads and to see a stop


class _Listener(HTTPServer):
    """Binds and listens; its serve_forever (a thread per connection) is never used."""

    request_queue_size = 128  # connections the kernel holds until the selector accepts


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head the selector has already read."""

    timeout = READ_TIMEOUT_S  # for writing the answer to a client that does not read
    protocol_version = "HTTP/1.0"  # one request per connection: nothing to hold open
    owner: HealthServer

    def setup(self) -> None:
        self.request, head = self.request  # (socket, the head read before a worker took it)
        super().setup()
        self.rfile.close()  # the socket's reader: the head is all there is to read
        self.rfile = io.BytesIO(head)

    def do_GET(self) -> None:
        self.owner.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every few seconds would flood the log


@dataclass
class _Waiting:
    deadline: float
    address: Any
    head: bytearray = field(default_factory=bytearray)


class HealthServer:
    def __init__(
        self,
        address: tuple[str, int],
        paths: HomePaths,
        manifest: Manifest,
        ledger: Ledger,
        mirror: Mirror,
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.ledger = ledger
        self.mirror = mirror
        self._handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Listener(address, self._handler)
        self._listener = self._server.socket
        self._listener.setblocking(False)
        self._waiting: OrderedDict[socket.socket, _Waiting] = OrderedDict()
        self._workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="health")
        self._queued = threading.BoundedSemaphore(MAX_QUEUED)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def waiting(self) -> int:
        """Connections waiting for their request head (for tests and debugging)."""
        return len(self._waiting)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._workers.shutdown(wait=True)
        self._server.server_close()

    # -- connections -----------------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(_SELECT_S):
                    if key.fileobj is self._listener:
                        self._accept(selector)
                    else:
                        self._read(selector, cast(socket.socket, key.fileobj))
                self._expire(selector, time.monotonic())
        finally:
            for connection in list(self._waiting):
                self._drop(selector, connection)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                connection, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, a reset before accept: try next time
                return
            connection.setblocking(False)
            selector.register(connection, selectors.EVENT_READ)
            self._waiting[connection] = _Waiting(time.monotonic() + READ_TIMEOUT_S, address)
            while len(self._waiting) > MAX_PENDING:
                self._drop(selector, next(iter(self._waiting)))

    def _read(self, selector: selectors.BaseSelector, connection: socket.socket) -> None:
        waiting = self._waiting.get(connection)
        if waiting is None:
            return
        try:
            chunk = connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(selector, connection)
            return
        waiting.head += chunk
        if len(waiting.head) > MAX_REQUEST_HEAD:
            self._drop(selector, connection)
        elif b"\r\n\r\n" in waiting.head or b"\n\n" in waiting.head:
            selector.unregister(connection)
            del self._waiting[connection]
            if not self._queued.acquire(blocking=False):
                _close(connection)
                return
            connection.setblocking(True)
            self._workers.submit(self._answer, connection, bytes(waiting.head), waiting.address)

    def _expire(self, selector: selectors.BaseSelector, now: float) -> None:
        # Oldest first: the first one still in time ends the sweep.
        while self._waiting:
            connection, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                return
            self._drop(selector, connection)

    def _drop(self, selector: selectors.BaseSelector, connection: socket.socket) -> None:
        self._waiting.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection)
        _close(connection)

    def _answer(self, connection: socket.socket, head: bytes, address: Any) -> None:
        try:
            self._handler((connection, head), address, self._server)
        except OSError:
            pass  # the client went away or did not read its answer in time
        # The server loop's boundary: a bug in one answer is reported, and serving goes on.
        except Exception as error:  # noqa: BLE001
            print(f"health: error answering a request: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)  # fmt: skip
        finally:
            _close(connection)
            self._queued.release()

    def report(self) -> StatusReport:
        return compute_status(self.paths, self.manifest, self.ledger, self.mirror)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            report = self.report()
            body = json.dumps(
                {
                    "state": report.state,
                    "healthy": report.healthy,
                    "heartbeat_age_s": report.heartbeat_age_s,
                    "restarts": report.restarts,
                }
            ).encode()
            self._send(request, 200 if report.healthy else 503, "application/json", body)
        elif path == "/metrics":
            text = render_metrics(self.report(), read_metrics(self.paths.root / METRICS_FILE))
            self._send(request, 200, "text/plain; version=0.0.4", text.encode())
        else:
            self._send(request, 404, "text/plain", b"not found\n")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, kind: str, body: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(body)


def start_health_server(
    address: tuple[str, int], paths: HomePaths, manifest: Manifest, ledger: Ledger, mirror: Mirror
) -> HealthServer:
    server = HealthServer(address, paths, manifest, ledger, mirror)
    server.start()
    return server


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
