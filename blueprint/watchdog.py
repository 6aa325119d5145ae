"""The watchdog: runs the bot as its child and keeps it alive within its limits.

One watchdog per home, enforced by an exclusive `fcntl` lock on `watchdog.lock` held for
its whole life (the bot never inherits it). The watchdog

- spawns `program.command` in its own session, output appended to `logs/bot.log`, with
  `LUNARA_HOME` set, and records the bot's pid and create time in the ledger;
- restarts it after an unexpected exit with exponential backoff, and gives up (state
  `fatal`, then exits) after more than `max_restarts` restarts within `window_s`;
- never restarts a bot that exits with code 6 (its configuration is invalid: a restart
  cannot fix it): state `fatal` at once, the bot's one-line reason (blueprint.exit_message)
  in the ledger's last exit, and the watchdog exits 6;
- restarts it gracefully when its whole-tree RSS passes `memory_limit_mib` or its
  heartbeat is older than `heartbeat_timeout_s`;
- on SIGTERM/SIGINT (or the ledger saying `stopping`) stops the whole bot tree, marks the
  ledger `stopped` and exits 0;
- is a child subreaper, and reaps every orphan handed to it (also as PID 1).

With `--adopt` it takes over a bot left running by a watchdog that was killed: the bot is
not its child, so it watches the recorded (pid, create time) and cannot know the exit code.

Run as `python -m blueprint.watchdog --home ROOT --manifest PATH [--foreground] [--adopt]
[--started-by PRINCIPAL]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psutil

from blueprint.backoff import decide_restart
from blueprint.clock import parse_iso, utc_iso
from blueprint.envfile import deployment_environment, load_into_environment
from blueprint.errors import BlueprintError, ExitCode
from blueprint.exit_message import clear_exit_message, is_invalid_config, take_exit_message
from blueprint.heartbeat import clear_heartbeat, heartbeat_mtime
from blueprint.logfiles import open_append
from blueprint.paths import HomePaths, use_private_umask
from blueprint.process import (
    become_subreaper,
    find_process,
    identity_of,
    is_gone,
    kill_tree,
    reap_children,
    tree_rss_bytes,
)
from blueprint.trust import try_exclusive_lock
from blueprint.units import MIB

if TYPE_CHECKING:
    from blueprint.health import HealthServer
    from blueprint.ledger import Ledger, LedgerDocument
    from blueprint.manifest import Manifest
    from blueprint.statusd import StatusServer

TICK_S = 0.2
RSS_EVERY_S = 0.5
PYTHON_ALIASES = frozenset({"python", "python3"})
BOT_MALLOC_ARENAS = "2"
"""glibc's MALLOC_ARENA_MAX for the bot, unless the deployment passes its own (through
`program.environment`). glibc gives each thread that allocates an arena of its own, up to
8 per core; the bot's worker threads (SQLite, the exchange's requests) then keep memory
in arenas that rarely shrink. Two arenas are enough for one event loop and its few
workers, and keep the bot's peak RSS lower."""


class Event:
    """Event kinds the watchdog writes to the ledger."""

    WATCHDOG_STARTED = "watchdog.started"
    WATCHDOG_ADOPTED = "watchdog.adopted"
    BOT_SPAWNED = "bot.spawned"
    BOT_RUNNING = "bot.running"
    BOT_EXITED = "bot.exited"
    BOT_RESTARTING = "bot.restarting"
    BOT_FATAL = "bot.fatal"
    BOT_STOPPED = "bot.stopped"
    LEDGER_RESTORED = "ledger.restored"


def _ledger_lost(document: LedgerDocument, ours: LedgerDocument) -> str:
    """What `document` no longer says that we wrote (empty: nothing)."""
    lost = [
        name
        for name, now, written in (
            ("the watchdog", document.watchdog, ours.watchdog),
            ("the bot", document.bot, ours.bot),
            ("the state", document.state, ours.state),
            ("the restart count", document.restarts, ours.restarts),
        )
        if now != written
    ]
    return ", ".join(lost)


class Reason:
    """Fixed exit reasons (others are built by `describe_exit` and the limit checks)."""

    ADOPTED_EXIT = "exited while adopted"
    STOPPED = "stopped by request"


def describe_exit(code: int | None, signum: int | None) -> str:
    """An operator's sentence for how the bot ended."""
    if signum is not None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGKILL:
            return f"killed by {name} (possible out-of-memory kill)"
        return f"killed by {name}"
    if code is None:
        return Reason.ADOPTED_EXIT
    if code == ExitCode.INVALID_CONFIG:
        return f"exited with code {code} (invalid configuration)"
    return f"exited with code {code}"


def exit_reason(code: int | None, signum: int | None, message: str | None) -> str:
    """How the bot ended, with the reason it left (blueprint.exit_message) when it did.

    An invalid configuration is the bot's own words alone: they are what the operator
    must fix, and `start --wait` prints them as they are.
    """
    described = describe_exit(code, signum)
    if not message:
        return described
    if is_invalid_config(code, signum):
        return message
    return f"{described}: {message}"


def split_returncode(returncode: int) -> tuple[int | None, int | None]:
    """Popen's return code (negative for a signal) as (code, signal)."""
    if returncode < 0:
        return None, -returncode
    return returncode, None


def memory_reason(rss_mib: float, limit_mib: float) -> str:
    return f"memory limit exceeded (RSS {rss_mib:.1f} MiB > {limit_mib:g} MiB)"


def heartbeat_reason(
    now: float, started: float, last_beat: float | None, timeout_s: float
) -> str | None:
    """Why the heartbeat says the bot hangs, or None while it is alive enough.

    Before the first beat the bot is judged from its start, with a grace equal to the
    timeout (imports and connections take time); after it, from the last beat.
    """
    if last_beat is not None and last_beat >= started:
        age = now - last_beat
        if age > timeout_s:
            return f"heartbeat stale ({age:.1f} s since the last beat > {timeout_s:g} s)"
        return None
    since = now - started
    if since > 2 * timeout_s:
        return (
            f"no heartbeat since start ({since:.1f} s > {timeout_s:g} s timeout + {timeout_s:g} s"
            " grace)"
        )
    return None


def resolve_command(command: Sequence[str]) -> list[str]:
    """`python`/`python3` mean this interpreter, so the bot runs in the same environment."""
    argv = list(command)
    if argv and argv[0] in PYTHON_ALIASES:
        argv[0] = sys.executable
    return argv


@dataclass
class Bot:
    """The bot being watched: our child (`popen`) or an adopted process."""

    process: psutil.Process
    started: float  # wall-clock seconds, taken just before the spawn
    popen: subprocess.Popen[bytes] | None = None
    last_rss_mib: float | None = None
    next_rss_at: float = 0.0
    running_reported: bool = False

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def poll(self) -> tuple[int | None, int | None] | None:
        """(code, signal) once it exited, else None."""
        if self.popen is not None:
            returncode = self.popen.poll()
            return None if returncode is None else split_returncode(returncode)
        return (None, None) if is_gone(self.process) else None

    def reap(self, timeout_s: float = 5.0) -> tuple[int | None, int | None]:
        """Collect the exit status after the tree was stopped."""
        if self.popen is not None:
            try:
                return split_returncode(self.popen.wait(timeout=timeout_s))
            except subprocess.TimeoutExpired:
                return None, None
        return None, None


@dataclass
class _Outcome:
    """What a ledger mutation decided, carried out of the closure."""

    stopping: bool = False
    fatal: bool = False
    delay_s: float = 0.0
    failures: int | None = None  # the crash count the decision carried on with


class Watchdog:
    """Supervises one bot for one home. `prepare()` then `run()`; both in one process."""

    def __init__(
        self,
        paths: HomePaths,
        manifest: Manifest,
        ledger: Ledger,
        *,
        started_by: str | None = None,
        foreground: bool = False,
        adopt: bool = False,
        log: Callable[[str], None] | None = None,
        lock_fd: int | None = None,
    ) -> None:
        self.paths = paths
        self.manifest = manifest
        self.program = manifest.program
        self.ledger = ledger
        self.started_by = started_by
        self.foreground = foreground
        self.adopt = adopt
        self._log_sink = log
        self._stop = threading.Event()
        self._child_exited = threading.Event()
        # The home's lock, already taken by a caller that waited for it (blueprint.standby).
        self._lock_fd: int | None = lock_fd
        self._bot: Bot | None = None
        self._failures = 0
        self._restart_at: float | None = None
        self._health_address: tuple[str, int] | None = None
        self._exit_code = ExitCode.UNHEALTHY  # when the loop gives up (crash loop)
        self._previous_handlers: dict[int, Any] = {}
        self._written: LedgerDocument | None = None  # the ledger as we last wrote it

    # -- plumbing -----------------------------------------------------------------

    def log(self, message: str) -> None:
        line = f"{utc_iso(time.time())} watchdog[{os.getpid()}]: {message}"
        if self._log_sink is not None:
            self._log_sink(line)
            return
        # Detached, stdout is logs/watchdog.log. In the foreground (a container's PID 1,
        # systemd Type=simple) stdout is what `docker logs` and journald show: the event
        # goes there, and to watchdog.log too, so `lunara logs` shows it either way.
        print(line, file=sys.stdout, flush=True)
        if self.foreground:
            with contextlib.suppress(OSError):
                descriptor = open_append(self.paths.watchdog_log)
                try:
                    os.write(descriptor, (line + "\n").encode("utf-8", "replace"))
                finally:
                    os.close(descriptor)

    def _echo_bot_log(self) -> threading.Thread | None:
        """In the foreground, the bot's log lines go to stdout beside the watchdog's."""
        if not self.foreground or self._log_sink is not None:
            return None
        from blueprint.logtail import follow

        def echo() -> None:
            # From the end of what is there: earlier runs' lines are not repeated.
            for line in follow(self.paths.bot_log, start_lines=0, should_stop=self._stop.is_set):
                print(line, file=sys.stdout, flush=True)

        thread = threading.Thread(target=echo, name="bot-log", daemon=True)
        thread.start()
        return thread

    def _take_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        self.paths.ensure()
        self._lock_fd = try_exclusive_lock(self.paths.watchdog_lock)
        return self._lock_fd is not None

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _update(self, mutate: Callable[[LedgerDocument], None]) -> bool:
        """Write the ledger; a ledger that cannot be written must not kill the supervisor."""
        try:
            self._written = self.ledger.update(mutate)
        except BlueprintError as error:
            self.log(f"could not update the ledger: {error.message}")
            return False
        return True

    def _check_ledger(self) -> bool:
        """Whether a stop is recorded. A ledger rebuilt from weaker evidence (corrupt file,
        Redis flushed, an adopted bot that is not our child) is put right from what we
        last wrote: we are the authority on our own processes and restart count."""
        from blueprint.ledger import BotState

        try:
            read = self.ledger.read()
        except BlueprintError as error:
            self.log(f"could not read the ledger: {error.message}")
            return False
        if read.recovered:
            self.log(read.recovered)
        document = read.document
        if document.state == BotState.STOPPING:
            return True
        ours = self._written
        if ours is not None and _ledger_lost(document, ours):
            self._restore_ledger(ours)
        return False

    def _restore_ledger(self, ours: LedgerDocument) -> None:
        from blueprint.ledger import BotState

        def restore(doc: LedgerDocument) -> None:
            if doc.state == BotState.STOPPING:
                return
            lost = _ledger_lost(doc, ours)
            doc.state = ours.state
            doc.watchdog = ours.watchdog
            doc.bot = ours.bot
            doc.started_at = ours.started_at
            doc.started_by = ours.started_by
            doc.restarts = ours.restarts
            doc.restart_times = list(ours.restart_times)
            doc.last_exit = ours.last_exit
            doc.foreground = ours.foreground
            doc.add_event(Event.LEDGER_RESTORED, f"the watchdog restored {lost} in the ledger")

        if self._update(restore):
            self.log("the ledger had lost track of this watchdog or its bot; restored it")

    def request_stop(self) -> None:
        """Stop as SIGTERM would: asked by an authorized `stop` over the status socket."""
        self._stop.set()

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def on_child(signum: int, frame: FrameType | None) -> None:
            self._child_exited.set()

        for signum, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGCHLD, on_child),
        ):
            self._previous_handlers[signum] = signal.signal(signum, handler)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._previous_handlers.clear()

    # -- lifecycle ----------------------------------------------------------------

    def prepare(self) -> None:
        """Take the lock, record ourselves, adopt or spawn the bot.

        Raises BlueprintError when another watchdog already owns this home, ConfigError
        (exit 6) when the health port is not a port. Callers that start watchdogs hold the
        start lock around this, so the ledger shows the watchdog and its bot by the time
        the lock is released.
        """
        from blueprint.health import health_address

        self._health_address = health_address(os.environ)
        if not self._take_lock():
            raise BlueprintError(
                f"another watchdog already supervises {self.paths.root} "
                f"(it holds {self.paths.watchdog_lock}); not starting a second one"
            )
        from blueprint.authority import write_binding

        write_binding(self.paths, self.manifest)  # this home belongs to this manifest now
        changed = self.paths.make_private()
        if changed:
            self.log(f"made {changed} file(s) in {self.paths.root} private to their owner")
        try:
            self._register()
        except BaseException:
            self._restore_signals()
            self._release_lock()
            raise

    def _register(self) -> None:
        self._install_signals()
        become_subreaper()
        me = psutil.Process()
        adopted = self._adopt() if self.adopt else None
        from blueprint.ledger import BotState, ProcessRecord

        def register(doc: LedgerDocument) -> None:
            pid, create_time = identity_of(me)
            doc.watchdog = ProcessRecord(pid=pid, create_time=create_time)
            doc.foreground = self.foreground
            doc.stop_timeout_s = None
            if adopted is not None:
                doc.state = BotState.RUNNING
                doc.add_event(
                    Event.WATCHDOG_ADOPTED,
                    f"watchdog adopted the running bot (pid {adopted.process.pid})",
                )
                return
            doc.state = BotState.STARTING
            doc.started_by = self.started_by
            doc.restarts = 0
            doc.restart_times = []
            doc.bot = None
            doc.add_event(Event.WATCHDOG_STARTED, f"watchdog started by {self.started_by or '?'}")

        self._written = self.ledger.update(register)
        if adopted is not None:
            self._bot = adopted
            self.log(f"adopted bot pid {adopted.process.pid}")
        else:
            self._spawn()

    def _adopt(self) -> Bot | None:
        doc = self.ledger.read().document
        process = find_process(doc.bot)
        if process is None:
            self.log("no live bot to adopt; starting a new one")
            return None
        started = parse_iso(doc.started_at) or process.create_time()
        return Bot(process=process, started=started, running_reported=True)

    def run(self) -> int:
        """Supervise until stopped (exit 0), a crash loop (exit 5) or a bot that refused its
        configuration (exit 6). Call `prepare` first."""
        status_server = self._start_status_server()
        health_server = self._start_health_server()
        self._echo_bot_log()
        try:
            return self._loop()
        finally:
            if health_server is not None:
                health_server.close()
            if status_server is not None:
                status_server.close()
            self._restore_signals()
            self._release_lock()

    def _start_health_server(self) -> HealthServer | None:
        """The optional HTTP endpoint (blueprint.health); off unless a port is set."""
        from blueprint.health import start_health_server

        if self._health_address is None:
            return None
        try:
            server = start_health_server(
                self._health_address, self.paths, self.manifest, self.ledger, self.ledger.mirror
            )
        except OSError as error:
            self.log(f"health endpoint not started: {error}")
            return None
        self.log(f"health endpoint listening on port {server.port}")
        return server

    def _start_status_server(self) -> StatusServer | None:
        """Answer `lunara status` from here (blueprint.statusd); optional, never fatal."""
        from blueprint.statusd import StatusServer

        server = StatusServer(
            self.paths, self.ledger, self.ledger.mirror, self.manifest, on_stop=self.request_stop
        )
        try:
            server.start()
        except OSError as error:
            self.log(f"status socket unavailable ({error}); status is computed by the CLI")
            return None
        return server

    def _loop(self) -> int:
        while True:
            if self._child_exited.is_set():
                self._child_exited.clear()
                self._reap_orphans()
            if self._stop.is_set() or self._check_ledger():
                return self._finish_stop()
            now = time.time()
            bot = self._bot
            if bot is not None:
                ended = bot.poll()
                if ended is not None:
                    if self._after_exit(bot, *ended, reason=None):
                        return self._finish_stop()
                else:
                    self._check_limits(bot, now)
            elif self._restart_at is not None and now >= self._restart_at:
                self._restart_at = None
                self._spawn()
            elif self._restart_at is None:
                return int(self._exit_code)  # fatal: nothing left to supervise
            self._stop.wait(TICK_S)

    def _reap_orphans(self) -> None:
        keep = [] if self._bot is None or self._bot.popen is None else [self._bot.popen.pid]
        reap_children(keep)

    # -- the bot ------------------------------------------------------------------

    def _spawn(self) -> None:
        from blueprint.ledger import BotState, ProcessRecord

        clear_heartbeat(self.paths.heartbeat)
        clear_exit_message(self.paths)
        argv = resolve_command(self.program.command)
        env = deployment_environment(os.environ, self.program.environment)
        env.setdefault("MALLOC_ARENA_MAX", BOT_MALLOC_ARENAS)
        env["LUNARA_HOME"] = str(self.paths.root)
        if self.manifest.source is not None:
            # The bot authorizes Telegram users against the same manifest.
            env["LUNARA_MANIFEST"] = str(Path(self.manifest.source).resolve())
        self.paths.ensure()
        log_fd = open_append(self.paths.bot_output)
        started = time.time()
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            self.log(f"could not start {argv[0]!r}: {error.strerror or error}")
            self._bot = None
            reason = f"could not start: {error.strerror or error}"
            if self._decide(None, None, None, reason, 0.0):
                self._stop.set()
            return
        finally:
            os.close(log_fd)
        process = psutil.Process(popen.pid)
        bot = Bot(process=process, started=started, popen=popen)
        self._bot = bot
        pid, create_time = identity_of(process)

        def spawned(doc: LedgerDocument) -> None:
            doc.bot = ProcessRecord(pid=pid, create_time=create_time)
            doc.started_at = utc_iso(started)
            if doc.state != BotState.STOPPING:
                doc.state = BotState.STARTING
            doc.add_event(Event.BOT_SPAWNED, f"bot started (pid {pid})")

        self._update(spawned)
        self.log(f"bot started: pid {pid}: {' '.join(argv)}")

    def _check_limits(self, bot: Bot, now: float) -> None:
        from blueprint.ledger import BotState

        if now >= bot.next_rss_at:
            bot.next_rss_at = now + RSS_EVERY_S
            rss_mib = tree_rss_bytes(bot.process) / MIB
            bot.last_rss_mib = rss_mib
            if rss_mib > self.program.memory_limit_mib:
                self._forced_restart(bot, memory_reason(rss_mib, self.program.memory_limit_mib))
                return
        last_beat = heartbeat_mtime(self.paths.heartbeat)
        reason = heartbeat_reason(now, bot.started, last_beat, self.program.heartbeat_timeout_s)
        if reason is not None:
            self._forced_restart(bot, reason)
            return
        if not bot.running_reported and last_beat is not None and last_beat >= bot.started:
            bot.running_reported = True

            def running(doc: LedgerDocument) -> None:
                if doc.state == BotState.STARTING:
                    doc.state = BotState.RUNNING
                    doc.add_event(Event.BOT_RUNNING, f"first heartbeat from pid {bot.process.pid}")

            self._update(running)

    def _forced_restart(self, bot: Bot, reason: str) -> None:
        self.log(f"restarting bot pid {bot.process.pid}: {reason}")
        kill_tree(bot.process, self.program.stop_timeout_s)
        code, signum = bot.reap()
        self._reap_orphans()
        if self._after_exit(bot, code, signum, reason=reason):
            self._stop.set()

    def _after_exit(
        self, bot: Bot, code: int | None, signum: int | None, *, reason: str | None
    ) -> bool:
        """Record an exit and schedule what follows; True when a stop is under way."""
        self._bot = None
        self._kill_leftovers()
        why = reason or exit_reason(code, signum, take_exit_message(self.paths))
        self.log(f"bot pid {bot.process.pid} ended: {why}")
        uptime = max(0.0, time.time() - bot.started)
        refused = reason is None and is_invalid_config(code, signum)
        return self._decide(code, signum, bot.last_rss_mib, why, uptime, invalid_config=refused)

    def _decide(
        self,
        code: int | None,
        signum: int | None,
        rss_mib: float | None,
        reason: str,
        uptime_s: float,
        *,
        invalid_config: bool = False,
    ) -> bool:
        """Record an exit; then restart after a backoff, or give up (state fatal) on a
        crash loop or at once when the bot refused its configuration."""
        from blueprint.ledger import BotState, ExitRecord

        now = time.time()
        # If the ledger cannot be written the decision is lost: wait the longest backoff
        # (a bot that refused its configuration is still not restarted).
        outcome = _Outcome(delay_s=self.program.restart.backoff_max_s)

        def decide(doc: LedgerDocument) -> None:
            rounded = None if rss_mib is None else round(rss_mib, 1)
            doc.last_exit = ExitRecord(
                code=code, signal=signum, at=utc_iso(now), reason=reason, rss_mib=rounded
            )
            doc.bot = None
            detail = f"{reason}; code {code}, signal {signum}, rss {rounded} MiB"
            doc.add_event(Event.BOT_EXITED, detail)
            if doc.state == BotState.STOPPING or self._stop.is_set():
                outcome.stopping = True
                return
            if invalid_config:
                doc.state = BotState.FATAL
                doc.watchdog = None
                doc.add_event(
                    Event.BOT_FATAL,
                    "invalid configuration (exit 6): not restarting; fix it, then start",
                )
                return
            decision = decide_restart(
                self.program.restart, doc.restart_times, self._failures, uptime_s, now
            )
            outcome.fatal = decision.fatal
            outcome.delay_s = decision.delay_s
            outcome.failures = decision.consecutive_failures
            doc.restart_times = list(decision.restart_times)
            if decision.fatal:
                doc.state = BotState.FATAL
                doc.watchdog = None
                doc.add_event(
                    Event.BOT_FATAL,
                    f"crash loop: more than {self.program.restart.max_restarts} restarts within "
                    f"{self.program.restart.window_s:g} s; not restarting",
                )
                return
            doc.state = BotState.BACKOFF
            doc.restarts += 1
            doc.add_event(
                Event.BOT_RESTARTING,
                f"restart {doc.restarts} in {decision.delay_s:.1f} s",
            )

        self._update(decide)
        if outcome.stopping:
            return True
        if outcome.failures is not None:
            self._failures = outcome.failures
        if invalid_config:
            self.log("invalid configuration: not restarting (state fatal)")
            self._exit_code = ExitCode.INVALID_CONFIG
            self._restart_at = None
        elif outcome.fatal:
            self.log("crash loop: giving up (state fatal)")
            self._restart_at = None
        else:
            self.log(f"restarting in {outcome.delay_s:.1f} s")
            self._restart_at = time.time() + outcome.delay_s
        return False

    def _kill_leftovers(self) -> None:
        """Kill processes the dead bot left behind (reparented to us as subreaper)."""
        keep = set()
        if self._bot is not None and self._bot.popen is not None:
            keep.add(self._bot.popen.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process().children():
                if child.pid not in keep and not is_gone(child):
                    kill_tree(child, min(self.program.stop_timeout_s, 2.0))
        self._reap_orphans()

    def _stop_grace_s(self) -> float:
        """The grace `lunara stop --timeout` recorded, else the manifest's stop_timeout_s."""
        try:
            asked = self.ledger.read().document.stop_timeout_s
        except BlueprintError as error:
            self.log(f"could not read the ledger: {error.message}")
            asked = None
        return self.program.stop_timeout_s if asked is None else asked

    def _finish_stop(self) -> int:
        from blueprint.ledger import ExitRecord

        bot = self._bot
        self._bot = None
        exit_record: ExitRecord | None = None
        if bot is not None:
            grace = self._stop_grace_s()
            self.log(f"stopping bot pid {bot.process.pid} (grace {grace:g} s)")
            result = kill_tree(bot.process, grace)
            code, signum = bot.reap()
            if bot.adopted and signum is None and not result.graceful:
                signum = int(signal.SIGKILL)
            exit_record = ExitRecord(
                code=code,
                signal=signum,
                at=utc_iso(time.time()),
                reason=Reason.STOPPED,
                rss_mib=None if bot.last_rss_mib is None else round(bot.last_rss_mib, 1),
            )
            if signum == signal.SIGKILL and (result.forced or not result.graceful):
                # The stop's own kill once its grace ran out, not the kernel's OOM killer.
                how = f"killed by SIGKILL: the stop's grace of {grace:g} s ran out"
            else:
                how = describe_exit(code, signum)
            forced = f", {result.forced} killed after the timeout" if result.forced else ""
            self.log(f"bot stopped ({how}{forced})")
        self._kill_leftovers()

        def stopped(doc: LedgerDocument) -> None:
            doc.mark_stopped()
            if exit_record is not None:
                doc.last_exit = exit_record
            doc.add_event(Event.BOT_STOPPED, "bot and watchdog stopped")

        self._update(stopped)
        self.log("stopped")
        return int(ExitCode.OK)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m blueprint.watchdog", description="Supervise the Lunara bot."
    )
    parser.add_argument("--home", required=True, help="LUNARA_HOME to supervise")
    parser.add_argument("--manifest", required=True, help="manifest.json with the program")
    parser.add_argument("--foreground", action="store_true", help="log to stderr (run mode)")
    parser.add_argument("--adopt", action="store_true", help="take over the recorded bot")
    parser.add_argument("--started-by", default=None, help="principal recorded in the ledger")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m blueprint.watchdog`; returns the exit code."""
    arguments = _parser().parse_args(list(argv) if argv is not None else None)
    use_private_umask()  # and the bot it spawns inherits it
    from blueprint.ledger import Ledger
    from blueprint.manifest import load_manifest
    from blueprint.mirror import open_mirror

    try:
        load_into_environment()  # the CLI that started it has merged it already
        paths = HomePaths.resolve(arguments.home)
        manifest = load_manifest(Path(arguments.manifest))
        mirror = open_mirror(
            os.environ.get("REDIS_URL") or None, manifest.name, audit_path=paths.audit
        )
        watchdog = Watchdog(
            paths,
            manifest,
            Ledger(paths, manifest.name, mirror),
            started_by=arguments.started_by,
            foreground=arguments.foreground,
            adopt=arguments.adopt,
        )
        watchdog.prepare()
    except BlueprintError as error:
        print(f"watchdog: {error.message}", file=sys.stderr, flush=True)
        return int(error.exit_code)
    return watchdog.run()


if __name__ == "__main__":
    sys.exit(main())
