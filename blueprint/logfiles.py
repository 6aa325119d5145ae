"""Size-bounded log files for output the control plane captures (watchdog, bot stdout).

The bot rotates its own structured log (`logs/bot.log`) with the standard library's
RotatingFileHandler. What the watchdog captures — its own log and whatever the bot
writes to stdout/stderr outside logging (an interpreter crash, a native library) — is
appended through plain file descriptors, so it is rotated at the moments a new
descriptor is opened: when the watchdog starts and each time it starts a bot.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from blueprint.trust import open_private
from blueprint.units import MIB

MAX_BYTES = 10 * MIB
BACKUPS = 3


def rotate_if_large(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> bool:
    """Shift `path` → `path.1` → ... → `path.N` when it is over `max_bytes`; drop the oldest."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    if backups > 0:
        os.replace(path, path.with_name(f"{path.name}.1"))
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True


def open_append(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> int:
    """A private append-only descriptor on `path`, rotating it first when it is too big."""
    rotate_if_large(path, max_bytes, backups)
    return open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
