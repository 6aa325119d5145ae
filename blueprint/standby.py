"""A second supervisor of one home waits as `standby` instead of failing or interfering.

A start-first rolling deploy starts the new container (mounting the same volume, so the
same home) before it stops the old one; an operator may type `lunara run` twice. The
home is supervised by whoever holds `watchdog.lock` (blueprint.watchdog); the newcomer
waits for that lock, writes nothing to the ledger meanwhile (the active instance's
entry is its own), and says who it is in `standby.json`, so `status` of the home names
it. Once the lock is free (the active watchdog stopped or died) it takes the home over
like any start: adopting a bot left alive, or spawning one (which then waits for the
instance lease until the old bot's expires; see `lunara.instance`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blueprint.process import find_process
from blueprint.trust import try_exclusive_lock

if TYPE_CHECKING:
    from blueprint.paths import HomePaths

STANDBY_FILE = "standby.json"
POLL_S = 0.2
REFRESH_S = 2.0
FRESH_S = 10.0
"""A standby of another host (its pid cannot be checked here) counts while its record is
this recent; it rewrites it every REFRESH_S."""


@dataclass(frozen=True)
class StandbyRecord:
    host: str
    pid: int
    create_time: float
    since: float

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "since": self.since}


def _path(paths: HomePaths) -> Any:
    return paths.root / STANDBY_FILE


def record_standby(paths: HomePaths, since: float) -> StandbyRecord:
    import psutil

    me = psutil.Process()
    record = StandbyRecord(socket.gethostname(), me.pid, me.create_time(), since)
    temporary = paths.root / f".{STANDBY_FILE}.{me.pid}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({**record.to_json(), "create_time": record.create_time}, handle)
    os.replace(temporary, _path(paths))
    return record


def clear_standby(paths: HomePaths) -> None:
    """Remove the record if it is this process's (another standby may have written since)."""
    found = _read(paths)
    if found is not None and found.pid == os.getpid() and found.host == socket.gethostname():
        with contextlib.suppress(OSError):
            _path(paths).unlink()


def _read(paths: HomePaths) -> StandbyRecord | None:
    try:
        descriptor = os.open(_path(paths), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            data = json.loads(handle.read(4096))
        return StandbyRecord(
            str(data["host"]), int(data["pid"]), float(data["create_time"]), float(data["since"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def waiting_standby(paths: HomePaths) -> StandbyRecord | None:
    """The supervisor waiting to take this home over, if one is alive."""
    record = _read(paths)
    if record is None:
        return None
    if record.host != socket.gethostname():
        try:
            age = time.time() - _path(paths).stat().st_mtime
        except OSError:
            return None
        return record if age <= FRESH_S else None
    from blueprint.ledger import ProcessRecord

    alive = find_process(ProcessRecord(pid=record.pid, create_time=record.create_time))
    return record if alive is not None else None


def try_home_lock(paths: HomePaths) -> int | None:
    """The home's supervisor lock (`watchdog.lock`) if it is free, else None."""
    paths.ensure()
    return try_exclusive_lock(paths.watchdog_lock)


def wait_for_home(paths: HomePaths, log: Callable[[str], None]) -> int | None:
    """The home's supervisor lock, taken as soon as it is free; None when SIGTERM or
    SIGINT came first (a standby stopped before it took over exits cleanly)."""
    descriptor = try_home_lock(paths)
    if descriptor is not None:
        return descriptor
    stopped = False

    def on_stop(signum: int, frame: Any) -> None:
        nonlocal stopped
        stopped = True

    previous = {sig: signal.signal(sig, on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    since = time.time()
    log(
        f"standby: another supervisor holds {paths.watchdog_lock} (the live instance of this "
        "deployment); waiting to take over when it stops"
    )
    try:
        record_standby(paths, since)
        refreshed = time.monotonic()
        while not stopped:
            descriptor = try_home_lock(paths)
            if descriptor is not None:
                log("standby: the home is free; taking over")
                return descriptor
            if time.monotonic() - refreshed >= REFRESH_S:
                record_standby(paths, since)
                refreshed = time.monotonic()
            time.sleep(POLL_S)
        log("standby: stopped before taking over")
        return None
    finally:
        clear_standby(paths)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
