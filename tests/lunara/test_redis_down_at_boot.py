"""The real bot under the real watchdog, started while the Redis it is configured with
is down: it runs on SQLite alone instead of crash-looping, and says so once."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

ENTRY = REAL_BOT_ENTRY
PROGRAM = REAL_BOT_PROGRAM


@pytest.mark.slow
def test_the_bot_starts_and_keeps_ticking_on_sqlite_while_redis_is_down(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    env = {
        "LUNARA_HOME": str(home),
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "LUNARA_TICK_SECONDS": "0.2",
    }
    try:
        started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
        assert started.returncode == 0, started.stderr
        metrics = home / "metrics.json"

        def ticked() -> bool:
            if not metrics.exists():
                return False
            return "tick_duration_seconds" in json.loads(metrics.read_text() or "{}")

        wait_until(ticked, 30, "a trading tick")
        status = json.loads(cli.run("status", "--json", entry=ENTRY, extra_env=env).stdout)
        assert status["state"] == "running" and status["restarts"] == 0
        log = (home / "logs" / "bot.log").read_text()
        assert log.count("Redis unavailable") == 1
        assert "Traceback" not in log
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)


@pytest.mark.slow
def test_start_wait_succeeds_only_once_every_service_is_up(tmp_path: Path) -> None:
    """Telegram unreachable: the bot beats, but its Telegram service is not up, so
    `start --wait` fails (exit 7) naming it; with the Bot API answering, it succeeds."""
    from tests.fakes.telegram_api import FakeTelegram
    from tests.lunara.telegram.conftest import TOKEN

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    env = {
        "LUNARA_HOME": str(home),
        "LUNARA_TICK_SECONDS": "0.2",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": f"http://127.0.0.1:{closed_port}",
    }
    try:
        refused = cli.run("start", "--wait", "8", entry=ENTRY, extra_env=env)
        assert refused.returncode == 7, refused.stdout + refused.stderr
        assert "not every service is up" in refused.stderr and "telegram" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env).returncode == 0
        with FakeTelegram() as telegram:
            env["TELEGRAM_API_BASE_URL"] = telegram.base_url
            started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
            assert started.returncode == 0, started.stderr
            assert (home / "heartbeat").read_text().split()[2] == "up"
            cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
