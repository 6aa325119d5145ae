"""The bot's commands on the `lunara` CLI: config, keys, backup/restore, analyze."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import TOKENS, Cli, manifest_document, write_manifest

ENTRY = (sys.executable, "-m", "lunara.cli")
TELEGRAM_TOKEN = "7312345678:AAH3kq9ZxV0b1c2d3e4f5g6h7i8j9k0lMnOpQ"


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    home = tmp_path / "home"
    home.mkdir()
    installation = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    yield installation
    installation.run("stop", "--timeout", "5")


def run(
    cli: Cli, *args: str, token: str | None = TOKENS["owner"], **env: str
) -> subprocess.CompletedProcess[str]:
    return cli.run(*args, token=token, entry=ENTRY, extra_env={"LUNARA_HOME": str(cli.home), **env})


def test_config_show_redacts_every_secret(cli: Cli) -> None:
    result = run(
        cli,
        "config",
        "show",
        "--json",
        TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN,
        GEMINI_API_KEY="gem-secret-123456",
    )
    assert result.returncode == 0, result.stderr
    assert TELEGRAM_TOKEN not in result.stdout
    assert "gem-secret-123456" not in result.stdout
    shown = json.loads(result.stdout)
    assert "redacted" in shown["TELEGRAM_BOT_TOKEN"]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_config_show_keeps_the_redis_url_but_not_its_password(cli: Cli, as_json: bool) -> None:
    url = "redis://lunara:hunter2xyz@127.0.0.1:1/3"
    result = run(cli, "config", "show", *(["--json"] if as_json else []), REDIS_URL=url)
    assert result.returncode == 0, result.stderr
    assert "hunter2xyz" not in result.stdout
    assert "redis://lunara:[redacted]@127.0.0.1:1/3" in result.stdout


def test_invalid_configuration_exits_6_naming_the_variable(cli: Cli) -> None:
    result = run(cli, "config", "show", LUNARA_MODE="yolo")
    assert result.returncode == 6
    assert "LUNARA_MODE" in result.stderr


def test_analyze_on_the_sim_market_gives_the_documented_json(cli: Cli) -> None:
    result = run(cli, "analyze", "BTCUSDT", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    for key in ("symbol", "close", "rsi", "ema_fast", "ema_slow", "macd", "macd_signal",
                "macd_hist", "bb_upper", "bb_middle", "bb_lower", "atr", "symptoms"):  # fmt: skip
        assert key in document


def test_analyze_a_replay_file_up_to_its_last_candle(cli: Cli, tmp_path: Path) -> None:
    import numpy as np
    import talib

    closes = [100 + (i % 9) * 0.7 + i * 0.05 for i in range(80)]
    rows = ["open_time,open,high,low,close,volume"] + [
        f"{1_700_000_000_000 + i * 60_000},{c},{c + 0.5},{c - 0.5},{c},1"
        for i, c in enumerate(closes)
    ]
    data = tmp_path / "klines.csv"
    data.write_text("\n".join(rows) + "\n")
    result = run(cli, "analyze", "BTCUSDT", "--json", LUNARA_MARKET=f"replay:{data}")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["close"] == closes[-1]
    assert document["rsi"] == pytest.approx(talib.RSI(np.array(closes), 14)[-1], rel=1e-9)


def test_analyze_with_too_few_candles_says_how_many_are_needed(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "short.csv"
    data.write_text("open_time,open,high,low,close,volume\n1,1,1,1,1,1\n2,1,1,1,1,1\n")
    result = run(cli, "analyze", "BTCUSDT", LUNARA_MARKET=f"replay:{data}")
    assert result.returncode == 1
    assert "34 candles are needed" in result.stderr


def test_backup_then_restore_is_refused_while_running(cli: Cli, tmp_path: Path) -> None:
    import asyncio

    from lunara.storage import users
    from lunara.storage.database import open_database

    async def seed(user_id: int) -> None:
        db = await open_database(cli.home / "lunara.db")
        await users.register(db, user_id, f"user{user_id}")
        await db.close()

    async def user_ids() -> list[int]:
        db = await open_database(cli.home / "lunara.db")
        page = await users.list_page(db)
        await db.close()
        return [u.telegram_id for u in page.users]

    asyncio.run(seed(11))
    backup = tmp_path / "backup.db"
    assert run(cli, "start", "--wait", "30").returncode == 0
    result = run(cli, "backup", str(backup))
    assert result.returncode == 0, result.stderr
    asyncio.run(seed(22))  # written after the backup
    refused = run(cli, "restore", str(backup))
    assert refused.returncode == 1
    assert "lunara stop" in refused.stderr
    assert run(cli, "stop").returncode == 0
    restored = run(cli, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert asyncio.run(user_ids()) == [11]


def test_bot_commands_are_authorized_like_any_other(cli: Cli) -> None:
    denied = run(cli, "config", "show", token=TOKENS["ci"])
    assert denied.returncode == 4


def test_restore_of_a_backup_carrying_a_trigger_is_refused_before_anything_changes(
    cli: Cli, tmp_path: Path, redis_db: str
) -> None:
    import asyncio
    import sqlite3

    import redis

    from lunara.storage import users
    from lunara.storage.database import open_database
    from lunara.trading.stops import stop_key_prefix

    async def seed(user_id: int) -> None:
        db = await open_database(cli.home / "lunara.db")
        await users.register(db, user_id, f"user{user_id}")
        await db.close()

    asyncio.run(seed(11))
    backup = tmp_path / "backup.db"
    assert run(cli, "backup", str(backup)).returncode == 0
    connection = sqlite3.connect(backup)
    connection.execute(
        "CREATE TRIGGER grant_top_plan AFTER INSERT ON users BEGIN "
        "UPDATE users SET plan = 'elite' WHERE telegram_id = NEW.telegram_id; END"
    )
    connection.close()
    deployment = json.loads(cli.manifest.read_text())["name"]  # its stops' keys are named so
    live_stop = f"{stop_key_prefix(deployment)}1"
    client = redis.Redis.from_url(redis_db)
    client.hset(live_stop, "stop", "1")
    before = (cli.home / "lunara.db").read_bytes()

    refused = run(cli, "restore", str(backup), REDIS_URL=redis_db)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert 'trigger "grant_top_plan"' in refused.stderr
    assert "refusing to restore" in refused.stderr
    assert (cli.home / "lunara.db").read_bytes() == before
    assert client.exists(live_stop) == 1  # Redis's stops are cleared only for a good file
    client.close()
