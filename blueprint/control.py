"""The control plane's verbs: status, start, stop, restart and run, over ledger and processes.

`status` must answer fast and truthfully, so it reads the ledger and asks psutil which of
the recorded processes (pid *and* create time) are alive; what to call the result is a
pure decision (`decide_state`) over those facts. It never says `running` for a dead bot
nor `stopped` for a live one, whatever the ledger claims.

`start` spawns the watchdog detached (its own session, stdin from /dev/null, output to
`logs/watchdog.log`) under the start lock, and only releases the lock once the watchdog
has recorded itself and its bot, so concurrent starts find it. A bot left alive by a
killed watchdog is adopted by the new watchdog rather than started twice. Without
`--wait`, `start` cannot know yet whether the bot comes up, so it says `starting`; with
it, it fails with exit 6 and the bot's own one-line reason when the bot refused its
configuration, and with exit 7 and this start's log lines (not earlier runs') otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from blueprint.errors import BlueprintError, ConfigError, ExitCode, StartFailed
from blueprint.exit_message import is_invalid_config
from blueprint.heartbeat import STANDBY, heartbeat_mtime, heartbeat_services
from blueprint.heartbeat import UP as SERVICES_UP
from blueprint.logfiles import open_append
from blueprint.paths import HomePaths
from blueprint.process import (
    CREATE_TIME_TOLERANCE_S,
    descendants,
    find_process,
    kill_tree,
    signal_process,
    tree_rss_bytes,
    wait_gone,
)

if TYPE_CHECKING:
    from blueprint.ledger import ExitRecord, Ledger, LedgerDocument, ProcessRecord
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror

MIB = 1024 * 1024
POLL_S = 0.05
HANDSHAKE_TIMEOUT_S = 20.0
START_LOCK_TIMEOUT_S = 120.0
WATCHDOG_EXIT_GRACE_S = 5.0
EXIT_RECORD_WAIT_S = 2.0
LOG_LINES_ON_FAILURE = 15
INVALID_CONFIG_NOTE = (
    "invalid configuration (last_exit.reason says what): not restarted; fix it, then start"
)
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_SECRET_SHAPES = (
    (re.compile(r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b"), "[redacted]"),  # Telegram bot tokens
    (re.compile(r"(?i)\b(\w*(?:token|key|secret|passw(?:or)?d)\w*)=\S+"), r"\1=[redacted]"),
    (re.compile(r"(?i)(rediss?://[^:@/\s]*:)[^@\s]+@"), r"\1[redacted]@"),
)


class State:
    """Status states (values of blueprint.ledger.BotState; `orphaned` is derived only)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FATAL = "fatal"
    ORPHANED = "orphaned"


class ControlEvent:
    """Ledger event kinds written by the controller (the watchdog's are in its Event)."""

    START_REQUESTED = "start.requested"
    STOP_REQUESTED = "stop.requested"
    STOPPED = "bot.stopped"


# -- the pure part --------------------------------------------------------------------


@dataclass(frozen=True)
class Liveness:
    """What the process table and the heartbeat say right now."""

    watchdog_alive: bool
    bot_alive: bool
    heartbeat_age_s: float | None  # None: no beat since the current bot started
    bot_uptime_s: float | None
    heartbeat_timeout_s: float


@dataclass(frozen=True)
class Verdict:
    state: str
    healthy: bool
    notes: tuple[str, ...] = ()


def decide_state(stored: str, facts: Liveness, invalid_config: bool = False) -> Verdict:
    """Name the state from the ledger's claim and the facts; the facts win.

    `invalid_config`: the last exit had code 6, so a `fatal` state is the bot refusing its
    configuration, not a crash loop.
    """
    if stored == State.FATAL and invalid_config and not facts.bot_alive:
        return Verdict(State.FATAL, False, (INVALID_CONFIG_NOTE,))
    if not facts.watchdog_alive:
        if facts.bot_alive:
            return Verdict(
                State.ORPHANED,
                False,
                (
                    "the watchdog is gone but the bot is still running: "
                    "`lunara stop` stops it, `lunara start` adopts it",
                ),
            )
        if stored == State.FATAL:
            return Verdict(
                State.FATAL, False, ("crash loop: restarts exhausted; fix the bot, then start",)
            )
        if stored != State.STOPPED:
            return Verdict(
                State.STOPPED, False, (f"the watchdog is gone (the ledger said {stored})",)
            )
        return Verdict(State.STOPPED, False)
    if stored == State.STOPPING:
        return Verdict(State.STOPPING, False, ("a stop is in progress",))
    if stored == State.FATAL:
        return Verdict(State.FATAL, False, ("crash loop: restarts exhausted",))
    if not facts.bot_alive:
        if stored in (State.STARTING, State.STOPPED):
            return Verdict(State.STARTING, False, ("the watchdog is starting the bot",))
        return Verdict(State.BACKOFF, False, ("the bot is down; the watchdog will restart it",))
    timeout = facts.heartbeat_timeout_s
    if facts.heartbeat_age_s is None:
        uptime = facts.bot_uptime_s or 0.0
        if uptime <= 2 * timeout:
            return Verdict(State.STARTING, False, ("waiting for the bot's first heartbeat",))
        return Verdict(
            State.RUNNING, False, (f"no heartbeat since the bot started {uptime:.0f} s ago",)
        )
    if facts.heartbeat_age_s > timeout:
        return Verdict(
            State.RUNNING,
            False,
            (f"stale heartbeat: {facts.heartbeat_age_s:.1f} s old (timeout {timeout:g} s)",),
        )
    return Verdict(State.RUNNING, True)


def redact(text: str, environ: Mapping[str, str]) -> str:
    """Blank out secrets before log lines go into an error message."""
    for name, value in environ.items():
        if _SECRET_NAME.search(name) and len(value) >= 6:
            text = text.replace(value, "[redacted]")
    for shape, replacement in _SECRET_SHAPES:
        text = shape.sub(replacement, text)
    return text


# -- reports ----------------------------------------------------------------------------


@dataclass
class StatusReport:
    """`lunara status --json` (DESIGN.md): add fields, never rename them."""

    state: str
    pid: int | None
    supervisor_pid: int | None
    started_at: str | None
    uptime_s: float | None
    restarts: int
    last_exit: dict[str, Any] | None
    rss_mib: float | None
    heartbeat_age_s: float | None
    mirror: dict[str, Any]
    ledger_revision: int
    principal: str | None
    healthy: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "pid": self.pid,
            "supervisor_pid": self.supervisor_pid,
            "started_at": self.started_at,
            "uptime_s": self.uptime_s,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "rss_mib": self.rss_mib,
            "heartbeat_age_s": self.heartbeat_age_s,
            "mirror": self.mirror,
            "ledger_revision": self.ledger_revision,
            "principal": self.principal,
            "healthy": self.healthy,
            "notes": list(self.notes),
        }

    def exit_code(self) -> ExitCode:
        """0 only when running and healthy, 3 when stopped; anything else is 5.

        `starting` and `stopping` are 5 too: the bot is not yet (or no longer) known to
        work, and a CI script that wants to wait for health uses `start --wait`.
        """
        if self.state == State.RUNNING and self.healthy:
            return ExitCode.OK
        if self.state == State.STOPPED:
            return ExitCode.NOT_RUNNING
        return ExitCode.UNHEALTHY


@dataclass
class ActionResult:
    changed: bool
    message: str
    status: StatusReport


def _exit_json(record: ExitRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "code": record.code,
        "signal": record.signal,
        "at": record.at,
        "reason": record.reason,
        "rss_mib": record.rss_mib,
    }


def _parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _bot_started(doc: LedgerDocument, bot: psutil.Process) -> float:
    """When the bot started: the watchdog's wall clock, else the kernel's (coarser) record.

    psutil's create time is the boot time (whole seconds) plus ticks, so it can be up to
    a second early; the recorded start is exact unless it belongs to another process.
    """
    created = bot.create_time()
    recorded = _parse_iso(doc.started_at)
    if recorded is not None and abs(recorded - created) <= CREATE_TIME_TOLERANCE_S:
        return recorded
    return created


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


# -- the controller -----------------------------------------------------------------------


class Controller:
    """Start, stop and inspect the bot of one home under one manifest."""

    def __init__(
        self,
        paths: HomePaths,
        manifest: Manifest,
        manifest_path: Path,
        ledger: Ledger,
        mirror: Mirror,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.manifest_path = Path(manifest_path).resolve()
        self.ledger = ledger
        self.mirror = mirror
        self.environ = dict(os.environ if environ is None else environ)
        # Sizes of the captured logs when this controller's start began: a failure quotes
        # only what this start wrote, not earlier runs' output in the same files.
        self._run_offsets: dict[Path, int] = {}

    # -- status -------------------------------------------------------------------

    def status(self, principal: str | None = None) -> StatusReport:
        read = self.ledger.read()
        return self._report(read.document, principal, read.recovered)

    def _report(
        self, doc: LedgerDocument, principal: str | None, recovered: str | None = None
    ) -> StatusReport:
        now = time.time()
        watchdog = find_process(doc.watchdog)
        bot = find_process(doc.bot)
        uptime: float | None = None
        rss_mib: float | None = None
        age: float | None = None
        if bot is not None:
            try:
                started = _bot_started(doc, bot)
                uptime = max(0.0, now - started)
                rss_mib = round(tree_rss_bytes(bot) / MIB, 1)
            except psutil.Error:
                bot = None
            else:
                beat = heartbeat_mtime(self.paths.heartbeat)
                if beat is not None and beat >= started:
                    age = max(0.0, now - beat)
        facts = Liveness(
            watchdog_alive=watchdog is not None,
            bot_alive=bot is not None,
            heartbeat_age_s=age,
            bot_uptime_s=uptime,
            heartbeat_timeout_s=self.manifest.program.heartbeat_timeout_s,
        )
        last_exit = doc.last_exit
        invalid_config = last_exit is not None and is_invalid_config(
            last_exit.code, last_exit.signal
        )
        verdict = decide_state(str(doc.state), facts, invalid_config)
        notes = list(verdict.notes)
        if recovered:
            notes.insert(0, recovered)
        return StatusReport(
            state=verdict.state,
            pid=None if bot is None else bot.pid,
            supervisor_pid=None if watchdog is None else watchdog.pid,
            started_at=doc.started_at if bot is not None else None,
            uptime_s=None if uptime is None else round(uptime, 1),
            restarts=doc.restarts,
            last_exit=_exit_json(doc.last_exit),
            rss_mib=rss_mib,
            heartbeat_age_s=None if age is None else round(age, 2),
            mirror=self.mirror.health(),
            ledger_revision=doc.revision,
            principal=principal,
            healthy=verdict.healthy,
            notes=notes,
        )

    # -- start --------------------------------------------------------------------

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialise start, stop and run: each checks the ledger, then acts on it."""
        from filelock import FileLock, Timeout

        self.paths.ensure()
        lock = FileLock(str(self.paths.start_lock), timeout=START_LOCK_TIMEOUT_S, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise BlueprintError(
                f"another start or stop has held {self.paths.start_lock} for "
                f"{START_LOCK_TIMEOUT_S:g} s; try again"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def start(self, principal: str, wait_s: float | None) -> ActionResult:
        """Start the watchdog (or adopt an orphaned bot); idempotent and concurrency-safe.

        Without `wait_s` it returns once the watchdog has started the bot, saying
        `starting`: whether the bot comes up is not known yet (`status` tells). With it,
        it returns once the bot is up, or raises: ConfigError (exit 6) when the bot
        refused its configuration, StartFailed (exit 7) when it died or did not beat.
        """
        self._run_offsets = {}
        try:
            with self._start_lock():
                changed, message, spawned = self._start_locked(principal)
        except (StartFailed, ConfigError):
            raise
        except BlueprintError as error:
            raise StartFailed(error.message) from None
        if wait_s is not None:
            self._wait_first_heartbeat(wait_s)
        report = self.status(principal)
        if spawned:
            where = f"bot pid {report.pid or '-'}, watchdog pid {report.supervisor_pid or '-'}"
            if wait_s is None:
                message = (
                    f"starting ({where}); not known to be up yet: `lunara status` tells, "
                    "`lunara start --wait SECONDS` waits for it"
                )
            else:
                message = f"started ({where}); the bot is up"
        return ActionResult(changed, message, report)

    def _start_locked(self, principal: str) -> tuple[bool, str, bool]:
        """(changed, message, whether a new bot was spawned) under the start lock."""
        from blueprint.ledger import BotState

        doc = self.ledger.read().document
        watchdog = find_process(doc.watchdog)
        if watchdog is not None and doc.state in (BotState.STOPPING, BotState.FATAL):
            self._wait_watchdog_exit(watchdog, self.manifest.program.stop_timeout_s + 5)
            doc = self.ledger.read().document
            watchdog = find_process(doc.watchdog)
        if watchdog is not None:
            bot = find_process(doc.bot)
            where = f"bot pid {bot.pid}, " if bot is not None else f"{doc.state}, "
            return False, f"already running ({where}watchdog pid {watchdog.pid})", False
        orphan = find_process(doc.bot)

        def requested(document: LedgerDocument) -> None:
            document.add_event(ControlEvent.START_REQUESTED, f"start requested by {principal}")

        self.ledger.update(requested)
        self._run_offsets = {
            path: _size(path) for path in (self.paths.bot_output, self.paths.watchdog_log)
        }
        self._spawn_watchdog(principal, adopt=orphan is not None)
        if orphan is not None:
            message = f"adopted the running bot (pid {orphan.pid}) under a new watchdog"
            return True, message, False
        if str(self.ledger.read().document.state) == State.FATAL:
            raise self._start_failure("the bot could not be started (state fatal)", None)
        return True, "started", True

    def watchdog_command(self, principal: str, *, adopt: bool = False) -> list[str]:
        """The exact command line of a detached watchdog."""
        command = [
            sys.executable,
            "-m",
            "blueprint.watchdog",
            "--home",
            str(self.paths.root),
            "--manifest",
            str(self.manifest_path),
            "--started-by",
            principal,
        ]
        if adopt:
            command.append("--adopt")
        return command

    def _spawn_watchdog(self, principal: str, *, adopt: bool) -> None:
        self.paths.ensure()
        log_fd = open_append(self.paths.watchdog_log)
        try:
            import subprocess  # only `start` spawns; `status` must stay light

            popen = subprocess.Popen(
                self.watchdog_command(principal, adopt=adopt),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=self.environ,
            )
        finally:
            os.close(log_fd)

        def registered() -> bool:
            if popen.poll() is not None:
                return True
            doc = self.ledger.read().document
            if doc.watchdog is None or doc.watchdog.pid != popen.pid:
                return False
            return doc.bot is not None or str(doc.state) in (State.BACKOFF, State.FATAL)

        if not _wait_for(registered, HANDSHAKE_TIMEOUT_S):
            with contextlib.suppress(psutil.Error):
                signal_process(psutil.Process(popen.pid), signal.SIGTERM)
            raise StartFailed(
                f"the watchdog did not register within {HANDSHAKE_TIMEOUT_S:g} s"
                + self._log_excerpt(self.paths.watchdog_log)
            )
        if popen.poll() is not None:
            doc = self.ledger.read().document
            if str(doc.state) == State.FATAL:
                return  # it ran, crash-looped and gave up: the caller reports it
            if popen.returncode == ExitCode.INVALID_CONFIG:
                raise ConfigError(self._watchdog_refusal())
            raise StartFailed(
                f"the watchdog exited at once (code {popen.returncode})"
                + self._log_excerpt(self.paths.watchdog_log)
            )

    def _watchdog_refusal(self) -> str:
        """What a watchdog that refused its configuration said (its last line, this start)."""
        from blueprint.logtail import last_lines

        since = self._run_offsets.get(self.paths.watchdog_log, 0)
        said = last_lines(self.paths.watchdog_log, 1, since)
        if not said:
            return "the watchdog refused its configuration (exit 6)"
        return redact(said[0].removeprefix("watchdog: "), self.environ)

    def _wait_first_heartbeat(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        doc = self.ledger.read().document
        first_bot = doc.bot
        while True:
            doc = self.ledger.read().document
            if str(doc.state) == State.FATAL:
                raise self._start_failure("the bot crash-looped during start (state fatal)", None)
            if find_process(doc.watchdog) is None:
                raise self._start_failure("the watchdog exited during start", None)
            bot = find_process(doc.bot)
            if first_bot is not None and (doc.bot != first_bot or find_process(first_bot) is None):
                raise self._start_failure("the bot exited during start", first_bot)
            if first_bot is None and str(doc.state) == State.BACKOFF:
                raise self._start_failure("the bot exited during start", None)
            report: str | None = None
            if bot is not None:
                started = _bot_started(doc, bot)
                beat = heartbeat_mtime(self.paths.heartbeat)
                if beat is not None and beat >= started:
                    report = heartbeat_services(self.paths.heartbeat)
                    # A standby is up too: it waits, healthy, to take over (what makes a
                    # start-first rolling deploy go on).
                    if report == SERVICES_UP or (report or "").startswith(f"{STANDBY}:"):
                        return
            if first_bot is None and doc.bot is not None:
                first_bot = doc.bot
            if time.monotonic() >= deadline:
                what = (
                    f"no heartbeat from the bot within {wait_s:g} s"
                    if report is None
                    else f"the bot runs, but not every service is up within {wait_s:g} s "
                    f"({report.replace(':', ': ', 1)})"
                )
                raise StartFailed(what + self._log_excerpt(self.paths.bot_output))
            time.sleep(POLL_S)

    def _start_failure(self, what: str, dead_bot: ProcessRecord | None) -> BlueprintError:
        """The error for a start that failed, once the watchdog has recorded the exit.

        A bot that refused its configuration (exit 6, state fatal) is a ConfigError with
        its own one-line reason; anything else is StartFailed with the recorded reason
        and this start's lines of the bot's output.
        """
        if dead_bot is not None:
            _wait_for(lambda: self.ledger.read().document.bot != dead_bot, EXIT_RECORD_WAIT_S)
        doc = self.ledger.read().document
        last_exit = doc.last_exit
        fatal = str(doc.state) == State.FATAL
        if fatal and last_exit and is_invalid_config(last_exit.code, last_exit.signal):
            return ConfigError(redact(last_exit.reason, self.environ))
        reason = f" ({last_exit.reason})" if last_exit is not None else ""
        return StartFailed(what + reason + self._log_excerpt(self.paths.bot_output))

    def _log_excerpt(self, path: Path) -> str:
        """The end of `path` as written since this start began (all of it when unknown)."""
        from blueprint.logtail import last_lines

        since = self._run_offsets.get(path)
        lines = last_lines(path, LOG_LINES_ON_FAILURE, since or 0)
        if not lines:
            return f"; nothing in {path} from this start" if since else f"; {path} is empty"
        body = "\n".join(f"  {redact(line, self.environ)}" for line in lines)
        return f"; last lines of {path}:\n{body}"

    # -- stop ---------------------------------------------------------------------

    def stop(self, principal: str, timeout_s: float | None) -> ActionResult:
        """Stop the watchdog and the whole bot tree; idempotent."""
        timeout = self.manifest.program.stop_timeout_s if timeout_s is None else timeout_s
        with self._start_lock():
            changed, message = self._stop_locked(principal, timeout)
        return ActionResult(changed, message, self.status(principal))

    def _stop_locked(self, principal: str, timeout_s: float) -> tuple[bool, str]:
        from blueprint.ledger import BotState

        doc = self.ledger.read().document
        watchdog = find_process(doc.watchdog)
        bot = find_process(doc.bot)
        if watchdog is None and bot is None:
            previous = str(doc.state)
            if previous != State.STOPPED or doc.bot is not None or doc.watchdog is not None:
                self._mark_stopped(f"stale state {previous} cleared by {principal}")
                return False, f"not running (cleared the stale state {previous})"
            return False, "not running"

        def stopping(document: LedgerDocument) -> None:
            document.state = BotState.STOPPING
            document.stop_timeout_s = timeout_s  # the watchdog gives the bot this grace
            document.add_event(ControlEvent.STOP_REQUESTED, f"stop requested by {principal}")

        self.ledger.update(stopping)
        tree = [] if bot is None else [bot, *descendants(bot)]
        if watchdog is None:
            assert bot is not None
            kill_tree(bot, timeout_s)
            self._mark_stopped(f"orphaned bot stopped by {principal}")
            return True, f"stopped the orphaned bot (pid {bot.pid})"
        signal_process(watchdog, signal.SIGTERM)
        leftovers = wait_gone(tree, timeout_s + 0.5)
        for process in list(leftovers):
            leftovers.extend(descendants(process))
        self._kill_all(leftovers)
        # With no bot seen here (backoff), the watchdog may have spawned one just before
        # it took the signal: it then gives that bot the full grace before it exits.
        watchdog_grace = WATCHDOG_EXIT_GRACE_S + (0.0 if tree else timeout_s)
        if not self._wait_watchdog_exit(watchdog, watchdog_grace):
            stragglers = descendants(watchdog)
            signal_process(watchdog, signal.SIGKILL)
            wait_gone([watchdog], WATCHDOG_EXIT_GRACE_S)
            self._kill_all(stragglers)
        late = find_process(self.ledger.read().document.bot)
        if late is not None:  # recorded by a watchdog that did not live to stop it
            kill_tree(late, timeout_s)
        if str(self.ledger.read().document.state) != State.STOPPED:
            self._mark_stopped(f"stopped by {principal} (the watchdog did not finish)")
        where = f"bot pid {bot.pid}, " if bot is not None else ""
        return True, f"stopped ({where}watchdog pid {watchdog.pid})"

    @staticmethod
    def _kill_all(processes: list[psutil.Process]) -> None:
        if processes:
            for process in processes:
                signal_process(process, signal.SIGKILL)
            wait_gone(processes, WATCHDOG_EXIT_GRACE_S)

    def _wait_watchdog_exit(self, watchdog: psutil.Process, timeout_s: float) -> bool:
        return not wait_gone([watchdog], timeout_s)

    def _mark_stopped(self, detail: str) -> None:
        from blueprint.ledger import BotState

        def stopped(document: LedgerDocument) -> None:
            document.state = BotState.STOPPED
            document.bot = None
            document.watchdog = None
            document.foreground = False
            document.stop_timeout_s = None
            document.add_event(ControlEvent.STOPPED, detail)

        self.ledger.update(stopped)

    # -- restart, run -------------------------------------------------------------

    def restart(self, principal: str, wait_s: float | None) -> ActionResult:
        stopped = self.stop(principal, None)
        started = self.start(principal, wait_s)
        prefix = "restarted" if stopped.changed else "was not running; started"
        return ActionResult(True, f"{prefix}: {started.message}", started.status)

    def run_foreground(self, principal: str) -> int:
        """Supervise in this process (containers, PID 1): returns 0 after a clean stop."""
        from blueprint.watchdog import Watchdog

        with self._start_lock():
            doc = self.ledger.read().document
            watchdog = find_process(doc.watchdog)
            if watchdog is not None:
                raise BlueprintError(
                    f"already supervised by watchdog pid {watchdog.pid}; "
                    "run `lunara stop` first to supervise in the foreground"
                )
            supervisor = Watchdog(
                self.paths,
                self.manifest,
                self.ledger,
                started_by=principal,
                foreground=True,
                adopt=find_process(doc.bot) is not None,
            )
            supervisor.prepare()
        code = supervisor.run()
        if code == ExitCode.INVALID_CONFIG:
            last_exit = self.ledger.read().document.last_exit
            reason = last_exit.reason if last_exit else "invalid configuration"
            raise ConfigError(redact(reason, self.environ))
        return code
