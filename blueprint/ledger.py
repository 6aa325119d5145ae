"""The ledger: the one record of what the supervisor believes is running.

Every command and the watchdog agree on the bot's state through `LUNARA_HOME/ledger.json`.
Writers serialise on a file lock and replace the file atomically (temp file in the same
folder, fsync, rename, fsync of the folder), so a reader without the lock always sees a
whole document, and a crash mid-write leaves the previous revision in place.

Each process is recorded with its pid *and* its create time: a pid is reused by the
kernel, and a pid whose create time differs is not ours and must never be signalled.

A ledger that is missing or corrupt is never a traceback. It is rebuilt from the best
evidence at hand — the Redis mirror's copy, then the live process table (the watchdog
runs as `python -m blueprint.watchdog --home <root>` and the bot is its direct child) —
written back under a revision above any revision known, and reported to the operator in
one sentence. The corrupt file is kept next to the ledger for inspection.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blueprint.clock import utc_iso, utc_now
from blueprint.errors import BlueprintError
from blueprint.jsonvalues import is_finite_number, is_int, kind_of, show
from blueprint.mirror import Mirror
from blueprint.paths import HomePaths
from blueprint.states import STORED_STATES, State
from blueprint.trust import replace_private

MAX_EVENTS = 100
KEEP_CORRUPT_FILES = 5
DEFAULT_LOCK_TIMEOUT_S = 10.0
CORRUPT_SUFFIX = ".corrupt-"
WATCHDOG_MODULE = "blueprint.watchdog"
REBUILT_EVENT = "ledger_rebuilt"


# What the supervisor is doing with the bot: the one set of states (blueprint.states),
# of which only STORED_STATES are ever written here.
BotState = State


class LedgerCorrupt(BlueprintError):
    """The ledger's contents are not a valid ledger document."""


@dataclass
class ProcessRecord:
    """A process we own: the pid alone is not enough, pids are reused."""

    pid: int
    create_time: float

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time}


@dataclass
class ExitRecord:
    """How the bot last ended, for the operator's `status`."""

    code: int | None
    signal: int | None
    at: str
    reason: str
    rss_mib: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "signal": self.signal,
            "at": self.at,
            "reason": self.reason,
            "rss_mib": self.rss_mib,
        }


@dataclass
class LedgerDocument:
    """One revision of the ledger, as plain data."""

    name: str
    revision: int = 0
    state: BotState = BotState.STOPPED
    watchdog: ProcessRecord | None = None
    bot: ProcessRecord | None = None
    started_at: str | None = None
    started_by: str | None = None
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)
    last_exit: ExitRecord | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str | None = None
    foreground: bool = False
    # Grace the stopping CLI asked for (`lunara stop --timeout`); the watchdog gives the
    # bot this long instead of the manifest's stop_timeout_s. None: the manifest's.
    stop_timeout_s: float | None = None
    # Where this ledger lives: the mirror under `lunara:<name>:` is shared by every home
    # of that name, and an entry of another host or home is never taken for ours.
    host: str | None = None
    home: str | None = None
    # Events added since this object was loaded: `Ledger.update` forwards them to the mirror.
    _added_events: list[dict[str, Any]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def mark_stopped(self) -> None:
        """What a finished stop leaves: no bot, no watchdog, nothing of the last run's
        settings. The event that says why is the caller's."""
        self.state = BotState.STOPPED
        self.bot = None
        self.watchdog = None
        self.foreground = False
        self.stop_timeout_s = None

    def add_event(self, kind: str, detail: str) -> dict[str, Any]:
        """Record something that happened; only the last MAX_EVENTS are kept."""
        event = {"at": utc_now(), "kind": kind, "detail": detail}
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        self._added_events.append(event)
        return event

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "state": self.state.value,
            "watchdog": self.watchdog.to_dict() if self.watchdog else None,
            "bot": self.bot.to_dict() if self.bot else None,
            "started_at": self.started_at,
            "started_by": self.started_by,
            "restarts": self.restarts,
            "restart_times": list(self.restart_times),
            "last_exit": self.last_exit.to_dict() if self.last_exit else None,
            "events": [dict(event) for event in self.events],
            "updated_at": self.updated_at,
            "foreground": self.foreground,
            "stop_timeout_s": self.stop_timeout_s,
            "host": self.host,
            "home": self.home,
        }

    @classmethod
    def from_dict(cls, data: object) -> LedgerDocument:
        """Validate untrusted data (a file, the mirror) field by field.

        Missing optional fields take their defaults so older ledgers still load; a field
        of the wrong type is corruption, never silently coerced.
        """
        if not isinstance(data, dict):
            raise LedgerCorrupt(f"the top level is {kind_of(data)}, not an object")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise LedgerCorrupt(f"'name' must be a non-empty string, got {kind_of(name)}")
        revision = data.get("revision")
        if not is_int(revision) or revision < 0:
            raise LedgerCorrupt(f"'revision' must be a non-negative integer, got {show(revision)}")
        state = data.get("state", BotState.STOPPED.value)
        if not isinstance(state, str) or state not in STORED_STATES:
            raise LedgerCorrupt(f"'state' must be one of {_choices()}, got {show(state)}")
        restarts = data.get("restarts", 0)
        if not is_int(restarts) or restarts < 0:
            raise LedgerCorrupt(f"'restarts' must be a non-negative integer, got {show(restarts)}")
        restart_times = data.get("restart_times", [])
        if not isinstance(restart_times, list) or not all(map(is_finite_number, restart_times)):
            raise LedgerCorrupt("'restart_times' must be a list of numbers")
        foreground = data.get("foreground", False)
        if not isinstance(foreground, bool):
            raise LedgerCorrupt(f"'foreground' must be true or false, got {show(foreground)}")
        stop_timeout = data.get("stop_timeout_s")
        if stop_timeout is not None and (not is_finite_number(stop_timeout) or stop_timeout < 0):
            raise LedgerCorrupt(
                f"'stop_timeout_s' must be a non-negative number or null, got {show(stop_timeout)}"
            )
        return cls(
            name=name,
            revision=revision,
            state=BotState(state),
            watchdog=_process_from(data, "watchdog"),
            bot=_process_from(data, "bot"),
            started_at=_optional_str(data, "started_at"),
            started_by=_optional_str(data, "started_by"),
            restarts=restarts,
            restart_times=[float(value) for value in restart_times],
            last_exit=_exit_from(data.get("last_exit")),
            events=_events_from(data.get("events", [])),
            updated_at=_optional_str(data, "updated_at"),
            foreground=foreground,
            stop_timeout_s=None if stop_timeout is None else float(stop_timeout),
            host=_optional_str(data, "host"),
            home=_optional_str(data, "home"),
        )


@dataclass(frozen=True)
class LedgerRead:
    """A ledger as read, and a sentence for the operator when it had to be rebuilt."""

    document: LedgerDocument
    recovered: str | None = None


@dataclass(frozen=True)
class LiveProcesses:
    """Our watchdog (and its bot child, if any) found in the process table."""

    watchdog: ProcessRecord
    bot: ProcessRecord | None
    watchdog_count: int = 1


ProcessFinder = Callable[[Path], LiveProcesses | None]


def _choices() -> str:
    return ", ".join(sorted(STORED_STATES))


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise LedgerCorrupt(f"'{key}' must be a string or null, got {show(value)}")
    return value


def _optional_int(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is not None and not is_int(value):
        raise LedgerCorrupt(f"'{where}.{key}' must be an integer or null, got {show(value)}")
    return value


def _process_from(data: dict[str, Any], key: str) -> ProcessRecord | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LedgerCorrupt(f"'{key}' must be an object or null, got {kind_of(value)}")
    pid, create_time = value.get("pid"), value.get("create_time")
    if not is_int(pid) or pid <= 0:
        raise LedgerCorrupt(f"'{key}.pid' must be a positive integer, got {show(pid)}")
    if not is_finite_number(create_time) or create_time < 0:
        raise LedgerCorrupt(f"'{key}.create_time' must be a number, got {show(create_time)}")
    return ProcessRecord(pid=pid, create_time=float(create_time))


def _exit_from(value: object) -> ExitRecord | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LedgerCorrupt(f"'last_exit' must be an object or null, got {kind_of(value)}")
    at, reason, rss = value.get("at"), value.get("reason"), value.get("rss_mib")
    if not isinstance(at, str):
        raise LedgerCorrupt(f"'last_exit.at' must be a string, got {show(at)}")
    if not isinstance(reason, str):
        raise LedgerCorrupt(f"'last_exit.reason' must be a string, got {show(reason)}")
    if rss is not None and not is_finite_number(rss):
        raise LedgerCorrupt(f"'last_exit.rss_mib' must be a number or null, got {show(rss)}")
    return ExitRecord(
        code=_optional_int(value, "code", "last_exit"),
        signal=_optional_int(value, "signal", "last_exit"),
        at=at,
        reason=reason,
        rss_mib=None if rss is None else float(rss),
    )


def _events_from(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise LedgerCorrupt(f"'events' must be a list, got {kind_of(value)}")
    events: list[dict[str, Any]] = []
    for index, event in enumerate(value):
        if not isinstance(event, dict) or not all(
            isinstance(event.get(key), str) for key in ("at", "kind", "detail")
        ):
            raise LedgerCorrupt(f"'events[{index}]' must be an object with at, kind and detail")
        events.append(dict(event))
    return events[-MAX_EVENTS:]


def parse_ledger(raw: bytes) -> LedgerDocument:
    """Turn the bytes of ledger.json into a document, or say in words why not."""
    if not raw.strip():
        raise LedgerCorrupt("the file is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LedgerCorrupt(f"not UTF-8 text at byte {error.start}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise LedgerCorrupt(f"invalid JSON at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise LedgerCorrupt("invalid JSON nested too deeply") from None
    return LedgerDocument.from_dict(data)


def salvage_revision(raw: bytes) -> int | None:
    """The revision of a corrupt ledger when it can still be read, so rebuilds count on."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if is_int(revision) and revision >= 0 else None


def watchdog_home(cmdline: Sequence[str]) -> str | None:
    """The --home of a `python [opts] -m blueprint.watchdog --home ROOT ...` command line."""
    for index in range(1, len(cmdline) - 1):
        if cmdline[index] == "-m" and cmdline[index + 1] == WATCHDOG_MODULE:
            arguments = cmdline[index + 2 :]
            break
    else:
        return None
    for position, argument in enumerate(arguments):
        if argument == "--home" and position + 1 < len(arguments):
            return arguments[position + 1]
        if argument.startswith("--home="):
            return argument.removeprefix("--home=")
    return None


def is_watchdog_cmdline(cmdline: Sequence[str], root: Path) -> bool:
    """Whether a command line is the watchdog of the home at `root` (an absolute path)."""
    home = watchdog_home(cmdline)
    if not home or not os.path.isabs(home):
        return False
    return os.path.normpath(home) == os.path.normpath(str(root))


def scan_process_table(root: Path) -> LiveProcesses | None:
    """Find our watchdog and its bot among the live processes, for a ledger rebuild.

    A watchdog's command line is only a hint: the process counts only if it runs as our
    user and holds the home's `watchdog.lock` (another user's look-alike must neither
    block a start nor be signalled by a stop).
    """
    import psutil

    from blueprint.trust import is_ours

    lock = HomePaths(root).watchdog_lock
    watchdogs: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if is_watchdog_cmdline(cmdline, root) and is_ours(process, lock):
            watchdogs.append(process)
    records: list[tuple[psutil.Process, ProcessRecord]] = []
    for process in watchdogs:
        with contextlib.suppress(psutil.Error):
            records.append((process, ProcessRecord(process.pid, process.create_time())))
    if not records:
        return None
    watchdog, record = min(records, key=lambda item: item[1].create_time)
    bot: ProcessRecord | None = None
    with contextlib.suppress(psutil.Error):
        children = [
            ProcessRecord(child.pid, child.create_time())
            for child in watchdog.children(recursive=False)
            if child.status() != psutil.STATUS_ZOMBIE
        ]
        bot = min(children, key=lambda child: child.create_time) if children else None
    return LiveProcesses(watchdog=record, bot=bot, watchdog_count=len(records))


def rebuilt_document(
    name: str,
    mirrored: LedgerDocument | None,
    live: LiveProcesses | None,
    known_revision: int,
) -> LedgerDocument:
    """The best ledger the evidence supports, numbered above every revision known."""
    document = mirrored if mirrored is not None else LedgerDocument(name=name)
    document.name = name
    # Pids come from our own process table only: a ledger read from Redis (which anyone
    # with its URL can write) names processes that `stop` would signal.
    document.watchdog = None
    document.bot = None
    if live is not None:
        document.watchdog = live.watchdog
        document.bot = live.bot
        if mirrored is None or document.state == BotState.STOPPED:
            document.state = BotState.RUNNING if live.bot else BotState.STARTING
            document.started_at = utc_iso(live.watchdog.create_time)
    document.revision = max(known_revision, document.revision) + 1
    return document


def _describe_sources(mirrored: LedgerDocument | None, live: LiveProcesses | None) -> str:
    parts: list[str] = []
    if mirrored is not None:
        parts.append(f"the Redis mirror at revision {mirrored.revision}")
    if live is not None:
        bot = f", bot pid {live.bot.pid}" if live.bot else ", no bot child"
        extra = f"; {live.watchdog_count} watchdogs found" if live.watchdog_count > 1 else ""
        parts.append(f"the process table (watchdog pid {live.watchdog.pid}{bot}{extra})")
    if not parts:
        return "no mirror or live process found, so it starts again as stopped"
    return "rebuilt from " + " and ".join(parts)


def _parsed(raw: bytes | None) -> LedgerRead | None:
    """The ledger `raw` holds; None when there is no file or it is corrupt (rebuilt then)."""
    if raw is None:
        return None
    try:
        return LedgerRead(parse_ledger(raw))
    except LedgerCorrupt:
        return None


def _shows_running_system(mirrored: LedgerDocument | None, live: LiveProcesses | None) -> bool:
    return live is not None or (mirrored is not None and mirrored.state != BotState.STOPPED)


def _encode(document: LedgerDocument) -> bytes:
    return (json.dumps(document.to_dict(), indent=2, allow_nan=False) + "\n").encode("utf-8")


class LedgerLocked(BlueprintError):
    """Another process held the ledger lock for longer than we were willing to wait."""


class Ledger:
    """ledger.json of one home, with its lock and its mirror."""

    def __init__(
        self,
        paths: HomePaths,
        name: str,
        mirror: Mirror,
        *,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        find_processes: ProcessFinder = scan_process_table,
    ) -> None:
        self.paths = paths
        self.name = name
        self.mirror = mirror
        self.host = socket.gethostname()
        self.lock_timeout_s = lock_timeout_s
        self._find_processes = find_processes

    def read(self) -> LedgerRead:
        """The current ledger; a missing or corrupt one is rebuilt and reported.

        The common path takes no lock: writers rename whole files into place. Only a
        rebuild locks, so that two readers do not both rebuild and write.
        """
        raw = self._read_bytes()
        parsed = _parsed(raw)
        if parsed is not None:
            return parsed
        if raw is None:
            evidence = self._evidence()
            if not _shows_running_system(*evidence):
                return _fresh(self.name, evidence)
        try:
            with self._locked():
                return self._read_locked()
        except BlueprintError as error:
            # Locked by another writer, or a read-only home: still answer from the
            # evidence, and say that nothing was written.
            return self._rebuild(self._read_bytes(), self._evidence(), unwritten=error.message)

    def update(self, mutate: Callable[[LedgerDocument], object]) -> LedgerDocument:
        """Read, change and write the ledger as one step under the lock; mirror the result.

        Events added by `mutate` (through `LedgerDocument.add_event`) are also sent to
        the mirror's event stream.
        """
        with self._locked():
            document = self._read_locked().document
            base_revision = document.revision
            document._added_events.clear()
            mutate(document)
            if document.state == BotState.ORPHANED:
                raise ValueError("the orphaned state is derived by status and is never stored")
            document.name = self.name
            document.host, document.home = self.host, str(self.paths.root)
            document.revision = base_revision + 1
            document.updated_at = utc_now()
            self._write(document)
        self._publish(document)
        return document

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import FileLock, Timeout

        try:
            self.paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise BlueprintError(
                f"cannot create the home {self.paths.root}: {error.strerror or error}"
            ) from None
        lock = FileLock(str(self.paths.ledger_lock), timeout=self.lock_timeout_s, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise LedgerLocked(
                f"the ledger is locked by another lunara process (waited {self.lock_timeout_s:g} s "
                f"for {self.paths.ledger_lock}); try again, or look for a stuck lunara command"
            ) from None
        except OSError as error:
            raise BlueprintError(
                f"cannot lock the ledger {self.paths.ledger_lock}: {error.strerror or error}"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _read_bytes(self) -> bytes | None:
        try:
            return self.paths.ledger.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BlueprintError(
                f"cannot read the ledger {self.paths.ledger}: {error.strerror or error}"
            ) from None

    def _read_locked(self) -> LedgerRead:
        raw = self._read_bytes()
        parsed = _parsed(raw)
        if parsed is not None:
            return parsed
        evidence = self._evidence()
        if raw is None and not _shows_running_system(*evidence):
            return _fresh(self.name, evidence)
        return self._rebuild(raw, evidence)

    def _evidence(self) -> tuple[LedgerDocument | None, LiveProcesses | None]:
        """What the mirror and the process table say, for a ledger that cannot be read."""
        return self._fetch_mirrored(), self._find_processes(self.paths.root)

    def _rebuild(
        self,
        raw: bytes | None,
        evidence: tuple[LedgerDocument | None, LiveProcesses | None],
        *,
        unwritten: str | None = None,
    ) -> LedgerRead:
        """Rebuild from the evidence and write it, unless `unwritten` says why we cannot."""
        mirrored, live = evidence
        known = 0
        if raw is None:
            reason = "ledger.json was missing"
        else:
            reason = f"ledger.json was corrupt ({_corruption(raw)})"
            known = salvage_revision(raw) or 0
        if mirrored is not None:
            known = max(known, mirrored.revision)
        message = f"{reason}; {_describe_sources(mirrored, live)}"
        document = rebuilt_document(self.name, mirrored, live, known)
        document.host, document.home = self.host, str(self.paths.root)
        document._added_events.clear()
        document.add_event(REBUILT_EVENT, message)
        document.updated_at = utc_now()
        if unwritten is not None:
            return LedgerRead(document, f"{message} (not written yet: {unwritten})")
        if raw is not None:
            self._keep_corrupt_copy()
        self._write(document)
        self._publish(document)
        return LedgerRead(document, message)

    def _fetch_mirrored(self) -> LedgerDocument | None:
        """The mirror's copy, if it is this home's: another home under the same name (or
        the same path on another host) is another instance, whose processes and history
        are not ours."""
        data = self.mirror.fetch_ledger()
        if data is None:
            return None
        try:
            mirrored = LedgerDocument.from_dict(data)
        except LedgerCorrupt:
            return None
        if (mirrored.host, mirrored.home) != (self.host, str(self.paths.root)):
            return None
        return mirrored

    def _keep_corrupt_copy(self) -> None:
        """Move the bad file aside for inspection, keeping only the newest few copies."""
        ledger = self.paths.ledger
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        with contextlib.suppress(FileNotFoundError):
            os.replace(ledger, ledger.with_name(f"{ledger.name}{CORRUPT_SUFFIX}{stamp}"))
        copies = sorted(self.paths.root.glob(f"{ledger.name}{CORRUPT_SUFFIX}*"))
        for old in copies[:-KEEP_CORRUPT_FILES]:
            with contextlib.suppress(OSError):
                old.unlink()

    def _write(self, document: LedgerDocument) -> None:
        try:
            replace_private(self.paths.ledger, _encode(document), durable=True)
        except OSError as error:
            raise BlueprintError(
                f"cannot write the ledger {self.paths.ledger}: {error.strerror or error}"
            ) from None

    def _publish(self, document: LedgerDocument) -> None:
        self.mirror.publish_ledger(document.to_dict())
        for event in document._added_events:
            self.mirror.append_event({"name": self.name, "revision": document.revision, **event})
        document._added_events.clear()


class LedgerView:
    """ledger.json of one home, read only: for the bot, which reports what the watchdog
    wrote and must never rebuild, write or wait for the ledger's lock (it reads from
    inside its event loop). A missing or corrupt file reads as a fresh ledger under
    `name`, with a sentence saying so; the watchdog, which owns the file, repairs it."""

    def __init__(self, paths: HomePaths, name: str) -> None:
        self.paths = paths
        self.name = name

    def read(self) -> LedgerRead:
        try:
            raw = self.paths.ledger.read_bytes()
        except FileNotFoundError:
            return LedgerRead(LedgerDocument(self.name))
        except OSError as error:
            raise BlueprintError(
                f"cannot read the ledger {self.paths.ledger}: {error.strerror or error}"
            ) from None
        try:
            return LedgerRead(parse_ledger(raw))
        except LedgerCorrupt as error:
            return LedgerRead(
                LedgerDocument(self.name), f"ledger.json is corrupt ({error.message})"
            )


def _fresh(name: str, evidence: tuple[LedgerDocument | None, LiveProcesses | None]) -> LedgerRead:
    """A missing ledger with nothing running is a fresh start, not a recovery.

    A stopped copy in the mirror still carries the history and the revision on (a
    redeploy onto a fresh disk), without alarming the operator. Nothing is written.
    """
    mirrored, _ = evidence
    return LedgerRead(mirrored if mirrored is not None else LedgerDocument(name))


def _corruption(raw: bytes) -> str:
    try:
        parse_ledger(raw)
    except LedgerCorrupt as error:
        return error.message
    return "unreadable"
