"""Backup, wipe, restore: the real bot resumes with the same positions and trailing stops.

The bot runs under the real watchdog (`lunara start`), in paper mode on a replay market
with a private Redis. The first run replays a rising series, so the stops trail up;
after the restore the market holds at the last price, so the stops must come back
exactly as they were backed up, not merely close.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from lunara.app import open_trading
from lunara.config import load_settings
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.stops import (
    STORE_NAME,
    RedisStopStore,
    TrackedStop,
    read_live_stops,
)
from lunara.trading.trailing import StopState
from tests.blueprint.cli_harness import Cli, manifest_document, wait_until, write_manifest

ENTRY = (sys.executable, "-m", "lunara.cli")
RISING = [100.0 + step for step in range(21)]  # 100 → 120, then the last price holds
LAST_PRICE = RISING[-1]
REPLAY_ENDED = "replay reached the end of its file"
PROGRAM = {
    "command": ["python", "-m", "lunara"],
    "stop_timeout_s": 10,
    "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 1, "max_restarts": 5, "window_s": 60},
    "memory_limit_mib": 450,
    "heartbeat_timeout_s": 30,
}


def write_klines(path: Path, closes: list[float]) -> Path:
    rows = ["open_time,open,high,low,close,volume"]
    previous = closes[0]
    for index, close in enumerate(closes):
        low, high = min(previous, close), max(previous, close)
        rows.append(f"{1_700_000_000_000 + index * 60_000},{previous},{high},{low},{close},1")
        previous = close
    path.write_text("\n".join(rows) + "\n")
    return path


class Installation:
    """A scratch Lunara: home, manifest, Redis and the market it trades on."""

    def __init__(self, cli: Cli, redis_url: str, market: Path) -> None:
        self.cli = cli
        self.redis_url = redis_url
        self.market = market

    @property
    def database(self) -> Path:
        return self.cli.home / "lunara.db"

    def env(self) -> dict[str, str]:
        return {
            "LUNARA_HOME": str(self.cli.home),
            "REDIS_URL": self.redis_url,
            "LUNARA_MARKET": f"replay:{self.market}",
            "LUNARA_SYMBOLS": "BTCUSDT,ETHUSDT",
            "LUNARA_TICK_SECONDS": "0.05",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*args, entry=ENTRY, extra_env=self.env(), timeout=90)

    def start(self) -> None:
        result = self.run("start", "--wait", "60")
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        result = self.run("stop", "--timeout", "20")
        assert result.returncode == 0, result.stderr

    def replays_finished(self) -> int:
        log = self.cli.home / "logs" / "bot.log"
        return log.read_text().count(REPLAY_ENDED) if log.exists() else 0

    def live_stops(self) -> dict[int, TrackedStop]:
        async def read() -> dict[int, TrackedStop]:
            redis = Redis.from_url(self.redis_url)
            try:
                return await read_live_stops(redis)
            finally:
                await redis.aclose()

        return asyncio.run(read())


@pytest.fixture
def installation(tmp_path: Path, home: Path, redis_db: str) -> Iterator[Installation]:
    manifest = write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM))
    market = write_klines(tmp_path / "rising.csv", RISING)
    running = Installation(Cli(home, manifest), redis_db, market)
    yield running
    running.run("stop", "--timeout", "20")


def open_positions(database: Path) -> list[tuple[int, int, str, str, str]]:
    with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT id, user_id, symbol, quantity, entry_price FROM positions "
            "WHERE status = 'open' ORDER BY id"
        ).fetchall()
    return [(int(a), int(b), str(c), str(d), str(e)) for a, b, c, d, e in rows]


def saved_stops(database: Path) -> dict[int, TrackedStop]:
    with sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT position_id, user_id, symbol, entry_price, peak_price, stop_price, "
            "activated, updated_at FROM trailing_stops"
        ).fetchall()
    stops = {}
    for position_id, user_id, symbol, entry, peak, stop, activated, updated_at in rows:
        state = StopState(
            float(entry), float(peak), float(stop), bool(activated), float(updated_at)
        )
        stops[int(position_id)] = TrackedStop(int(position_id), int(user_id), str(symbol), state)
    return stops


def integrity(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def wipe(database: Path, redis_url: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)

    async def flush() -> None:
        redis = Redis.from_url(redis_url)
        await redis.flushdb()
        await redis.aclose()

    asyncio.run(flush())


def seed_positions(installation: Installation) -> None:
    """Two traders buy through the engine (paper, at the replay's first price)."""

    async def buy() -> None:
        settings = load_settings(installation.env(), env_file=None)
        runtime = await open_trading(settings)
        try:
            db = runtime.engine.orders._db
            for user_id in (41, 42):
                await users.register(db, user_id, f"trader{user_id}")
            await runtime.engine.start()
            await runtime.engine.buy(41, "BTCUSDT", Decimal(200))
            await runtime.engine.buy(42, "ETHUSDT", Decimal(150))
            await runtime.engine.buy(42, "BTCUSDT", Decimal(100))
        finally:
            await runtime.aclose()

    asyncio.run(buy())


def test_backup_wipe_restore_resumes_the_same_positions_and_stops(
    installation: Installation, tmp_path: Path
) -> None:
    seed_positions(installation)
    positions = open_positions(installation.database)
    initial = saved_stops(installation.database)
    assert len(positions) == 3
    assert initial.keys() == {p[0] for p in positions}

    installation.start()
    during = tmp_path / "during.db"
    result = installation.run("backup", str(during))
    assert result.returncode == 0, result.stderr
    assert integrity(during) == "ok"
    assert saved_stops(during).keys() == {p[0] for p in open_positions(during)}
    refused = installation.run("restore", str(during))
    assert refused.returncode == 1
    assert "lunara stop" in refused.stderr
    wait_until(
        lambda: (
            installation.replays_finished() == 1
            and all(s.state.peak_price == LAST_PRICE for s in installation.live_stops().values())
        ),
        timeout_s=60,
        what="the rising replay to end with every stop trailing its last price",
    )
    installation.stop()

    recorded = installation.live_stops()
    assert recorded == saved_stops(installation.database)  # the stop checkpointed everything
    for position_id, stop in recorded.items():
        assert stop.state.stop_price > initial[position_id].state.stop_price  # trailed up
        assert stop.state.activated
    backup = tmp_path / "backup.db"
    result = installation.run("backup", str(backup))
    assert result.returncode == 0, result.stderr
    assert saved_stops(backup) == recorded
    assert open_positions(backup) == positions

    wipe(installation.database, installation.redis_url)
    assert installation.live_stops() == {}
    restored = installation.run("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert open_positions(installation.database) == positions

    installation.market = write_klines(tmp_path / "holding.csv", [LAST_PRICE] * 10)
    installation.start()
    wait_until(
        lambda: installation.replays_finished() == 2,
        timeout_s=60,
        what="the restarted bot to tick through the holding market",
    )
    assert installation.live_stops() == recorded  # reconciled into Redis, unmoved by ticks
    installation.stop()
    assert open_positions(installation.database) == positions
    assert saved_stops(installation.database) == recorded


def test_restore_drops_the_newer_redis_stops_of_the_replaced_database(
    installation: Installation, tmp_path: Path
) -> None:
    """Without this, the start-up reconcile would keep Redis's newer (wrong) stops."""
    seed_positions(installation)
    backup = tmp_path / "backup.db"
    assert installation.run("backup", str(backup)).returncode == 0
    backed_up = saved_stops(backup)

    async def move_on() -> None:  # the bot trades on after the backup: Redis moves ahead
        redis = Redis.from_url(installation.redis_url)
        db = await open_database(installation.database)
        store = RedisStopStore(redis, db, name=STORE_NAME)
        for stop in backed_up.values():
            state = stop.state
            ahead = StopState(state.entry_price, 130.0, 127.4, True, state.updated_at + 60)
            await store.add(stop.position_id, stop.user_id, stop.symbol, ahead)
        await db.close()
        await redis.aclose()

    asyncio.run(move_on())
    assert installation.live_stops() != backed_up
    restored = installation.run("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert "cleared 3 trailing stops from Redis" in restored.stdout
    assert installation.live_stops() == {}

    # The market holds at the price the positions were bought at: nothing moves the stops.
    installation.market = write_klines(tmp_path / "holding.csv", [RISING[0]] * 10)
    installation.start()
    wait_until(
        lambda: installation.replays_finished() == 1,
        timeout_s=60,
        what="the restarted bot to tick through the holding market",
    )
    assert installation.live_stops() == backed_up
