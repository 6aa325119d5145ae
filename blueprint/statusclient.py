"""Ask the running watchdog for `lunara status` (see blueprint.statusd).

Imports nothing beyond the standard library's socket and json, so a status call that
the watchdog answers costs little more than the interpreter's start. Any problem —
no watchdog, a socket owned by someone else, a slow answer — returns None and the
caller computes the status locally instead.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

CONNECT_TIMEOUT_S = 1.0
MAX_REPLY_BYTES = 1024 * 1024


def query_status(socket_path: Path, manifest: Path, token: str | None) -> dict[str, Any] | None:
    """The watchdog's reply (`exit_code` and `report` or `message`), or None."""
    if not socket_path.exists():
        return None
    request = {"action": "status", "manifest": str(manifest), "token": token or None}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(CONNECT_TIMEOUT_S)
            connection.connect(str(socket_path))
            connection.sendall((json.dumps(request) + "\n").encode())
            with connection.makefile("rb") as reader:
                line = reader.readline(MAX_REPLY_BYTES)
        reply = json.loads(line)
    except (OSError, ValueError):
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("exit_code"), int):
        return None
    if not isinstance(reply.get("report"), dict) and not isinstance(reply.get("message"), str):
        return None
    return reply
