"""Odd configuration reaching the bot is a configuration error (exit 6, one line, not
restarted), never a traceback, a crash loop or a tick that eats the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lunara.config import MIN_TICK_SECONDS
from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    Cli,
    manifest_document,
    write_manifest,
)
from tests.blueprint.test_env_file import NOT_REGULAR_FILES, make_not_regular


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    document = manifest_document(program=REAL_BOT_PROGRAM)
    return Cli(home, write_manifest(tmp_path / "manifest.json", document))


def deployment_env(cli: Cli, text: str) -> None:
    """The deployment's own configuration: the `.env` of the working directory."""
    env_file = cli.home.parent / ".env"
    env_file.write_text(text)
    env_file.chmod(0o600)


@pytest.mark.parametrize("value", ["1e-9", "0.001", "nan", "inf"])
def test_a_tick_below_the_minimum_or_not_finite_is_refused(cli: Cli, value: str) -> None:
    result = cli.run(
        "config", "show", entry=REAL_BOT_ENTRY, extra_env={"LUNARA_TICK_SECONDS": value}
    )
    assert result.returncode == 6, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "LUNARA_TICK_SECONDS" in result.stderr
    if value in ("1e-9", "0.001"):
        assert f"greater than or equal to {MIN_TICK_SECONDS}" in result.stderr


def test_the_minimum_tick_itself_is_accepted(cli: Cli) -> None:
    result = cli.run(
        "config", "show", entry=REAL_BOT_ENTRY,
        extra_env={"LUNARA_TICK_SECONDS": str(MIN_TICK_SECONDS)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"open_time,open,high,low,close,volume\n\xff\xfe,1,1,1,1,1\n", "line 2: not UTF-8 text"),
        (b"open_time;price\n1;2\n", "line 1: the header must be"),
    ],
    ids=["not-utf8", "not-klines"],
)
def test_a_bad_replay_file_stops_the_bot_with_exit_6_and_no_restart(
    cli: Cli, content: bytes, said: str
) -> None:
    replay = cli.home.parent / "prices.csv"
    replay.write_bytes(content)
    deployment_env(cli, f"LUNARA_MARKET=replay:{replay}\n")
    try:
        started = cli.run("start", "--wait", "60", entry=REAL_BOT_ENTRY)
        assert started.returncode == 6, started.stdout + started.stderr
        assert "LUNARA_MARKET" in started.stderr
        assert said in started.stderr
        status = cli.status()
        assert status["state"] == "fatal", status
        assert status["restarts"] == 0, status
        assert "LUNARA_MARKET" in status["last_exit"]["reason"]
        logs = "".join(path.read_text() for path in (cli.home / "logs").glob("bot*.log"))
        assert said in logs
        assert "Traceback" not in logs
    finally:
        cli.run("stop", "--timeout", "5")


def test_analyze_on_a_bad_replay_file_is_a_one_line_configuration_error(cli: Cli) -> None:
    replay = cli.home.parent / "prices.csv"
    replay.write_bytes(b"open_time,open,high,low,close,volume\n1,\xff,1,1,1,1\n")
    result = cli.run(
        "analyze", "BTCUSDT", entry=REAL_BOT_ENTRY,
        extra_env={"LUNARA_MARKET": f"replay:{replay}", "LUNARA_HOME": str(cli.home)},
    )  # fmt: skip
    assert result.returncode == 6, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "LUNARA_MARKET" in result.stderr
    assert "line 2: not UTF-8 text" in result.stderr


@pytest.mark.parametrize("kind", sorted(NOT_REGULAR_FILES))
def test_the_bot_refuses_a_dot_env_that_is_not_a_regular_file_with_exit_6(
    cli: Cli, kind: str
) -> None:
    """The bot reads `.env` itself too (a watchdog started from elsewhere, `python -m
    lunara` in a container): a FIFO there used to keep it waiting before its first beat."""
    env_file = cli.home.parent / ".env"
    said = make_not_regular(env_file, kind)
    # The subprocess timeout only turns a hang into a failure; nothing here is timed.
    bot = subprocess.run(
        [sys.executable, "-m", "lunara"],
        env=cli.env(None, {"LUNARA_HOME": str(cli.home)}),
        cwd=cli.home.parent,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert bot.returncode == 6, bot.stdout + bot.stderr
    assert bot.stderr.splitlines() == [
        f"lunara: invalid configuration: cannot read {env_file} ({said}): it must be a file "
        "of VARIABLE=value lines, or absent"
    ], bot.stderr
