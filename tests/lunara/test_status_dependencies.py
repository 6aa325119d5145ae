"""`lunara status` names what the running bot cannot reach (DESIGN.md, `dependencies`).

The real bot under the real watchdog and CLI, its dependencies the fakes (or a port
nothing listens on): what is down shows in `status --json` (`dependencies` and `notes`),
in the plain output, and in the watchdog's /metrics, while the exit code stays 0 (a
restart would not bring any of them back).
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

ENTRY = REAL_BOT_ENTRY


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def installation(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Cli(
        home, write_manifest(tmp_path / "manifest.json", manifest_document(REAL_BOT_PROGRAM))
    )


def status(cli: Cli, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = cli.run("status", "--json", entry=ENTRY, extra_env=env)
    return result.returncode, json.loads(result.stdout)


def dependency(cli: Cli, env: dict[str, str], name: str) -> str | None:
    deps = status(cli, env)[1]["dependencies"]
    return None if deps is None else str(deps[name]["state"])


def start_until_down(cli: Cli, env: dict[str, str], name: str) -> dict[str, Any]:
    """Start the bot and wait until it reports `name` down; the status then, exit 0 and
    healthy (a restart would not bring a dependency back)."""
    started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: dependency(cli, env, name) == "down", 30, f"{name} reported down")
    code, report = status(cli, env)
    assert code == 0
    assert report["healthy"] is True
    return report


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


@pytest.mark.slow
def test_redis_down_shows_as_a_dependency_and_a_note_with_exit_code_0(tmp_path: Path) -> None:
    cli = installation(tmp_path)
    health_port = free_port()
    env = {
        "LUNARA_HOME": str(cli.home),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "LUNARA_TICK_SECONDS": "0.2",
        "LUNARA_HEALTH_PORT": str(health_port),
    }
    try:
        report = start_until_down(cli, env, "redis")
        assert report["state"] == "running"
        redis = report["dependencies"]["redis"]
        assert redis["last_ok_at"] is None
        assert redis["down_since"] is not None
        assert "SQLite" in redis["reason"]
        assert "every 30 s" in redis["reason"]
        # Nothing else is configured: off, not ok.
        for name in ("telegram", "exchange", "ai"):
            assert report["dependencies"][name] == {"state": "off", "last_ok_at": None}
        assert [note for note in report["notes"] if note.startswith("redis is down")]
        plain = cli.run("status", entry=ENTRY, extra_env=env)
        assert plain.returncode == 0
        assert "redis down (not reached yet)" in plain.stdout
        assert "telegram off" in plain.stdout
        assert "notes            redis is down since " in plain.stdout  # a sentence, not a list
        text = metrics(health_port)
        assert 'lunara_dependency_up{dependency="redis"} 0\n' in text
        assert 'dependency="telegram"' not in text  # off: no series
        assert "lunara_up 1\n" in text
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)


@pytest.mark.slow
def test_telegram_unreachable_shows_down_then_ok_again(tmp_path: Path) -> None:
    from tests.fakes.telegram_api import FakeTelegram
    from tests.lunara.telegram.conftest import TOKEN

    cli = installation(tmp_path)
    health_port = free_port()
    telegram = FakeTelegram().start()
    port = telegram.port
    env = {
        "LUNARA_HOME": str(cli.home),
        "LUNARA_TICK_SECONDS": "0.2",
        "LUNARA_HEALTH_PORT": str(health_port),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": telegram.base_url,
    }
    try:
        started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
        assert started.returncode == 0, started.stderr
        wait_until(lambda: dependency(cli, env, "telegram") == "ok", 30, "telegram reported ok")
        first_ok = status(cli, env)[1]["dependencies"]["telegram"]["last_ok_at"]
        assert first_ok is not None
        assert 'lunara_dependency_up{dependency="telegram"} 1\n' in metrics(health_port)

        telegram.stop()
        wait_until(lambda: dependency(cli, env, "telegram") == "down", 60, "telegram down")
        code, report = status(cli, env)
        assert code == 0
        assert report["healthy"] is True
        assert report["state"] == "running"
        down = report["dependencies"]["telegram"]
        assert down["last_ok_at"] is not None
        assert "did not answer" in down["reason"]
        assert [note for note in report["notes"] if note.startswith("telegram is down")]
        assert cli.run("status", "--quiet", entry=ENTRY, extra_env=env).returncode == 0
        text = metrics(health_port)
        assert 'lunara_dependency_up{dependency="telegram"} 0\n' in text
        assert 'lunara_dependency_last_ok_timestamp_seconds{dependency="telegram"} ' in text

        telegram.start(port)  # back on the same address: polling reaches it again
        wait_until(lambda: dependency(cli, env, "telegram") == "ok", 60, "telegram ok again")
        report = status(cli, env)[1]
        assert not [note for note in report["notes"] if note.startswith("telegram")]
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
        telegram.stop()


@pytest.mark.slow
def test_telegram_waiting_for_its_poller_lease_in_redis_shows_down_saying_why(
    tmp_path: Path,
) -> None:
    """Redis down: the Bot API answers getMe, but polling waits for the poller lease that
    Redis keeps, so no command is fetched. Status used to say telegram ok."""
    from tests.blueprint.test_mirror import OwnRedis
    from tests.fakes.telegram_api import FakeTelegram
    from tests.lunara.telegram.conftest import TOKEN

    cli = installation(tmp_path)
    redis = OwnRedis(tmp_path / "redis")  # not started yet: its port refuses connections
    redis.directory.mkdir()
    env = {
        "LUNARA_HOME": str(cli.home),
        "LUNARA_TICK_SECONDS": "0.2",
        "REDIS_URL": redis.url,
        "TELEGRAM_BOT_TOKEN": TOKEN,
    }
    with FakeTelegram() as telegram:
        env["TELEGRAM_API_BASE_URL"] = telegram.base_url
        try:
            report = start_until_down(cli, env, "telegram")
            waiting = report["dependencies"]["telegram"]
            assert waiting["last_ok_at"] is not None  # the Bot API answered getMe
            assert waiting["down_since"] is not None
            assert waiting["reason"] == (
                "not polling: Redis, which keeps the poller lease, does not answer "
                "(ConnectionError); commands wait until it does"
            )
            assert [note for note in report["notes"] if note.startswith("telegram is down")]
            assert telegram.polls_by_token.get(TOKEN, 0) == 0

            redis.start()
            wait_until(lambda: dependency(cli, env, "telegram") == "ok", 60, "telegram ok")
            assert telegram.polls_by_token.get(TOKEN, 0) > 0
            report = status(cli, env)[1]
            assert not [note for note in report["notes"] if note.startswith("telegram")]
        finally:
            cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
            if redis.process is not None:
                redis.stop()


@pytest.mark.slow
def test_binance_unreachable_in_live_mode_shows_the_exchange_down(tmp_path: Path) -> None:
    from tests.fakes.binance_api import FakeBinance

    cli = installation(tmp_path)
    binance = FakeBinance().start()
    env = {
        "LUNARA_HOME": str(cli.home),
        "LUNARA_TICK_SECONDS": "0.2",
        "LUNARA_MODE": "live",
        "LUNARA_MARKET": "binance",
        "LUNARA_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BINANCE_API_BASE_URL": binance.base_url,
    }
    try:
        started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
        assert started.returncode == 0, started.stderr
        wait_until(lambda: dependency(cli, env, "exchange") == "ok", 60, "exchange reported ok")

        binance.stop()  # an idle live bot still finds out: it asks Binance when nothing went
        wait_until(lambda: dependency(cli, env, "exchange") == "down", 60, "exchange down")
        code, report = status(cli, env)
        assert code == 0
        assert report["state"] == "running"
        assert report["healthy"] is True
        exchange = report["dependencies"]["exchange"]
        assert exchange["last_ok_at"] is not None
        assert "Binance is unreachable" in exchange["reason"]
        assert [note for note in report["notes"] if note.startswith("exchange is down")]
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
        binance.stop()
