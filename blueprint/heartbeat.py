"""The bot's proof of life: a file whose modification time is the last beat.

A file (not a socket or a pipe) because the watchdog, `lunara status` and an adopting
watchdog all need to read it without talking to the bot, and because it survives the
watchdog being replaced. Writes are atomic so a reader never sees a half-written beat.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from blueprint.trust import replace_private

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable


UP = "up"
STARTING = "starting"
STANDBY = "standby"
"""Reported as ``standby:WHO``: another instance of the deployment holds the instance
lease (``lunara.instance``); this bot neither polls nor trades until it takes it over."""


def write_heartbeat(path: Path, services: str | None = None) -> None:
    """Replace the heartbeat file atomically; its mtime is the time of the beat.

    ``services`` is what the bot reports of its services: ``up`` once every one has
    started, else ``starting:`` and the names still starting (`start --wait` waits for
    ``up``), or ``standby:`` and the instance that holds the lease. A program that reports nothing counts as up once it beats.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    report = "" if services is None else f" {services}"
    replace_private(path, f"{time.time():.6f} {os.getpid()}{report}\n".encode("ascii"))


def heartbeat_mtime(path: Path) -> float | None:
    """When the last beat was written (epoch seconds), or None when there is none."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def heartbeat_services(path: Path) -> str | None:
    """What the last beat reported of the bot's services: ``up``, ``starting:NAMES``, or
    None when there is no beat. A beat without a report counts as ``up``."""
    try:
        fields = path.read_text(encoding="ascii", errors="replace").split(maxsplit=2)
    except (FileNotFoundError, IsADirectoryError):
        return None
    if len(fields) < 2:
        return None
    return fields[2].strip() if len(fields) > 2 else UP


def clear_heartbeat(path: Path) -> None:
    """Forget the previous bot's beats so they are never taken for the new one's."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def heartbeat_loop(
    path: Path,
    stop: asyncio.Event,
    interval_s: float = 1.0,
    services: Callable[[], str] | None = None,
) -> None:
    """Beat every `interval_s` until `stop` is set; the first beat is immediate.

    The write is a few syscalls on a tiny file, so it runs inline: a thread hop would
    cost more than it saves, and a stalled event loop *should* stop the beats. asyncio
    is imported here, not at the top: `lunara status` reads heartbeats and must stay light.
    """
    import asyncio

    while not stop.is_set():
        write_heartbeat(path, None if services is None else services())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
