"""Backup, wipe, restore: the real bot resumes with the same positions and trailing stops.

The bot runs under the real watchdog (`lunara start`), in paper mode on a replay market
with a private Redis. The first run replays a rising series, so the stops trail up;
after the restore the market holds at the last price, so the stops must come back
exactly as they were backed up, not merely close. Two deployments of other names on
one Redis keep their stops apart, and a backup or restore of one touches only its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from lunara.app import open_trading
from lunara.config import load_settings
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.stops import (
    RedisStopStore,
    TrackedStop,
    read_live_stops,
    stop_key_prefix,
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
    """A scratch Lunara: home, manifest (the deployment's ``name``), Redis and the market
    it trades on."""

    def __init__(self, cli: Cli, name: str, redis_url: str, market: Path) -> None:
        self.cli = cli
        self.name = name
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
                return await read_live_stops(redis, name=self.name)
            finally:
                await redis.aclose()

        return asyncio.run(read())


def new_installation(
    root: Path, redis_url: str, closes: list[float], name: str = "lunara-test"
) -> Installation:
    home = root / "home"
    home.mkdir(parents=True, mode=0o700)
    manifest = write_manifest(root / "manifest.json", manifest_document(PROGRAM, name=name))
    market = write_klines(root / "rising.csv", closes)
    return Installation(Cli(home, manifest), name, redis_url, market)


@pytest.fixture
def installation(tmp_path: Path, redis_db: str) -> Iterator[Installation]:
    running = new_installation(tmp_path, redis_db, RISING)
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
        runtime = await open_trading(settings, name=installation.name)
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


@pytest.mark.slow
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


@pytest.mark.slow
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
        store = RedisStopStore(redis, db, name=installation.name)
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


@pytest.fixture
def two_deployments(tmp_path: Path, redis_db: str) -> Iterator[tuple[Installation, Installation]]:
    """Two deployments of other names on one Redis, each on a market of its own."""
    alpha = new_installation(tmp_path / "alpha", redis_db, RISING, name="alpha")
    doubled = [2 * close for close in RISING]
    beta = new_installation(tmp_path / "beta", redis_db, doubled, name="beta")
    yield alpha, beta
    for running in (alpha, beta):
        running.run("stop", "--timeout", "20")


@pytest.fixture
def client(redis_db: str) -> Iterator[redis_sync.Redis]:
    connection = redis_sync.Redis.from_url(redis_db)
    yield connection
    connection.close()


def raw_stops(client: redis_sync.Redis, name: str) -> dict[Any, Any]:
    """The stop hashes Redis holds under the deployment ``name``, byte for byte."""
    keys = sorted(client.scan_iter(match=f"{stop_key_prefix(name)}*"))
    return {key: client.hgetall(key) for key in keys}


@pytest.mark.slow
def test_deployments_sharing_a_redis_keep_their_own_stops_through_backup_and_restore(
    two_deployments: tuple[Installation, Installation], client: redis_sync.Redis, tmp_path: Path
) -> None:
    """Both databases hold positions 1 to 3; each deployment's stops trail its own market
    under its manifest's name, and a backup or restore of one reads or clears its own.

    A stop under the default name (``lunara:lunara:stop:1``, where every deployment kept
    its stops before they were named after it) is another deployment's to use or delete:
    newer than alpha's checkpoint of the same position, it is neither taken nor touched.
    """
    alpha, beta = two_deployments
    for deployment in (alpha, beta):
        seed_positions(deployment)
    entries = {
        deployment.name: {p[0]: float(p[4]) for p in open_positions(deployment.database)}
        for deployment in (alpha, beta)
    }
    assert sorted(entries["alpha"]) == sorted(entries["beta"]) == [1, 2, 3]
    legacy = f"{stop_key_prefix('lunara')}1"
    legacy_stop: dict[FieldT, EncodableT] = {
        b"user_id": b"41",
        b"symbol": b"BTCUSDT",
        b"entry_price": repr(entries["alpha"][1]).encode(),
        b"peak_price": b"150.0",
        b"stop_price": b"147.0",
        b"activated": b"1",
        b"updated_at": repr(saved_stops(alpha.database)[1].state.updated_at + 3600).encode(),
    }
    client.hset(legacy, mapping=legacy_stop)

    for deployment in (alpha, beta):
        deployment.start()
    for deployment, last_price in ((alpha, LAST_PRICE), (beta, 2 * LAST_PRICE)):

        def trailed_to_the_end(
            deployment: Installation = deployment, last: float = last_price
        ) -> bool:
            stops = deployment.live_stops()
            return (
                deployment.replays_finished() == 1
                and len(stops) == 3
                and all(stop.state.peak_price == last for stop in stops.values())
            )

        wait_until(
            trailed_to_the_end,
            timeout_s=60,
            what=f"{deployment.name}'s stops to trail its own market to its last price",
        )
    for deployment in (alpha, beta):
        deployment.stop()
    for deployment, last_price in ((alpha, LAST_PRICE), (beta, 2 * LAST_PRICE)):
        live = deployment.live_stops()
        assert live == saved_stops(deployment.database)
        for position_id, stop in live.items():
            assert stop.state.entry_price == entries[deployment.name][position_id]
            assert stop.state.peak_price == last_price
            assert stop.state.activated
    assert client.hgetall(legacy) == legacy_stop

    # Alpha's stops move on in Redis past its checkpoint, as between two checkpoints.
    ahead = {}
    for position_id, stop in alpha.live_stops().items():
        ahead[position_id] = (130.0, 127.4, stop.state.updated_at + 60)
        moved: dict[FieldT, EncodableT] = {
            "peak_price": "130.0",
            "stop_price": "127.4",
            "updated_at": repr(ahead[position_id][2]),
        }
        client.hset(f"{stop_key_prefix(alpha.name)}{position_id}", mapping=moved)
    beta_stops = raw_stops(client, beta.name)
    assert len(beta_stops) == 3
    backup = tmp_path / "alpha-backup.db"
    result = alpha.run("backup", str(backup))
    assert result.returncode == 0, result.stderr
    backed_up = saved_stops(backup)
    assert {
        position_id: (stop.state.peak_price, stop.state.stop_price, stop.state.updated_at)
        for position_id, stop in backed_up.items()
    } == ahead

    restored = alpha.run("restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert "cleared 3 trailing stops from Redis" in restored.stdout
    assert raw_stops(client, alpha.name) == {}
    assert raw_stops(client, beta.name) == beta_stops
    assert client.hgetall(legacy) == legacy_stop
    assert saved_stops(alpha.database) == backed_up
