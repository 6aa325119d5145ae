"""Ask the running watchdog for `lunara status` (see blueprint.statusd).

Imports nothing beyond the standard library's socket and json, so a status call that
the watchdog answers costs little more than the interpreter's start. Any problem —
no watchdog, a socket owned by someone else, a slow answer — returns None and the
caller computes the status locally instead.

The request carries the caller's LUNARA_TOKEN, so it goes only to a watchdog that runs
as the caller or root: the socket file must be theirs, and so must the process the
kernel says is listening on it (SO_PEERCRED), checked before a byte is sent. A socket
another user planted in the home gets nothing and is not believed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from blueprint.units import MIB

CONNECT_TIMEOUT_S = 1.0
DECISION_TIMEOUT_S = 10.0
"""An authorization or an action waits longer than `status`: giving up there would only
fall back to the (stricter) local path, but a slow machine should not make it do so."""
MAX_REPLY_BYTES = MIB


def server_uid(connection: socket.socket) -> int:
    """The uid of the process listening on the other end, from the kernel."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    return int(struct.unpack("3i", credentials)[1])


def query_status(
    socket_path: Path, manifest: Path, token: str | None, *, home_named: bool = False
) -> dict[str, Any] | None:
    """The watchdog's reply (`exit_code` and `report` or `message`), or None."""
    request = {"action": "status", "manifest": str(manifest), "token": token or None}
    reply = ask(socket_path, request, home_named=home_named)
    if reply is None:
        return None
    if not isinstance(reply.get("report"), dict) and not isinstance(reply.get("message"), str):
        return None
    return reply


def ask_authorization(
    socket_path: Path, verb: str, token: str | None, *, home_named: bool = False
) -> dict[str, Any] | None:
    """The watchdog's decision on `verb` (`exit_code` and `principal` and `manifest`, or
    `message`), or None when no watchdog of ours answers."""
    request = {"action": "authorize", "verb": verb, "token": token or None}
    reply = ask(socket_path, request, DECISION_TIMEOUT_S, home_named=home_named)
    if reply is None:
        return None
    if reply["exit_code"] == 0:
        manifest = reply.get("manifest")
        if not isinstance(reply.get("principal"), str) or not isinstance(manifest, dict):
            return None
        if not isinstance(manifest.get("path"), str):
            return None
    elif not isinstance(reply.get("message"), str):
        return None
    return reply


def ask_to_perform(
    socket_path: Path,
    verb: str,
    arguments: dict[str, Any],
    token: str | None,
    *,
    home_named: bool = False,
) -> dict[str, Any] | None:
    """Have the watchdog authorize and run `logs`, `audit` or `stop` (for a caller who
    is not the home's owner); its reply, or None when no watchdog of ours answers."""
    request = {"action": "perform", "verb": verb, "arguments": arguments, "token": token or None}
    reply = ask(socket_path, request, DECISION_TIMEOUT_S, home_named=home_named)
    if reply is not None and reply["exit_code"] != 0 and not isinstance(reply.get("message"), str):
        return None
    return reply


def ask(
    socket_path: Path,
    request: dict[str, Any],
    timeout_s: float = CONNECT_TIMEOUT_S,
    *,
    home_named: bool = False,
) -> dict[str, Any] | None:
    """One request to the watchdog of ours listening at `socket_path`; its reply (a JSON
    object with an int `exit_code`), or None.

    Ours: the caller's or root's. With `home_named` (the caller gave the home with
    --home or LUNARA_HOME, not the ./.lunara default that a shared directory could
    hold), also the home's owner's, when others cannot write the home: that is how a
    member of the manifest's control group, or root, reaches a deployment run by
    another user. Such a listener is sent no token: the caller is known to it by
    SO_PEERCRED, and a credential never leaves for another user's process.
    """
    own = {os.geteuid(), 0}
    trusted = set(own)
    try:
        info = os.lstat(socket_path)
        home = os.stat(socket_path.parent)
    except OSError:
        return None
    if home_named and not home.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        trusted.add(home.st_uid)
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in trusted:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout_s)
            connection.connect(str(socket_path))
            listener = server_uid(connection)
            if listener not in trusted:
                return None
            if listener not in own:
                request = {**request, "token": None}
            connection.sendall((json.dumps(request) + "\n").encode())
            with connection.makefile("rb") as reader:
                line = reader.readline(MAX_REPLY_BYTES)
        reply = json.loads(line)
    except (OSError, ValueError):
        return None
    if not isinstance(reply, dict) or not isinstance(reply.get("exit_code"), int):
        return None
    return reply
