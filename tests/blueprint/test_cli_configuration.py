"""Configuration errors through the real CLI and the real bot: exit 6 with the bot's own
one-line reason and no restart; `start` without --wait claims no more than it knows; a
failed start quotes its own run's output, not earlier runs'."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.blueprint.cli_harness import Cli, manifest_document, wait_until, write_manifest
from tests.programs.harness import program

REAL_BOT = ["python", "-m", "lunara"]
MakeCli = Callable[[list[str]], Cli]


def program_section(command: list[str]) -> dict[str, Any]:
    """Restarts within a second and room for five of them: a bot that were restarted
    would show it well within any wait here."""
    return {
        "command": command,
        "stop_timeout_s": 3,
        "restart": {
            "backoff_initial_s": 0.2,
            "backoff_max_s": 0.5,
            "max_restarts": 5,
            "window_s": 60,
        },
        "memory_limit_mib": 400,
        "heartbeat_timeout_s": 30,
    }


@pytest.fixture
def make_cli(tmp_path: Path) -> Iterator[MakeCli]:
    made: list[Cli] = []

    def make(command: list[str]) -> Cli:
        home = tmp_path / "home"
        home.mkdir(mode=0o700)
        document = manifest_document(program=program_section(command))
        made.append(Cli(home, write_manifest(tmp_path / "manifest.json", document)))
        return made[-1]

    yield make
    for cli in made:
        cli.run("stop", "--timeout", "5")


def only_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def spawns(cli: Cli) -> int:
    ledger = json.loads((cli.home / "ledger.json").read_text())
    return sum(event["kind"] == "bot.spawned" for event in ledger["events"])


def test_start_wait_exits_6_with_the_bots_own_reason_and_the_bot_is_not_restarted(
    make_cli: MakeCli,
) -> None:
    cli = make_cli(REAL_BOT)
    result = cli.run("start", "--wait", "60", extra_env={"LUNARA_MODE": "nonsense"})
    assert result.returncode == 6, result.stdout + result.stderr
    line = only_line(result.stderr)
    assert line.startswith("lunara: invalid configuration: LUNARA_MODE: "), line
    assert "(got 'nonsense')" in line
    status = cli.run("status", "--json")
    assert status.returncode == 5
    document = json.loads(status.stdout)
    assert document["state"] == "fatal"
    assert document["supervisor_pid"] is None
    assert document["restarts"] == 0
    assert spawns(cli) == 1
    assert document["last_exit"]["code"] == 6
    assert document["last_exit"]["reason"] == line.removeprefix("lunara: ")
    assert any(note.startswith("invalid configuration") for note in document["notes"])
    assert "Traceback" not in (cli.home / "logs" / "bot-output.log").read_text()


@pytest.mark.slow
def test_restart_wait_exits_6_when_the_new_bot_refuses_its_configuration(
    make_cli: MakeCli,
) -> None:
    cli = make_cli(REAL_BOT)
    started = cli.run("start", "--wait", "60")
    assert started.returncode == 0, started.stderr
    assert "the bot is up" in started.stdout
    result = cli.run("restart", "--wait", "60", extra_env={"LOG_FORMAT": "xml"})
    assert result.returncode == 6, result.stdout + result.stderr
    assert only_line(result.stderr).startswith("lunara: invalid configuration: LOG_FORMAT: ")
    document = cli.status()
    assert document["state"] == "fatal"
    assert document["last_exit"]["code"] == 6
    assert spawns(cli) == 2  # the first bot and the refused one, nothing after


def test_run_exits_6_with_the_bots_reason_instead_of_restarting_it(make_cli: MakeCli) -> None:
    cli = make_cli(REAL_BOT)
    result = cli.run("run", extra_env={"LUNARA_SYMBOLS": "BTC-USDT"})
    assert result.returncode == 6, result.stdout + result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("lunara: invalid configuration: LUNARA_SYMBOLS: not a trading pair")
    assert spawns(cli) == 1
    assert cli.status()["state"] == "fatal"


def test_plain_start_says_starting_and_status_then_shows_the_refusal(
    make_cli: MakeCli, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    cli = make_cli(program("refusing_bot", str(gate)))
    result = cli.run("start", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["changed"] is True
    assert answer["message"].startswith("starting (bot pid "), answer["message"]
    assert "not known to be up yet" in answer["message"]
    assert "lunara status" in answer["message"]
    assert answer["status"]["state"] == "starting"

    gate.touch()  # now the bot refuses its configuration
    wait_until(lambda: cli.status()["state"] == "fatal", 20, "state fatal")
    document = cli.status()
    reason = "invalid configuration: LUNARA_MODE: must be paper or live (got 'gated')"
    assert document["last_exit"]["code"] == 6
    assert document["last_exit"]["reason"] == reason
    assert document["restarts"] == 0
    assert spawns(cli) == 1
    assert cli.run("status", "--quiet").returncode == 5


def test_a_failed_start_quotes_this_starts_output_only(make_cli: MakeCli) -> None:
    # A project variable: the caller's other variables never reach the bot.
    talking = (
        "import os, sys\nprint('bot says', os.environ['LUNARA_RUN_MARK'], flush=True)\nsys.exit(3)"
    )
    cli = make_cli([sys.executable, "-c", talking])
    first = cli.run("start", "--wait", "30", extra_env={"LUNARA_RUN_MARK": "first-run"})
    assert first.returncode == 7, first.stdout + first.stderr
    assert "bot says first-run" in first.stderr
    assert cli.run("stop", "--timeout", "5").returncode == 0

    second = cli.run("start", "--wait", "30", extra_env={"LUNARA_RUN_MARK": "second-run"})
    assert second.returncode == 7, second.stdout + second.stderr
    assert "bot says second-run" in second.stderr
    assert "first-run" not in second.stderr
    output = (cli.home / "logs" / "bot-output.log").read_text()
    assert "bot says first-run" in output  # the log keeps both runs; the message does not


def test_a_failed_starts_output_is_quoted_with_every_secret_blanked(make_cli: MakeCli) -> None:
    """bot-output.log holds whatever the bot printed, a traceback's locals included; the
    excerpt a failed start quotes goes through the one redactor: the configured secrets
    and the shapes of those nobody configured (a 64-character exchange key)."""
    exchange_key = "Ab3" * 21 + "x"
    talking = (
        "import os, sys\n"
        f"print('exchange said', {exchange_key!r}, flush=True)\n"
        "print('webhook', os.environ['LUNARA_HOOK_SECRET'], flush=True)\n"
        "sys.exit(3)"
    )
    cli = make_cli([sys.executable, "-c", talking])
    result = cli.run("start", "--wait", "30", extra_env={"LUNARA_HOOK_SECRET": "hunter2-hook"})
    assert result.returncode == 7, result.stdout + result.stderr
    assert "exchange said [redacted]" in result.stderr
    assert "webhook [redacted]" in result.stderr
    assert exchange_key not in result.stderr
    assert "hunter2-hook" not in result.stderr
    output = (cli.home / "logs" / "bot-output.log").read_text()
    assert exchange_key in output  # the bot's own file keeps what it printed
