"""The bot's last word: one line saying why it exited on purpose, left for the watchdog.

A bot that refuses to run (its configuration is invalid: exit 6) says why on stderr, but
that output lands in `logs/bot-output.log` among every earlier run's. So it also leaves
the reason in `LUNARA_HOME/exit-message`, the way Kubernetes takes a container's
termination message from a file: the watchdog clears the file before each start and
takes it when the bot exits, into the ledger's `last_exit.reason`, where `status` and
`start --wait` find it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from blueprint.errors import ExitCode
from blueprint.paths import HomePaths
from blueprint.trust import replace_private

EXIT_MESSAGE_FILE = "exit-message"
MAX_CHARS = 500


def is_invalid_config(code: int | None, signum: int | None) -> bool:
    """The bot refused its configuration (exit 6): restarting it cannot help."""
    return signum is None and code == ExitCode.INVALID_CONFIG


def exit_message_path(paths: HomePaths) -> Path:
    return paths.root / EXIT_MESSAGE_FILE


def one_line(text: str) -> str:
    """`text` on one line (any run of whitespace, newlines included, is one space), bounded."""
    return " ".join(text.split())[:MAX_CHARS]


def leave_exit_message(paths: HomePaths, text: str) -> None:
    """Write the reason for the watchdog; never fails (the exit code still tells)."""
    if not paths.root.is_dir():
        return  # not under a watchdog's home: nobody to read it, nothing to create
    with contextlib.suppress(OSError):
        replace_private(exit_message_path(paths), (one_line(text) + "\n").encode("utf-8"))


def take_exit_message(paths: HomePaths) -> str | None:
    """The reason the last bot left, if any; the file is removed so it is read once."""
    try:
        descriptor = os.open(exit_message_path(paths), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_CHARS * 4)
    clear_exit_message(paths)
    return one_line(data.decode("utf-8", errors="replace")) or None


def clear_exit_message(paths: HomePaths) -> None:
    with contextlib.suppress(OSError):
        exit_message_path(paths).unlink()
