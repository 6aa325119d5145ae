"""The watchdog with real bots: restarts, backoff, crash loops, memory and heartbeat limits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import psutil
import pytest

from blueprint.errors import ExitCode, StartFailed
from blueprint.exit_message import is_invalid_config
from blueprint.watchdog import (
    describe_exit,
    exit_reason,
    heartbeat_reason,
    memory_reason,
    resolve_command,
)
from tests.blueprint.conftest import Factory
from tests.programs.harness import (
    PRINCIPAL,
    Installation,
    gone,
    kill_everything,
    program,
    read_tree,
    tight_program,
    wait_until,
)


def restarted(installation: Installation, times: int) -> bool:
    return installation.document().restarts == times


# -- pure helpers ---------------------------------------------------------------------


def test_exit_descriptions_name_the_signal_and_suspect_oom_for_sigkill() -> None:
    assert describe_exit(None, 9) == "killed by SIGKILL (possible out-of-memory kill)"
    assert describe_exit(None, 11) == "killed by SIGSEGV"
    assert describe_exit(3, None) == "exited with code 3"
    assert describe_exit(None, None) == "exited while adopted"


def test_exit_reasons_carry_the_bots_own_words_and_a_refusal_is_those_words_alone() -> None:
    refusal = "invalid configuration: LUNARA_MODE: must be paper or live (got 'x')"
    assert exit_reason(6, None, refusal) == refusal
    assert exit_reason(6, None, None) == "exited with code 6 (invalid configuration)"
    assert exit_reason(1, None, "database is locked") == "exited with code 1: database is locked"
    assert exit_reason(None, 9, None) == "killed by SIGKILL (possible out-of-memory kill)"
    assert is_invalid_config(6, None)
    assert not is_invalid_config(None, 6)
    assert not is_invalid_config(1, None)


def test_memory_reason_shows_the_measured_rss_and_the_limit() -> None:
    assert memory_reason(512.34, 450) == "memory limit exceeded (RSS 512.3 MiB > 450 MiB)"


def test_heartbeat_is_judged_from_the_start_with_a_grace_before_the_first_beat() -> None:
    assert heartbeat_reason(now=119, started=100, last_beat=None, timeout_s=10) is None
    assert "no heartbeat since start" in str(heartbeat_reason(121, 100, None, 10))
    assert "no heartbeat since start" in str(heartbeat_reason(121, 100, 99.0, 10))  # old bot's
    assert heartbeat_reason(now=115, started=100, last_beat=106, timeout_s=10) is None
    assert "heartbeat stale" in str(heartbeat_reason(117, 100, 106, 10))


def test_python_in_the_manifest_means_this_interpreter() -> None:
    assert resolve_command(("python", "-m", "lunara")) == [sys.executable, "-m", "lunara"]
    assert resolve_command(("/usr/bin/env", "python")) == ["/usr/bin/env", "python"]


# -- real processes -----------------------------------------------------------------------


@pytest.mark.slow
def test_every_sigkill_of_the_bot_is_followed_by_a_restart_and_recorded(
    supervised: Factory,
) -> None:
    section = tight_program(
        program("healthy_bot"), restart={"backoff_initial_s": 0.05, "backoff_max_s": 0.05}
    )
    bot_installation = supervised(section)
    bot_installation.controller.start(PRINCIPAL, 15)
    kills = 20
    for round_number in range(kills):
        victim = wait_until(bot_installation.bot, 15, "a live bot")
        assert bot_installation.document().restarts == round_number
        victim.send_signal(signal.SIGKILL)
        wait_until(
            partial(restarted, bot_installation, round_number + 1),
            15,
            lambda: f"{kills} restarts: {bot_installation.watchdog_log()[-2000:]}",
        )
    wait_until(bot_installation.bot, 15, "the bot after the last restart")
    document = bot_installation.document()
    assert document.restarts == kills
    exits = bot_installation.events("bot.exited")
    assert len(exits) == kills
    assert all("signal 9" in event["detail"] for event in exits)
    assert document.last_exit is not None
    assert document.last_exit.signal == 9
    assert document.last_exit.code is None
    assert document.last_exit.reason == "killed by SIGKILL (possible out-of-memory kill)"
    assert bot_installation.controller.status(PRINCIPAL).restarts == kills


def test_a_crash_loop_ends_in_fatal_and_status_exit_5(supervised: Factory) -> None:
    section = tight_program(
        program("crashing_bot"),
        restart={"backoff_initial_s": 0.3, "backoff_max_s": 0.3, "max_restarts": 3},
    )
    crashing = supervised(section)
    crashing.controller.start(PRINCIPAL, None)
    seen_backoff = wait_until(
        lambda: crashing.controller.status().state == "backoff", 15, "state backoff"
    )
    assert seen_backoff
    wait_until(lambda: crashing.document().state == "fatal", 20, "state fatal")
    wait_until(lambda: crashing.watchdog() is None, 10, "the watchdog to give up and exit")
    report = crashing.controller.status(PRINCIPAL)
    assert report.state == "fatal"
    assert report.exit_code() == ExitCode.UNHEALTHY
    assert report.restarts == 3
    assert report.pid is None
    assert report.last_exit is not None
    assert report.last_exit["code"] == 3
    assert len(crashing.events("bot.exited")) == 4
    assert "giving up" in crashing.bot_log()


def test_memory_limit_restarts_the_bot_and_records_the_reason(supervised: Factory) -> None:
    hog = supervised(tight_program(program("memory_hog", "96"), memory_limit_mib=60))
    hog.controller.start(PRINCIPAL, None)
    wait_until(lambda: hog.document().restarts >= 1, 20, "a memory restart")
    last_exit = hog.document().last_exit
    assert last_exit is not None
    assert re.fullmatch(r"memory limit exceeded \(RSS \d+\.\d MiB > 60 MiB\)", last_exit.reason)
    assert last_exit.rss_mib is not None
    assert last_exit.rss_mib > 60
    assert last_exit.code is None
    assert last_exit.signal == signal.SIGTERM  # stopped gracefully


def test_a_bot_that_stops_beating_is_restarted_with_the_reason(supervised: Factory) -> None:
    silent = supervised(tight_program(program("silent_bot", "2"), heartbeat_timeout_s=1))
    silent.controller.start(PRINCIPAL, 10)
    wait_until(lambda: silent.document().restarts >= 1, 20, "a heartbeat restart")
    last_exit = silent.document().last_exit
    assert last_exit is not None
    assert last_exit.reason.startswith("heartbeat stale (")
    assert last_exit.signal == signal.SIGTERM


def test_a_bot_that_never_beats_is_restarted_after_the_timeout_and_grace(
    supervised: Factory,
) -> None:
    mute = supervised(tight_program(program("silent_bot", "0"), heartbeat_timeout_s=0.5))
    mute.controller.start(PRINCIPAL, None)
    wait_until(lambda: mute.document().restarts >= 1, 20, "a heartbeat restart")
    last_exit = mute.document().last_exit
    assert last_exit is not None
    assert last_exit.reason.startswith("no heartbeat since start (")


def test_stop_during_backoff_leaves_no_bot_and_no_later_restart(supervised: Factory) -> None:
    section = tight_program(
        program("crashing_bot"), restart={"backoff_initial_s": 30, "backoff_max_s": 30}
    )
    crashing = supervised(section)
    crashing.controller.start(PRINCIPAL, None)
    wait_until(lambda: crashing.document().state == "backoff", 15, "state backoff")
    watchdog = crashing.watchdog()
    assert watchdog is not None
    result = crashing.controller.stop(PRINCIPAL, None)
    assert result.changed
    assert result.status.state == "stopped"
    assert gone(watchdog)
    kinds = [event["kind"] for event in crashing.document().events]
    assert "bot.spawned" not in kinds[kinds.index("stop.requested") :]
    assert crashing.controller.status().exit_code() == ExitCode.NOT_RUNNING


def test_a_second_watchdog_for_the_same_home_exits_at_once(supervised: Factory) -> None:
    healthy = supervised(tight_program(program("healthy_bot")))
    healthy.controller.start(PRINCIPAL, 10)
    first = healthy.watchdog()
    assert first is not None
    second = subprocess.run(
        healthy.controller.watchdog_command(PRINCIPAL),
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
    )
    assert second.returncode != 0
    assert "another watchdog already supervises" in second.stderr
    assert healthy.watchdog() is not None
    assert healthy.watchdog() == first
    bots = [p for p in psutil.Process(first.pid).children() if p.status() != psutil.STATUS_ZOMBIE]
    assert len(bots) == 1


def test_a_command_that_cannot_start_fails_the_start_with_the_reason(
    supervised: Factory, tmp_path: Path
) -> None:
    missing = supervised(
        tight_program([str(tmp_path / "no-such-bot")], restart={"max_restarts": 1})
    )
    with pytest.raises(StartFailed) as failure:
        missing.controller.start(PRINCIPAL, 5)
    assert "could not start" in failure.value.message
    wait_until(lambda: missing.document().state == "fatal", 15, "state fatal")


def test_children_left_behind_by_a_killed_bot_are_killed_and_reaped_before_the_restart(
    supervised: Factory, tmp_path: Path
) -> None:
    pids = tmp_path / "tree.pids"
    stubborn = supervised(tight_program(program("stubborn_bot", str(pids)), stop_timeout_s=0.5))
    stubborn.controller.start(PRINCIPAL, 15)
    tree = read_tree(pids, expected=5)
    watchdog = stubborn.watchdog()
    assert watchdog is not None
    try:
        tree[0].send_signal(signal.SIGKILL)  # the bot itself; its children are orphaned
        wait_until(lambda: stubborn.document().restarts == 1, 15, "the restart")
        wait_until(lambda: all(gone(member) for member in tree), 10, "the old tree to be gone")
        wait_until(
            lambda: not [c for c in watchdog.children() if c.status() == psutil.STATUS_ZOMBIE],
            10,
            "no zombie children of the watchdog",
        )
    finally:
        kill_everything(tree)
