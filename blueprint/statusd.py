"""The watchdog answers `lunara status` over a private Unix socket.

`lunara status` is called every few seconds by container HEALTHCHECKs and CI loops.
The watchdog already holds the truth (it supervises the bot), so, like supervisorctl
asking supervisord, the status client asks it instead of loading the whole control
plane. The answer is computed by the same `blueprint.status` as the local path, and
the request is authorized and audited exactly as a local command would be:

- identity: the peer's uid from the kernel (SO_PEERCRED) → `os_user:<login>`, or a
  `token:<name>` when the client sends a LUNARA_TOKEN that matches the manifest (a
  token that matches none is refused with exit 4, never taken for the peer's uid);
- authorization: against the manifest this watchdog was started with, never the one the
  client names (blueprint.authority): the running watchdog is the authority;
- audit: the decision and the outcome, like the CLI.

Besides `status`, it decides `authorize` requests for the other verbs on a running
deployment (`stop`, `restart`, `logs`, `audit`): it identifies, authorizes and audits
the caller, and the CLI acts once allowed.

The socket lives in LUNARA_HOME with mode 0600, so only the home's owner can connect;
anyone else (and any failure at all) falls back to the local path.

Wire format: one JSON object per line each way. Request
`{"action": "status", "manifest": "/abs/path", "token": "..."|null}`; reply
`{"exit_code": N, "report": {...}}` or `{"exit_code": N, "message": "..."}`. Request
`{"action": "authorize", "verb": "stop", "token": ...}`; reply `{"exit_code": 0,
"principal": ..., "manifest": {"path": ..., "sha256": ...}}` or a message.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any

from blueprint.errors import BlueprintError, ExitCode
from blueprint.manifest import Permission
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    from blueprint.ledger import Ledger
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror

MAX_REQUEST_BYTES = 64 * 1024
MAX_REMOTE_LINES = 10_000
REMOTE_VERBS = ("logs", "audit", "stop")
"""What a member of the control group can have the watchdog do for them."""
REQUEST_TIMEOUT_S = 2.0


def peer_uid(connection: socket.socket) -> int:
    """The uid of the process on the other end of a Unix socket, from the kernel."""
    from blueprint.statusclient import server_uid

    return server_uid(connection)


class StatusServer:
    """Serves status requests from a thread until `close()`."""

    def __init__(
        self,
        paths: HomePaths,
        ledger: Ledger,
        mirror: Mirror,
        manifest: Manifest,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.on_stop = on_stop  # the watchdog's graceful stop, for `stop` done here
        self.paths = paths
        self.ledger = ledger
        self.mirror = mirror
        self.manifest = manifest  # the one the watchdog started with: the authority
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        path = self.paths.control_socket
        gid = self._control_gid()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket from a killed watchdog; we hold the watchdog lock
        server_ref = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = REQUEST_TIMEOUT_S

            def handle(self) -> None:
                server_ref._handle(self.connection, self.rfile, self.wfile)

        old_umask = os.umask(0o177)
        try:
            server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        finally:
            os.umask(old_umask)
        if gid is not None:
            # The group reaches the socket by name (x on the home, nothing else: the
            # home's files stay 0600) and connects; the manifest decides what each may do.
            os.chown(path, -1, gid)
            os.chmod(path, self.manifest.control.mode)
            os.chown(self.paths.root, -1, gid)
            os.chmod(self.paths.root, 0o710)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="status-server", daemon=True
        )
        self._thread.start()

    def _control_gid(self) -> int | None:
        group = self.manifest.control.group
        if group is None:
            return None
        import grp

        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise OSError(f"control.group {group!r} of the manifest does not exist") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.paths.control_socket.unlink()

    def _handle(
        self, connection: socket.socket, reader: BufferedIOBase, writer: BufferedIOBase
    ) -> None:
        line = reader.readline(MAX_REQUEST_BYTES)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("unsupported request")
            if request.get("action") == "status":
                reply = self.answer(request, peer_uid(connection))
            elif request.get("action") == "authorize":
                reply = self.authorize(request, peer_uid(connection))
            elif request.get("action") == "perform":
                reply = self.perform(request, peer_uid(connection))
            else:
                raise ValueError("unsupported request")
        except (ValueError, OSError) as error:
            reply = {"exit_code": int(ExitCode.USAGE), "message": f"bad request: {error}"}
        writer.write((json.dumps(reply) + "\n").encode())

    def answer(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """Authorize, audit and compute one status request, as the local CLI would."""
        from blueprint.audit import AuditLog, Decision, authorize, identify
        from blueprint.status import compute_status

        # The manifest the client names is not consulted: it cannot widen what this
        # deployment allows (blueprint.authority).
        manifest = self.manifest
        token = request.get("token")
        try:
            audit = AuditLog(self.paths.audit, self.mirror)
            given = token if isinstance(token, str) else None
            principal = identify(manifest, audit, given, Permission.STATUS, "status", uid)
            authorize(manifest, audit, principal, Permission.STATUS, "status")
            report = compute_status(self.paths, manifest, self.ledger, self.mirror, principal)
            audit.record(principal, "status", Decision.ALLOWED, report.state)
        except BlueprintError as error:
            return {"exit_code": int(error.exit_code), "message": error.message}
        return {"exit_code": int(report.exit_code()), "report": report.to_json()}

    def perform(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """Authorize and run `logs`, `audit` or `stop` here, for a caller who is not the
        home's owner (a member of the manifest's control group): they can neither read
        the home nor signal its processes themselves."""
        from blueprint.audit import AuditLog, Decision

        verb = request.get("verb")
        if verb not in REMOTE_VERBS:
            raise ValueError(f"no such verb: {verb!r}")
        decided = self.authorize(request, uid)
        if decided["exit_code"] != 0:
            return decided
        principal = decided["principal"]
        arguments = request.get("arguments")
        arguments = arguments if isinstance(arguments, dict) else {}
        count = arguments.get("lines", 50)
        count = min(max(count, 0), MAX_REMOTE_LINES) if type(count) is int else 50
        audit = AuditLog(self.paths.audit, self.mirror)
        reply: dict[str, Any] = {"exit_code": int(ExitCode.OK)}
        if verb == "logs":
            from blueprint.logtail import interleave, last_lines

            sources = {
                "all": [self.paths.bot_log, self.paths.watchdog_log],
                "bot": [self.paths.bot_log],
                "watchdog": [self.paths.watchdog_log],
            }.get(str(arguments.get("source", "all")), [])
            shown = interleave([last_lines(p, count) for p in sources if p.exists()])
            reply["lines"] = shown[-count:] if count else []
        elif verb == "audit":
            reply["entries"] = audit.tail(max(count, 1))
        else:
            if self.on_stop is None:
                return {"exit_code": int(ExitCode.FAILURE), "message": "cannot stop from here"}
            self.on_stop()
            reply["message"] = "stopping"
        audit.record(principal, str(verb), Decision.ALLOWED, "ok", {"via": "control socket"})
        return reply

    def authorize(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """Decide (and audit) whether the caller may run a verb on this deployment, with
        the manifest this watchdog started with; the CLI then acts."""
        from blueprint.audit import AuditLog, authorize, identify
        from blueprint.authority import WATCHDOG_VERBS

        verb = request.get("verb")
        permission = WATCHDOG_VERBS.get(verb) if isinstance(verb, str) else None
        if verb is None or permission is None:
            raise ValueError(f"no such verb: {verb!r}")
        token = request.get("token")
        try:
            audit = AuditLog(self.paths.audit, self.mirror)
            given = token if isinstance(token, str) else None
            principal = identify(self.manifest, audit, given, permission, str(verb), uid)
            authorize(self.manifest, audit, principal, permission, str(verb))
        except BlueprintError as error:
            return {"exit_code": int(error.exit_code), "message": error.message}
        source = self.manifest.source
        return {
            "exit_code": int(ExitCode.OK),
            "principal": principal,
            "manifest": {
                "path": None if source is None else os.path.realpath(source),
                "sha256": self.manifest.sha256,
            },
        }
