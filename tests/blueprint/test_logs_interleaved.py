"""Logs where operators look: `lunara logs` shows the bot's log and the watchdog's events
in time order (or either alone), `lunara run` writes both to stdout (what `docker logs`
and journald show), and a stop's own SIGKILL is not taken for the OOM killer."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from blueprint.logtail import interleave, line_time
from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

ENTRY = REAL_BOT_ENTRY
PROGRAM = REAL_BOT_PROGRAM


def test_lines_of_several_logs_come_in_time_order_tracebacks_kept_with_their_line() -> None:
    bot = [
        "2026-12-06 05:11:34,038 INFO lunara: starting",
        "2026-12-06 05:11:36,500 ERROR lunara: tick failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "2026-12-06 05:11:40,000 INFO lunara: stopped",
    ]
    watchdog = [
        "2026-12-06T05:11:33.900000+00:00 watchdog[7]: spawned bot",
        "2026-12-06T05:11:37.000000+00:00 watchdog[7]: restarting",
        '{"at": "2026-12-06T05:11:39.250Z", "level": "INFO", "message": "json line"}',
    ]
    merged = interleave([bot, watchdog])
    assert merged == [
        watchdog[0], bot[0], bot[1], bot[2], bot[3], watchdog[1], watchdog[2], bot[4]
    ]  # fmt: skip
    assert line_time(bot[0]) == "2026-12-06T05:11:34.038"
    assert line_time(watchdog[2]) == "2026-12-06T05:11:39.250"
    assert line_time("Traceback (most recent call last):") is None


def _installation(tmp_path: Path) -> tuple[Cli, dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    return cli, {"LUNARA_HOME": str(home), "LUNARA_TICK_SECONDS": "0.2"}


@pytest.mark.slow
def test_logs_show_the_bots_lines_and_the_watchdogs_events_together_or_apart(
    tmp_path: Path,
) -> None:
    cli, env = _installation(tmp_path)
    try:
        assert cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env).returncode == 0
        assert cli.run("stop", "--timeout", "0", entry=ENTRY, extra_env=env).returncode == 0
        both = cli.run("logs", "--lines", "200", entry=ENTRY, extra_env=env)
        assert both.returncode == 0, both.stderr
        lines = both.stdout.splitlines()
        assert any("watchdog[" in line for line in lines)
        assert any(" lunara" in line and "watchdog[" not in line for line in lines)
        times = [moment for moment in map(line_time, lines) if moment is not None]
        assert times == sorted(times)
        stopped = [line for line in lines if "bot stopped (" in line]
        assert stopped
        assert "the stop's grace of 0 s ran out" in stopped[-1]
        assert "out-of-memory" not in stopped[-1]
        alone = cli.run("logs", "--source", "watchdog", "-n", "200", entry=ENTRY, extra_env=env)
        assert alone.stdout.strip()
        assert all("watchdog[" in line for line in alone.stdout.splitlines())
        bot = cli.run("logs", "--source", "bot", "-n", "200", entry=ENTRY, extra_env=env)
        assert bot.stdout.strip()
        assert "watchdog[" not in bot.stdout
    finally:
        cli.run("stop", "--timeout", "10", entry=ENTRY, extra_env=env)


def test_run_writes_the_watchdogs_events_and_the_bots_log_to_stdout(tmp_path: Path) -> None:
    cli, env = _installation(tmp_path)
    runner = subprocess.Popen(
        [*ENTRY, "--home", str(cli.home), "--manifest", str(cli.manifest), "run"],
        env=cli.env(TOKENS["owner"], env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    stdout = runner.stdout
    assert stdout is not None  # a pipe, as asked
    reader = threading.Thread(target=lambda: seen.extend(iter(stdout.readline, "")))
    reader.start()
    try:
        wait_until(
            lambda: (
                any("trading engine started" in line for line in seen) or runner.poll() is not None
            ),
            60,
            "the bot's log on run's stdout",
        )
        os.kill(runner.pid, signal.SIGTERM)
        runner.wait(60)
        reader.join(10)
        errors = runner.stderr.read() if runner.stderr else ""
        assert runner.returncode == 0, errors
        output = "".join(seen)
        assert "watchdog[" in output, output + errors
        assert "trading engine started" in output, output + errors
        assert "watchdog[" not in errors
        assert "bot started" in (cli.home / "logs" / "watchdog.log").read_text()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        reader.join(10)
        for stream in (runner.stdout, runner.stderr):
            if stream is not None:
                stream.close()
