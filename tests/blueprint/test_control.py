"""The controller: status truthfulness, idempotent and concurrent start, stop, adoption, run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from filelock import FileLock, Timeout
from hypothesis import given
from hypothesis import strategies as st

from blueprint.errors import ExitCode, StartFailed
from blueprint.ledger import BotState, ProcessRecord, is_watchdog_cmdline
from blueprint.states import STORED_STATES, Liveness, State, decide_state
from blueprint.status import StatusReport, redact
from tests.blueprint.conftest import Factory
from tests.programs.harness import (
    PRINCIPAL,
    gone,
    installation,
    kill_everything,
    program,
    read_tree,
    tight_program,
    wait_until,
)

# -- the pure status decision ---------------------------------------------------------

stored_states = st.sampled_from(sorted(STORED_STATES))
facts = st.builds(
    Liveness,
    watchdog_alive=st.booleans(),
    bot_alive=st.booleans(),
    heartbeat_age_s=st.none() | st.floats(min_value=0, max_value=1e6),
    bot_uptime_s=st.none() | st.floats(min_value=0, max_value=1e6),
    heartbeat_timeout_s=st.floats(min_value=0.1, max_value=1e4),
)


@given(stored_states, facts, st.booleans())
def test_status_never_calls_a_dead_bot_running_nor_a_live_one_stopped(
    stored: str, liveness: Liveness, invalid_config: bool
) -> None:
    verdict = decide_state(stored, liveness, invalid_config)
    if verdict.state == State.RUNNING:
        assert liveness.bot_alive
    if liveness.bot_alive:
        assert verdict.state != State.STOPPED
    assert (verdict.state == State.ORPHANED) == (liveness.bot_alive and not liveness.watchdog_alive)
    if verdict.healthy:
        assert verdict.state == State.RUNNING
        assert liveness.watchdog_alive
        assert liveness.heartbeat_age_s is not None
        assert liveness.heartbeat_age_s <= liveness.heartbeat_timeout_s


@given(
    stored_states, st.floats(min_value=0.1, max_value=100), st.floats(min_value=1.01, max_value=50)
)
def test_a_stale_heartbeat_is_unhealthy(stored: str, timeout: float, factor: float) -> None:
    liveness = Liveness(True, True, timeout * factor, timeout * factor * 2, timeout)
    verdict = decide_state(stored, liveness)
    assert not verdict.healthy


def test_a_fatal_crash_loop_stays_fatal_after_the_watchdog_exits() -> None:
    verdict = decide_state("fatal", Liveness(False, False, None, None, 10))
    assert verdict.state == State.FATAL
    assert not verdict.healthy


def test_redact_blanks_secret_values_and_shapes() -> None:
    environ = {"TELEGRAM_BOT_TOKEN": "123456:abcdefghijklmnopqrstuvwxyz0123456789", "HOME": "/root"}
    text = (
        "boot 123456:abcdefghijklmnopqrstuvwxyz0123456789 at /root "
        "redis://user:hunter22@127.0.0.1:6379 api_key=abc123 "
        "other 987654321:ZYXWVUTSRQPONMLKJIHGFEDCBA987654321"
    )
    cleaned = redact(text, environ)
    for secret in ("abcdefghijklmnopqrstuvwxyz", "hunter22", "abc123", "ZYXWVUTSRQ"):
        assert secret not in cleaned
    assert "/root" in cleaned
    assert "127.0.0.1:6379" in cleaned


# -- start ----------------------------------------------------------------------------


def watchdogs_of(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and is_watchdog_cmdline(cmdline, home):
            found.append(process)
    return found


def bots_of(home: Path, script: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or not any(script in a for a in cmdline):
            continue
        try:
            if process.environ().get("LUNARA_HOME") == str(home):
                found.append(process)
        except psutil.Error:
            continue
    return found


START_ONCE = """
import sys
from pathlib import Path
from blueprint.control import Controller
from blueprint.ledger import Ledger
from blueprint.manifest import load_manifest
from blueprint.mirror import NullMirror
from blueprint.paths import HomePaths
paths = HomePaths.resolve(sys.argv[1])
manifest = load_manifest(Path(sys.argv[2]))
mirror = NullMirror()
ledger = Ledger(paths, manifest.name, mirror)
controller = Controller(paths, manifest, Path(sys.argv[2]), ledger, mirror)
result = controller.start("os_user:tester", None)
print("changed" if result.changed else "unchanged")
"""


@pytest.mark.slow
def test_fifty_concurrent_starts_make_exactly_one_watchdog_and_one_bot(
    supervised: Factory,
) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", START_ONCE, str(healthy.paths.root), str(healthy.manifest_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(50)
    ]
    outcomes = [starter.communicate(timeout=120) for starter in starters]
    assert all(starter.returncode == 0 for starter in starters), outcomes
    assert sorted(out.strip() for out, _ in outcomes) == ["changed"] + ["unchanged"] * 49
    wait_until(lambda: healthy.controller.status().state == "running", 15, "running")
    assert len(watchdogs_of(healthy.paths.root)) == 1
    assert len(bots_of(healthy.paths.root, "healthy_bot.py")) == 1


def test_start_is_idempotent(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    first = healthy.controller.start(PRINCIPAL, 10)
    assert first.changed
    assert first.status.state == "running"
    assert first.status.healthy
    second = healthy.controller.start(PRINCIPAL, 10)
    assert not second.changed
    assert "already running" in second.message
    assert second.status.pid == first.status.pid
    assert second.status.exit_code() == ExitCode.OK


def test_a_watchdog_started_in_process_is_reaped_when_it_exits(supervised: Factory) -> None:
    """A process that ran `start` and lives on (a test, a program driving the controller)
    stays the watchdog's parent: the watchdog's exit is collected, not left a zombie."""
    healthy = supervised(tight_program(program("healthy_bot")))
    started = healthy.controller.start(PRINCIPAL, 10)
    assert started.status.supervisor_pid is not None
    watchdog = psutil.Process(started.status.supervisor_pid)
    assert watchdog.ppid() == os.getpid()
    assert healthy.controller.stop(PRINCIPAL, None).changed
    wait_until(lambda: not psutil.pid_exists(watchdog.pid), 20, "the watchdog reaped")


def test_start_wait_fails_with_the_log_tail_and_no_secret_when_the_bot_dies(
    supervised: Factory,
) -> None:
    # LUNARA_TOKEN never reaches the bot; the bot's own secrets do, and may be printed.
    leak = "import os, sys\nprint('token is', os.environ['TELEGRAM_BOT_TOKEN'])\nsys.exit(3)"
    dying = supervised(tight_program([sys.executable, "-c", leak]))
    dying.controller.environ["TELEGRAM_BOT_TOKEN"] = "s3cret-bot-token"
    with pytest.raises(StartFailed) as failure:
        dying.controller.start(PRINCIPAL, 10)
    assert failure.value.exit_code == ExitCode.START_FAILED
    assert "token is [redacted]" in failure.value.message
    assert "s3cret" not in failure.value.message
    assert "exited with code 3" in failure.value.message


def test_start_wait_times_out_when_the_bot_never_beats(supervised: Factory) -> None:
    mute = supervised(tight_program(program("silent_bot", "0"), heartbeat_timeout_s=30))
    with pytest.raises(StartFailed) as failure:
        mute.controller.start(PRINCIPAL, 0.5)
    assert "no heartbeat from the bot within 0.5 s" in failure.value.message
    assert mute.controller.status().state == "starting"


# -- status -----------------------------------------------------------------------------


def test_status_reports_a_stale_heartbeat_as_unhealthy(supervised: Factory, tmp_path: Path) -> None:
    silent = supervised(tight_program(program("silent_bot", "1"), heartbeat_timeout_s=60))
    silent.controller.start(PRINCIPAL, 10)
    strict = installation(tmp_path / "strict", tight_program(["unused"], heartbeat_timeout_s=0.3))
    strict.controller.paths = silent.paths
    strict.controller.ledger = silent.ledger

    def stale() -> StatusReport | None:
        report = strict.controller.status()
        age = report.heartbeat_age_s
        return report if age is not None and age > 0.3 else None

    report = wait_until(stale, 10, "a stale heartbeat")
    assert report.state == "running"
    assert not report.healthy
    assert report.exit_code() == ExitCode.UNHEALTHY
    assert any("stale heartbeat" in note for note in report.notes)


def test_status_fields_match_the_contract(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    report = healthy.controller.start(PRINCIPAL, 10).status
    document = report.to_json()
    assert list(document)[:12] == [
        "state",
        "pid",
        "supervisor_pid",
        "started_at",
        "uptime_s",
        "restarts",
        "last_exit",
        "rss_mib",
        "heartbeat_age_s",
        "mirror",
        "ledger_revision",
        "principal",
    ]
    assert document["principal"] == PRINCIPAL
    assert document["rss_mib"] > 1
    assert document["uptime_s"] >= 0
    assert document["mirror"]["backend"] == "off"


# -- the watchdog killed ---------------------------------------------------------------------


def test_a_killed_watchdog_leaves_an_orphan_that_stop_still_stops(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    healthy.controller.start(PRINCIPAL, 10)
    watchdog, bot = healthy.watchdog(), healthy.bot()
    assert watchdog is not None
    assert bot is not None
    watchdog.send_signal(signal.SIGKILL)
    wait_until(lambda: gone(watchdog), 10, "the watchdog to die")
    report = healthy.controller.status(PRINCIPAL)
    assert report.state == "orphaned"
    assert report.exit_code() == ExitCode.UNHEALTHY
    assert report.pid == bot.pid
    assert report.supervisor_pid is None
    result = healthy.controller.stop(PRINCIPAL, None)
    assert result.changed
    assert "orphaned" in result.message
    assert gone(bot)
    assert result.status.state == "stopped"


def test_start_adopts_the_bot_of_a_killed_watchdog(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    healthy.controller.start(PRINCIPAL, 10)
    watchdog, bot = healthy.watchdog(), healthy.bot()
    assert watchdog is not None
    assert bot is not None
    watchdog.send_signal(signal.SIGKILL)
    wait_until(lambda: gone(watchdog), 10, "the watchdog to die")
    result = healthy.controller.start(PRINCIPAL, 10)
    assert result.changed
    assert "adopted" in result.message
    assert result.status.state == "running"
    assert result.status.pid == bot.pid
    assert result.status.supervisor_pid not in (None, watchdog.pid)
    bot.send_signal(signal.SIGKILL)
    wait_until(lambda: healthy.document().restarts == 1, 15, "the adopted bot's restart")
    last_exit = healthy.document().last_exit
    assert last_exit is not None
    assert last_exit.reason == "exited while adopted"
    new_bot = wait_until(healthy.bot, 15, "a new bot under the new watchdog")
    assert new_bot.pid != bot.pid
    assert new_bot.ppid() == result.status.supervisor_pid


def test_the_watchdog_puts_right_a_ledger_rebuilt_without_its_adopted_bot(
    supervised: Factory,
) -> None:
    """Corrupt ledger, no mirror, and a bot that is not the watchdog's child (adopted):
    the process table alone cannot name the bot nor the restart count; the watchdog can."""
    healthy = supervised(tight_program(program("healthy_bot")))
    healthy.controller.start(PRINCIPAL, 10)
    first = healthy.bot()
    assert first is not None
    first.send_signal(signal.SIGKILL)
    bot = wait_until(
        lambda: healthy.bot() if healthy.document().restarts == 1 else None, 15, "a restarted bot"
    )
    old_watchdog = healthy.watchdog()
    assert old_watchdog is not None
    old_watchdog.send_signal(signal.SIGKILL)
    wait_until(lambda: gone(old_watchdog), 10, "the watchdog to die")
    adopted = healthy.controller.start(PRINCIPAL, 10)
    assert "adopted" in adopted.message
    assert adopted.status.pid == bot.pid

    # The watchdog is held still while the ledger is corrupted and read, so the rebuild
    # the status makes is the table's alone, however slowly this machine runs.
    watchdog = healthy.watchdog()
    assert watchdog is not None

    def held_outside_the_ledger_lock() -> bool:
        watchdog.send_signal(signal.SIGSTOP)
        try:
            with FileLock(str(healthy.paths.ledger_lock), timeout=0):
                return True
        except Timeout:
            watchdog.send_signal(signal.SIGCONT)
            return False

    wait_until(held_outside_the_ledger_lock, 10, "the watchdog held still, lock free")
    try:
        healthy.paths.ledger.write_text('{"revision": 12, "state": "runn')
        rebuilt = healthy.controller.status(PRINCIPAL)  # rebuilt from the process table
    finally:
        watchdog.send_signal(signal.SIGCONT)
    assert rebuilt.pid is None
    assert rebuilt.restarts == 0  # all the table can tell

    def put_right() -> bool:
        report = healthy.controller.status(PRINCIPAL)
        return report.state == "running" and report.pid == bot.pid and report.restarts == 1

    wait_until(put_right, 5, "the watchdog to restore its bot and restart count")
    assert healthy.events("ledger.restored")
    assert healthy.controller.stop(PRINCIPAL, None).changed
    assert gone(bot)


def test_a_reused_pid_is_never_signalled(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        created = psutil.Process(stranger.pid).create_time()
        impostor = ProcessRecord(pid=stranger.pid, create_time=created - 1000)

        def claim(document: Any) -> None:
            document.state = BotState.RUNNING
            document.watchdog = impostor
            document.bot = impostor

        healthy.ledger.update(claim)
        report = healthy.controller.status()
        assert report.state == "stopped"
        assert report.pid is None
        stop = healthy.controller.stop(PRINCIPAL, 1)
        assert not stop.changed
        started = healthy.controller.start(PRINCIPAL, 10)
        assert started.changed
        assert "adopted" not in started.message
        assert started.status.pid != stranger.pid
        healthy.controller.stop(PRINCIPAL, None)
        assert stranger.poll() is None
        assert psutil.Process(stranger.pid).is_running()
    finally:
        stranger.kill()
        stranger.wait()


# -- stop -------------------------------------------------------------------------------------


def test_stop_kills_a_sigterm_ignoring_tree_within_the_timeout_plus_one_second(
    supervised: Factory, tmp_path: Path
) -> None:
    pids = tmp_path / "tree.pids"
    timeout = 1.0
    stubborn = supervised(tight_program(program("stubborn_bot", str(pids)), stop_timeout_s=timeout))
    stubborn.controller.start(PRINCIPAL, 15)
    tree = read_tree(pids, expected=5)
    try:
        began = time.monotonic()
        result = stubborn.controller.stop(PRINCIPAL, None)
        wait_until(
            lambda: all(gone(member) for member in tree),
            max(0.0, timeout + 1 - (time.monotonic() - began)),
            "the whole tree to be gone",
        )
        assert result.changed
        assert result.status.state == "stopped"
        assert stubborn.document().state == "stopped"
        assert stubborn.document().bot is None
    finally:
        kill_everything(tree)


def test_stop_timeout_longer_than_the_manifests_is_the_grace_the_bot_gets(
    supervised: Factory,
) -> None:
    slow = supervised(tight_program(program("healthy_bot", "2.5"), stop_timeout_s=1))
    slow.controller.start(PRINCIPAL, 10)
    bot = slow.bot()
    assert bot is not None
    result = slow.controller.stop(PRINCIPAL, 8)
    assert result.changed
    assert gone(bot)
    last_exit = slow.document().last_exit
    assert last_exit is not None, last_exit
    assert (last_exit.code, last_exit.signal) == (0, None), last_exit
    assert "healthy bot stopped" in slow.bot_log()
    assert "grace 8 s" in slow.watchdog_log()
    assert slow.document().stop_timeout_s is None


@pytest.mark.slow
def test_a_stop_that_sees_no_bot_waits_for_the_one_the_watchdog_is_stopping(
    supervised: Factory,
) -> None:
    """The ledger names no bot (backoff, or a bot spawned a moment before its record), yet
    the watchdog has one: the stop must wait out the watchdog's grace for it, not kill the
    watchdog after a few seconds and leave that bot running with nobody supervising it."""
    slow = supervised(tight_program(program("healthy_bot", "6.5"), stop_timeout_s=9))
    slow.controller.start(PRINCIPAL, 10)
    bot = slow.bot()
    assert bot is not None

    def forget_the_bot(document: Any) -> None:
        document.bot = None

    slow.ledger.update(forget_the_bot)
    try:
        result = slow.controller.stop(PRINCIPAL, None)
        assert result.changed
        assert result.status.state == "stopped"
        assert gone(bot), "the bot outlived its watchdog"
        assert "healthy bot stopped" in slow.bot_log()
        last_exit = slow.document().last_exit
        assert last_exit is not None, last_exit
        assert (last_exit.code, last_exit.signal) == (0, None), last_exit
    finally:
        kill_everything([bot])


def test_stop_when_nothing_runs_is_a_no_op(supervised: Factory) -> None:
    idle = supervised(tight_program(program("healthy_bot")))
    result = idle.controller.stop(PRINCIPAL, None)
    assert not result.changed
    assert result.message == "not running"
    assert result.status.exit_code() == ExitCode.NOT_RUNNING


# -- run in the foreground ------------------------------------------------------------------------

RUN_FOREGROUND = START_ONCE.replace(
    'result = controller.start("os_user:tester", None)\n'
    'print("changed" if result.changed else "unchanged")',
    "from blueprint.watchdog import Watchdog\n"
    'sys.exit(controller.run_foreground("os_user:tester", Watchdog))',
)


def test_run_in_the_foreground_stops_cleanly_on_sigterm(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    runner = subprocess.Popen(
        [sys.executable, "-c", RUN_FOREGROUND, str(healthy.paths.root), str(healthy.manifest_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: healthy.controller.status().state == "running" or runner.poll() is not None,
            15,
            "the foreground bot to run",
        )
        bot = healthy.bot()
        assert bot is not None
        assert bot.ppid() == runner.pid
        assert healthy.document().foreground
        runner.send_signal(signal.SIGTERM)
        _, errors = runner.communicate(timeout=15)
        assert runner.returncode == 0, errors
        assert gone(bot)
        assert healthy.controller.status().state == "stopped"
        assert "healthy bot stopping" in healthy.bot_log()
    finally:
        if runner.poll() is None:
            kill_everything([psutil.Process(runner.pid)])
            runner.wait()


def test_run_beside_a_detached_watchdog_waits_as_standby_and_takes_over_when_it_stops(
    supervised: Factory,
) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    healthy.controller.start(PRINCIPAL, 10)
    first_bot = healthy.bot()
    runner = subprocess.Popen(
        [sys.executable, "-c", RUN_FOREGROUND, str(healthy.paths.root), str(healthy.manifest_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: healthy.controller.status().standby is not None, 15, "a standby")
        report = healthy.controller.status()
        assert report.state == "running"
        assert report.exit_code() == ExitCode.OK
        assert report.standby is not None
        assert report.standby["pid"] == runner.pid
        assert any(f"pid {runner.pid}" in note for note in report.notes), report.notes
        # The standby wrote nothing to the ledger: it names the supervisor and bot it held.
        # (Its revision may move: the supervisor itself records its bot's progress.)
        document = healthy.document()
        assert document.watchdog is not None
        assert document.watchdog.pid != runner.pid
        assert first_bot is not None
        assert document.bot is not None
        assert document.bot.pid == first_bot.pid
        assert all(event.get("pid") != runner.pid for event in document.events)
        healthy.controller.stop(PRINCIPAL, None)
        wait_until(
            lambda: (healthy.document().watchdog or ProcessRecord(1, 0)).pid == runner.pid,
            20,
            "the standby to take over",
        )
        wait_until(lambda: healthy.controller.status().state == "running", 20, "its bot")
        assert healthy.bot() != first_bot
        assert healthy.controller.status().standby is None
        runner.send_signal(signal.SIGTERM)
        out, errors = runner.communicate(timeout=30)
        assert runner.returncode == 0, errors
        assert "standby: another supervisor holds" in out
        assert "taking over" in out
        assert healthy.controller.status().state == "stopped"
    finally:
        if runner.poll() is None:
            kill_everything([psutil.Process(runner.pid)])
            runner.wait()


def test_status_path_imports_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import blueprint.control\n"
        "heavy = ['filelock', 'redis', 'asyncio', 'blueprint.watchdog', 'telegram', 'numpy']\n"
        "print(','.join(name for name in heavy if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
