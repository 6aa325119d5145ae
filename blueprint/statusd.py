"""The watchdog answers `lunara status` over a private Unix socket.

`lunara status` is called every few seconds by container HEALTHCHECKs and CI loops.
The watchdog already holds the truth (it supervises the bot), so, like supervisorctl
asking supervisord, the status client asks it instead of loading the whole control
plane. The answer is computed by the same `blueprint.status` as the local path, and
the request is authorized and audited exactly as a local command would be:

- identity: the peer's uid from the kernel (SO_PEERCRED) → `os_user:<login>`, or a
  `token:<name>` when the client sends a LUNARA_TOKEN that matches the manifest (a
  token that matches none is refused with exit 4, never taken for the peer's uid);
- authorization: `bot.status` against the manifest the client names (loaded with the
  same validation, cached by path, size and modification time);
- audit: the decision and the outcome, like the CLI.

The socket lives in LUNARA_HOME with mode 0600, so only the home's owner can connect;
anyone else (and any failure at all) falls back to the local path.

Wire format: one JSON object per line each way. Request
`{"action": "status", "manifest": "/abs/path", "token": "..."|null}`; reply
`{"exit_code": N, "report": {...}}` or `{"exit_code": N, "message": "..."}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blueprint.errors import BlueprintError, ExitCode
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    from blueprint.ledger import Ledger
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 2.0


def peer_uid(connection: socket.socket) -> int:
    """The uid of the process on the other end of a Unix socket, from the kernel."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


class _ManifestCache:
    """Manifests by path, reloaded (and re-validated) when the file changes."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int, int], Manifest]] = {}
        self._lock = threading.Lock()

    def load(self, path: Path) -> Manifest:
        from blueprint.manifest import load_manifest

        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size, stat.st_mode)
        with self._lock:
            cached = self._entries.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
        manifest = load_manifest(path)
        with self._lock:
            self._entries[path] = (key, manifest)
        return manifest


class StatusServer:
    """Serves status requests from a thread until `close()`."""

    def __init__(self, paths: HomePaths, ledger: Ledger, mirror: Mirror) -> None:
        self.paths = paths
        self.ledger = ledger
        self.mirror = mirror
        self._manifests = _ManifestCache()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        path = self.paths.control_socket
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
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="status-server", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.paths.control_socket.unlink()

    def _handle(self, connection: socket.socket, reader: Any, writer: Any) -> None:
        line = reader.readline(MAX_REQUEST_BYTES)
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or request.get("action") != "status":
                raise ValueError("unsupported request")
            reply = self.answer(request, peer_uid(connection))
        except (ValueError, OSError) as error:
            reply = {"exit_code": int(ExitCode.USAGE), "message": f"bad request: {error}"}
        writer.write((json.dumps(reply) + "\n").encode())

    def answer(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """Authorize, audit and compute one status request, as the local CLI would."""
        from blueprint.audit import AuditLog, Decision, authorize, identify
        from blueprint.status import compute_status

        manifest_path = Path(str(request.get("manifest", "")))
        token = request.get("token")
        try:
            if not manifest_path.is_absolute():
                raise BlueprintError("the manifest path must be absolute", ExitCode.USAGE)
            manifest = self._manifests.load(manifest_path)
            audit = AuditLog(self.paths.audit, self.mirror)
            given = token if isinstance(token, str) else None
            principal = identify(manifest, audit, given, "bot.status", "status", uid)
            authorize(manifest, audit, principal, "bot.status", "status")
            report = compute_status(self.paths, manifest, self.ledger, self.mirror, principal)
            audit.record(principal, "status", Decision.ALLOWED, report.state)
        except FileNotFoundError:
            return {
                "exit_code": int(ExitCode.INVALID_CONFIG),
                "message": f"manifest not found: {manifest_path}",
            }
        except BlueprintError as error:
            return {"exit_code": int(error.exit_code), "message": error.message}
        return {"exit_code": int(report.exit_code()), "report": report.to_json()}
