"""The control plane's verbs: start, stop, restart and run, over ledger and processes.

What `status` says is computed in blueprint.status (the watchdog's status socket and
health endpoint use it without a controller); the verbs here report through it.

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
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from blueprint.errors import BlueprintError, ConfigError, ExitCode, StartFailed
from blueprint.exit_message import is_invalid_config
from blueprint.heartbeat import STANDBY, heartbeat_mtime, heartbeat_services
from blueprint.heartbeat import UP as SERVICES_UP
from blueprint.logfiles import open_append
from blueprint.paths import HomePaths
from blueprint.process import (
    descendants,
    find_process,
    kill_tree,
    signal_process,
    wait_gone,
)
from blueprint.states import ControlEvent, State
from blueprint.status import StatusReport, bot_started, redact, report_of

if TYPE_CHECKING:
    import subprocess

    from blueprint.ledger import Ledger, LedgerDocument, ProcessRecord
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror

POLL_S = 0.05
HANDSHAKE_TIMEOUT_S = 20.0
START_LOCK_TIMEOUT_S = 120.0
WATCHDOG_EXIT_GRACE_S = 5.0
EXIT_RECORD_WAIT_S = 2.0
LOG_LINES_ON_FAILURE = 15


class Supervisor(Protocol):
    """A foreground watchdog as `run` needs it (blueprint.watchdog.Watchdog)."""

    def prepare(self) -> None: ...

    def run(self) -> int: ...


class SupervisorFactory(Protocol):
    """Builds the foreground watchdog; `run`'s caller hands it in, so the controller
    does not import the watchdog (which serves status, which must not need the verbs)."""

    def __call__(
        self,
        paths: HomePaths,
        manifest: Manifest,
        ledger: Ledger,
        *,
        started_by: str,
        foreground: bool,
        adopt: bool,
        lock_fd: int | None = None,
    ) -> Supervisor: ...


@dataclass
class ActionResult:
    changed: bool
    message: str
    status: StatusReport


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


def _reap_when_it_exits(popen: subprocess.Popen[bytes]) -> None:
    """Wait for a spawned watchdog on a daemon thread, which holds its Popen until it ends.

    The CLI exits long before its watchdog, which lives on in a session of its own and
    passes to init. A process that outlives `start` (a test, a program driving the
    controller) is the watchdog's parent for good: this collects its exit, so it leaves
    no zombie and its Popen is never dropped while it runs."""
    import threading

    threading.Thread(target=popen.wait, name=f"reap-watchdog-{popen.pid}", daemon=True).start()


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
        return report_of(
            read.document, self.paths, self.manifest, self.mirror, principal, read.recovered
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

            from blueprint.envfile import deployment_environment

            popen = subprocess.Popen(
                self.watchdog_command(principal, adopt=adopt),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=deployment_environment(self.environ, self.manifest.program.environment),
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
            _reap_when_it_exits(popen)
            raise StartFailed(
                f"the watchdog did not register within {HANDSHAKE_TIMEOUT_S:g} s"
                + self._log_excerpt(self.paths.watchdog_log)
            )
        if popen.poll() is None:
            _reap_when_it_exits(popen)
        else:
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
            self._raise_if_start_failed(doc, first_bot)
            report = self._services_report(doc)
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

    def _raise_if_start_failed(self, doc: LedgerDocument, first_bot: ProcessRecord | None) -> None:
        """A start that can no longer succeed fails now, saying why."""
        if str(doc.state) == State.FATAL:
            raise self._start_failure("the bot crash-looped during start (state fatal)", None)
        if find_process(doc.watchdog) is None:
            raise self._start_failure("the watchdog exited during start", None)
        if first_bot is not None and (doc.bot != first_bot or find_process(first_bot) is None):
            raise self._start_failure("the bot exited during start", first_bot)
        if first_bot is None and str(doc.state) == State.BACKOFF:
            raise self._start_failure("the bot exited during start", None)

    def _services_report(self, doc: LedgerDocument) -> str | None:
        """The services line of the running bot's heartbeat; None before its first one."""
        bot = find_process(doc.bot)
        if bot is None:
            return None
        beat = heartbeat_mtime(self.paths.heartbeat)
        if beat is None or beat < bot_started(doc, bot):
            return None
        return heartbeat_services(self.paths.heartbeat)

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
        def stopped(document: LedgerDocument) -> None:
            document.mark_stopped()
            document.add_event(ControlEvent.STOPPED, detail)

        self.ledger.update(stopped)

    # -- restart, run -------------------------------------------------------------

    def restart(self, principal: str, wait_s: float | None) -> ActionResult:
        stopped = self.stop(principal, None)
        started = self.start(principal, wait_s)
        prefix = "restarted" if stopped.changed else "was not running; started"
        return ActionResult(True, f"{prefix}: {started.message}", started.status)

    def run_foreground(
        self,
        principal: str,
        make_supervisor: SupervisorFactory,
        log: Callable[[str], None] | None = None,
    ) -> int:
        """Supervise in this process (containers, PID 1): returns 0 after a clean stop.

        While another supervisor holds the home (the live instance of this deployment: a
        rolling deploy's old container, or an earlier `lunara run`), wait as standby for
        it to stop (blueprint.standby), touching nothing of its ledger; 0 if stopped first.
        """
        from blueprint.standby import wait_for_home

        lock_fd = wait_for_home(self.paths, log or (lambda line: print(line, flush=True)))
        if lock_fd is None:
            return int(ExitCode.OK)
        # The supervisor owns the lock from here (the process ends if it cannot start).
        with self._start_lock():
            doc = self.ledger.read().document
            supervisor = make_supervisor(
                self.paths,
                self.manifest,
                self.ledger,
                started_by=principal,
                foreground=True,
                adopt=find_process(doc.bot) is not None,
                lock_fd=lock_fd,
            )
            supervisor.prepare()
        code = supervisor.run()
        if code == ExitCode.INVALID_CONFIG:
            last_exit = self.ledger.read().document.last_exit
            reason = last_exit.reason if last_exit else "invalid configuration"
            raise ConfigError(redact(reason, self.environ))
        return code
