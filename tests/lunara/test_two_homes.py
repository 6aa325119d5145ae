"""One live instance per deployment, through the real CLI, real processes and a real Redis.

Two homes under one manifest `name` on one Redis: with one database between them (a
copy of it stands for a volume two hosts mount) the second waits as `standby` and takes
over within the lease's TTL once the first is killed; with a database of its own the
second is another deployment and is refused at start (exit 6), polling nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import TOKEN

ENTRY = REAL_BOT_ENTRY
ADMIN = 424242
TRADER = 515151


def _buys(cli: Cli) -> int:
    """Buy orders filled in the home's database, read as any reader of it would."""
    with contextlib.closing(sqlite3.connect(cli.home / "lunara.db", timeout=10)) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM orders WHERE user_id = ? AND side = 'BUY' AND status = 'filled'",
            (TRADER,),
        ).fetchone()
    return int(row[0])


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


def _home(tmp_path: Path, label: str, program: dict[str, Any] | None = None) -> Cli:
    home = tmp_path / label / "home"
    home.mkdir(parents=True, mode=0o700)
    document = manifest_document(program or REAL_BOT_PROGRAM)
    document["principals"][f"telegram:{ADMIN}"] = "admin"
    return Cli(home, write_manifest(tmp_path / label / "manifest.json", document))


def _env(cli: Cli, redis_url: str, telegram: FakeTelegram) -> dict[str, str]:
    return {
        "LUNARA_HOME": str(cli.home),
        "REDIS_URL": redis_url,
        "LUNARA_TICK_SECONDS": "0.2",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
    }


def _status(cli: Cli, env: dict[str, str]) -> dict[str, Any]:
    result = cli.run("status", "--json", entry=ENTRY, extra_env=env)
    document: dict[str, Any] = json.loads(result.stdout)
    document["exit_code"] = result.returncode
    return document


def _report(cli: Cli) -> str:
    """What the bot last reported in its heartbeat (``up``, ``standby:WHO``, ...)."""
    try:
        fields = (cli.home / "heartbeat").read_text().split(maxsplit=2)
    except FileNotFoundError:
        return ""
    return fields[2].strip() if len(fields) > 2 else ""


def _traded(cli: Cli) -> bool:
    """Whether this home's bot has run a trading tick (its metrics carry the tick's time)."""
    try:
        return "tick_duration_seconds" in json.loads((cli.home / "metrics.json").read_text())
    except (FileNotFoundError, ValueError):
        return False


@pytest.mark.slow
def test_a_second_home_of_another_deployment_under_the_same_name_is_refused_with_exit_6(
    tmp_path: Path, redis_db: str, telegram: FakeTelegram
) -> None:
    production = _home(tmp_path, "production")
    laptop = _home(tmp_path, "laptop")
    production_env = _env(production, redis_db, telegram)
    laptop_env = _env(laptop, redis_db, telegram)
    try:
        started = production.run("start", "--wait", "60", entry=ENTRY, extra_env=production_env)
        assert started.returncode == 0, started.stderr
        polls = telegram.call_count("getMe")
        refused = laptop.run("start", "--wait", "60", entry=ENTRY, extra_env=laptop_env)
        assert refused.returncode == 6, refused.stdout + refused.stderr
        message = refused.stderr
        assert "another deployment named 'lunara-test' is running" in message
        assert f"host {socket.gethostname()}" in message
        assert str(production.home) in message
        assert "give this one its own `name`" in message
        assert "Traceback" not in message
        assert telegram.call_count("getMe") == polls  # the refused bot never reached Telegram
        assert _status(laptop, laptop_env)["state"] == "fatal"
        mirrored = json.loads(
            redis.Redis.from_url(redis_db).get("lunara:lunara-test:ledger") or b"{}"
        )
        assert mirrored["home"] == str(production.home)  # not overwritten by the refused home
        status = _status(production, production_env)
        assert status["state"] == "running", status
        assert status["healthy"], status
    finally:
        laptop.run("stop", "--timeout", "20", entry=ENTRY, extra_env=laptop_env)
        production.run("stop", "--timeout", "20", entry=ENTRY, extra_env=production_env)


def _kill_instance(cli: Cli, env: dict[str, str]) -> None:
    status = _status(cli, env)
    for pid in (status["supervisor_pid"], status["pid"]):
        assert pid is not None, status
        os.kill(pid, signal.SIGKILL)
    for pid in (status["supervisor_pid"], status["pid"]):
        wait_until(partial(_gone, pid), 10, f"pid {pid} to die")


def _gone(pid: int) -> bool:
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _one_deployment_in_two_homes(
    tmp_path: Path, redis_db: str, telegram: FakeTelegram, program: dict[str, Any] | None = None
) -> tuple[Cli, dict[str, str], Cli, dict[str, str]]:
    """Two homes sharing one database (as a volume two hosts mount): the first started."""
    first = _home(tmp_path, "first", program)
    second = _home(tmp_path, "second", program)
    first_env = _env(first, redis_db, telegram)
    second_env = _env(second, redis_db, telegram)
    started = first.run("start", "--wait", "60", entry=ENTRY, extra_env=first_env)
    assert started.returncode == 0, started.stderr
    assert first.run("stop", entry=ENTRY, extra_env=first_env).returncode == 0
    for name in ("lunara.db", "lunara.db-wal", "lunara.db-shm"):
        if (first.home / name).exists():
            shutil.copy2(first.home / name, second.home / name)
    started = first.run("start", "--wait", "60", entry=ENTRY, extra_env=first_env)
    assert started.returncode == 0, started.stderr
    return first, first_env, second, second_env


@pytest.mark.slow
def test_a_second_home_of_the_same_deployment_waits_as_standby_and_takes_over_when_killed(
    tmp_path: Path, redis_db: str, telegram: FakeTelegram
) -> None:
    first, first_env, second, second_env = _one_deployment_in_two_homes(
        tmp_path, redis_db, telegram
    )
    try:
        waiting = second.run("start", "--wait", "60", entry=ENTRY, extra_env=second_env)
        assert waiting.returncode == 0, waiting.stderr
        assert _report(second).startswith("standby:")
        assert str(first.home) in _report(second)
        standby = _status(second, second_env)
        assert standby["state"] == "standby", standby
        assert standby["exit_code"] == 0, standby
        assert any(str(first.home) in note for note in standby["notes"]), standby
        active = _status(first, first_env)
        assert active["state"] == "running", active
        assert active["exit_code"] == 0, active
        assert active["standby"]["home"] == str(second.home), active
        wait_until(lambda: _traded(first), 30, "the active instance to trade")
        assert not _traded(second)  # the standby does not trade

        polls_before = telegram.call_count("getUpdates")
        _kill_instance(first, first_env)
        wait_until(lambda: _report(second) == "up", 40, "the standby to take over")
        wait_until(lambda: _traded(second), 30, "the new active instance to trade")
        telegram.push_command(ADMIN, "/help")
        wait_until(lambda: bool(telegram.messages_to(ADMIN)), 30, "an answer from the new holder")
        assert telegram.call_count("getUpdates") > polls_before
        assert sum(telegram.conflicts_by_token.values()) == 0  # never two polls at once
        status = _status(second, second_env)
        assert status["state"] == "running", status
        assert status["healthy"], status
    finally:
        second.run("stop", "--timeout", "20", entry=ENTRY, extra_env=second_env)
        first.run("stop", "--timeout", "20", entry=ENTRY, extra_env=first_env)


@pytest.mark.slow
def test_a_holder_paused_past_its_lease_acts_no_more_when_it_wakes(
    tmp_path: Path, redis_db: str, telegram: FakeTelegram
) -> None:
    """SIGSTOP the active bot (a frozen container, a migrated VM) until the standby has
    taken the lease; woken, it polls and sends nothing and gives way: its renewal finds
    the lease taken, it exits, and its watchdog restarts it as standby."""
    patient = {**REAL_BOT_PROGRAM, "heartbeat_timeout_s": 600}  # the watchdog lets it sleep
    first, first_env, second, second_env = _one_deployment_in_two_homes(
        tmp_path, redis_db, telegram, patient
    )
    try:
        assert (
            second.run("start", "--wait", "60", entry=ENTRY, extra_env=second_env).returncode == 0
        )
        assert _report(second).startswith("standby:")
        frozen = psutil.Process(_status(first, first_env)["pid"])
        frozen.suspend()
        try:
            wait_until(lambda: _report(second) == "up", 40, "the standby to take the lease")
        finally:
            frozen.resume()
        bot_log = first.home / "logs" / "bot.log"
        wait_until(
            lambda: "the instance lease was taken by" in bot_log.read_text(),
            20,
            "the woken holder to learn it lost the lease",
        )
        wait_until(lambda: _report(first).startswith("standby:"), 30, "it to wait as standby")
        assert str(second.home) in _report(first)
        telegram.push_command(ADMIN, "/help")
        wait_until(lambda: bool(telegram.messages_to(ADMIN)), 30, "an answer")
        assert _status(first, first_env)["state"] == "standby"
        assert len(telegram.messages_to(ADMIN)) == 1  # answered once, by the live instance
        assert sum(telegram.conflicts_by_token.values()) == 0  # never two polls at once
        assert "Traceback" not in bot_log.read_text()
    finally:
        second.run("stop", "--timeout", "20", entry=ENTRY, extra_env=second_env)
        first.run("stop", "--timeout", "20", entry=ENTRY, extra_env=first_env)


@pytest.mark.slow
def test_two_runs_on_one_home_one_active_one_standby_that_takes_over_when_killed(
    tmp_path: Path, redis_db: str, telegram: FakeTelegram
) -> None:
    cli = _home(tmp_path, "one")
    env = _env(cli, redis_db, telegram)
    command = [*ENTRY, "--home", str(cli.home), "--manifest", str(cli.manifest), "run"]

    def run() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            env=cli.env(TOKENS["owner"], env),
            cwd=cli.home.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = run()
    second: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: _report(cli) == "up", 60, "the first run's bot to be up")
        second = run()
        wait_until(lambda: _status(cli, env).get("standby") is not None, 30, "the standby")
        status = _status(cli, env)
        assert status["state"] == "running", status
        assert status["supervisor_pid"] == first.pid, status
        assert status["standby"]["pid"] == second.pid, status
        assert any(f"pid {second.pid}" in note for note in status["notes"]), status
        shown = cli.run("status", entry=ENTRY, extra_env=env).stdout
        assert f"waiting to take over: host {socket.gethostname()}" in shown, shown
        assert f"pid {second.pid}" in shown
        revision = status["ledger_revision"]
        assert _status(cli, env)["ledger_revision"] == revision  # the standby writes nothing

        telegram.push_command(TRADER, "/start")
        wait_until(lambda: bool(telegram.messages_to(TRADER)), 30, "the trader registered")
        polls_before = telegram.call_count("getUpdates")
        telegram.push_command(TRADER, "/buy BTCUSDT 100")  # in flight when the kill lands
        _kill_instance(cli, env)
        wait_until(
            lambda: _status(cli, env)["supervisor_pid"] == second.pid, 30, "the standby's watchdog"
        )
        wait_until(lambda: _report(cli) == "up", 40, "its bot to take the lease")
        telegram.push_command(ADMIN, "/help")
        wait_until(lambda: bool(telegram.messages_to(ADMIN)), 30, "an answer from the new holder")
        assert telegram.call_count("getUpdates") > polls_before
        assert sum(telegram.conflicts_by_token.values()) == 0  # never two polls at once
        wait_until(lambda: _buys(cli) == 1, 30, "the trader's buy")
        status = _status(cli, env)
        assert status["state"] == "running", status
        assert status["healthy"], status
        assert _buys(cli) == 1  # bought once, whichever instance took the command
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=30)
        assert second.returncode == 0, output
        assert "standby: another supervisor holds" in output
        assert "taking over" in output
    finally:
        for process in (first, second):
            if process is not None:
                if process.poll() is None:
                    process.kill()
                process.communicate()  # reaps it and closes its pipe
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
