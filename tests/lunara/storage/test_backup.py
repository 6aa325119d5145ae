from __future__ import annotations

import asyncio
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from lunara.crypto import KeyMismatch, KeyRing, generate_key
from lunara.storage import credentials, positions, users
from lunara.storage.backup import (
    LiveStops,
    backup_database,
    backup_into,
    inspect_database,
    restore_database,
    rotate_keys,
)
from lunara.storage.credentials import Exchange
from lunara.storage.database import SchemaError, StorageError, connect, open_database
from lunara.storage.migrations import LATEST_VERSION, apply_migrations
from lunara.trading.stops import (
    STORE_NAME,
    RedisStopStore,
    TrackedStop,
    clear_live_stops,
    read_live_stops,
)
from lunara.trading.trailing import StopState
from tests.waiting import wait_until

API_KEY = "A" * 60 + "KEY1"
API_SECRET = "S" * 64

# Each transaction writes a user and their settings together: a consistent snapshot
# always holds as many of one as of the other.
WRITER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
connection.execute("PRAGMA journal_mode = WAL")
connection.execute("PRAGMA foreign_keys = ON")
number = 1
while True:
    connection.execute("BEGIN IMMEDIATE")
    connection.execute(
        "INSERT INTO users (telegram_id, username, plan, active, created_at) "
        "VALUES (?, 'writer', 'free', 1, 0)", (number,))
    connection.execute(
        "INSERT INTO user_settings (user_id, stake_usdt, symbols, stoploss, updated_at) "
        "VALUES (?, '10', '', -0.05, 0)", (number,))
    connection.execute("COMMIT")
    number += 1
"""


def _count(path: Path, table: str = "users") -> int:
    connection = sqlite3.connect(path, timeout=5)
    try:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        connection.close()


def _create(path: Path, *user_ids: int, target: int = LATEST_VERSION) -> None:
    async def build() -> None:
        connection = await connect(path)
        await apply_migrations(connection, target=target)
        for user_id in user_ids:
            await connection.execute(
                "INSERT INTO users (telegram_id, username, plan, active, created_at) "
                "VALUES (?, 'u', 'free', 1, 0)",
                (user_id,),
            )
        await connection.close()

    asyncio.run(build())


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "lunara.db"
    _create(path)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        wait_until(lambda: _count(path) >= 200, 20, "200 rows written", poll_s=0.01)
        yield path
        assert process.poll() is None, "the writer died during the test"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_backups_taken_while_the_bot_writes_are_consistent_snapshots(
    writer: Path, tmp_path: Path
) -> None:
    summaries = [backup_database(writer, tmp_path / f"backup-{i}.db") for i in range(5)]
    for summary in summaries:
        counts = summary.row_counts
        assert counts["users"] == counts["user_settings"] > 0
        assert summary.schema_version == LATEST_VERSION
        assert _count(summary.path) == counts["users"]
    snapshot_sizes = [s.row_counts["users"] for s in summaries]
    assert snapshot_sizes == sorted(snapshot_sizes)
    # The writer was never blocked for good: it keeps committing after the backups.
    wait_until(lambda: _count(writer) > snapshot_sizes[-1] + 100, 20, "100 rows more", poll_s=0.01)


def test_a_backup_is_a_private_self_contained_file(tmp_path: Path) -> None:
    source = tmp_path / "lunara.db"
    _create(source, 1, 2)
    target = tmp_path / "backups" / "lunara-backup.db"
    summary = backup_database(source, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert summary.row_counts["users"] == 2
    assert summary.size_bytes == target.stat().st_size
    connection = sqlite3.connect(target)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    connection.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["lunara-backup.db"]


def test_a_backup_never_overwrites_by_accident(tmp_path: Path) -> None:
    source = tmp_path / "lunara.db"
    _create(source, 1)
    target = tmp_path / "backup.db"
    target.write_text("precious")
    with pytest.raises(StorageError, match="already exists"):
        backup_database(source, target)
    assert target.read_text() == "precious"
    with pytest.raises(StorageError, match="no database"):
        backup_database(tmp_path / "absent.db", tmp_path / "other.db")


def _stop_rows(path: Path) -> dict[int, tuple[float, float, float]]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT position_id, peak_price, stop_price, updated_at FROM trailing_stops"
        ).fetchall()
    finally:
        connection.close()
    return {int(row[0]): (float(row[1]), float(row[2]), float(row[3])) for row in rows}


async def _trade_on_in_redis(path: Path, redis_url: str) -> dict[int, TrackedStop]:
    """Three positions: BTC moves on in Redis only (not yet checkpointed); ETH's
    checkpoint is newer than Redis; SOL is closed in SQLite but still in Redis."""
    from redis.asyncio import Redis

    db = await open_database(path)
    redis = Redis.from_url(redis_url)
    store = RedisStopStore(redis, db, name=STORE_NAME)
    await users.register(db, 1, None)
    ids = {}
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        position = await positions.open(db, 1, symbol, Decimal(1), Decimal(100), None)
        await store.add(position.id, 1, symbol, StopState(100.0, 100.0, 95.0, False, 10.0))
        ids[symbol] = position.id
    await store.add(ids["BTCUSDT"], 1, "BTCUSDT", StopState(100.0, 110.0, 104.5, True, 20.0))
    await db.execute(  # the checkpoint lags behind Redis
        "UPDATE trailing_stops SET peak_price = 100, stop_price = 95, activated = 0, "
        "updated_at = 10 WHERE position_id = ?",
        (ids["BTCUSDT"],),
    )
    await db.execute(
        "UPDATE trailing_stops SET peak_price = 105, stop_price = 99.75, updated_at = 30 "
        "WHERE position_id = ?",
        (ids["ETHUSDT"],),
    )
    await db.commit()
    await positions.close(db, ids["SOLUSDT"], Decimal(96), "stop_loss", None)
    live = await read_live_stops(redis, name=STORE_NAME)
    await redis.aclose()
    await db.close()
    return live


def _reader(redis_url: str) -> LiveStops:
    async def read() -> Mapping[int, TrackedStop]:
        from redis.asyncio import Redis

        redis = Redis.from_url(redis_url)
        try:
            return await read_live_stops(redis, name=STORE_NAME)
        finally:
            await redis.aclose()

    return read


def test_a_backup_holds_the_live_stops_that_are_newer_than_the_checkpoint(
    tmp_path: Path, redis_db: str
) -> None:
    live_path = tmp_path / "lunara.db"
    live = asyncio.run(_trade_on_in_redis(live_path, redis_db))
    btc, eth, sol = sorted(live)
    checkpoint = _stop_rows(live_path)
    assert checkpoint[btc] == (100.0, 95.0, 10.0)  # Redis is ahead of SQLite
    summary = backup_database(live_path, tmp_path / "backup.db", live_stops=_reader(redis_db))
    saved = _stop_rows(summary.path)
    state = live[btc].state
    assert (
        saved[btc]
        == (state.peak_price, state.stop_price, state.updated_at)
        == (
            110.0,
            104.5,
            20.0,
        )
    )
    assert saved[eth] == checkpoint[eth] == (105.0, 99.75, 30.0)  # newer checkpoint wins
    assert sol not in saved  # closed in the snapshot: no stop comes back for it
    assert _stop_rows(live_path) == checkpoint  # the live database is only read
    assert inspect_database(summary.path).row_counts["trailing_stops"] == 2


def test_clearing_the_live_stops_leaves_the_rest_of_redis(tmp_path: Path, redis_db: str) -> None:
    import redis

    live = asyncio.run(_trade_on_in_redis(tmp_path / "lunara.db", redis_db))
    client = redis.Redis.from_url(redis_db)
    client.set("lunara:lunara:ledger", "kept")
    client.hset("lunara:other:stop:1", "user_id", "1")

    async def clear() -> int:
        from redis.asyncio import Redis

        connection = Redis.from_url(redis_db)
        try:
            return await clear_live_stops(connection, name=STORE_NAME)
        finally:
            await connection.aclose()

    assert asyncio.run(clear()) == len(live) == 3
    assert sorted(client.keys()) == [b"lunara:lunara:ledger", b"lunara:other:stop:1"]
    client.close()


def test_scheduled_backups_are_timestamped_and_pruned_to_the_newest(tmp_path: Path) -> None:
    source = tmp_path / "lunara.db"
    _create(source, 1)
    directory = tmp_path / "backups"
    directory.mkdir()
    unrelated = directory / "notes.db"
    unrelated.write_text("mine")
    written = []
    for hour in range(4):
        summary, removed = backup_into(directory, source, keep=2, now=1_767_225_600 + hour * 3600)
        written.append(summary.path)
        assert removed == ([written[hour - 2]] if hour >= 2 else [])
    assert written[0].name == "lunara-20260101T000000.000Z.db"
    assert sorted(directory.iterdir()) == sorted([*written[-2:], unrelated])
    assert inspect_database(written[-1]).row_counts["users"] == 1
    with pytest.raises(StorageError, match="at least one"):
        backup_into(directory, source, keep=0)


def test_restore_is_refused_while_the_bot_runs(tmp_path: Path) -> None:
    live, saved = tmp_path / "lunara.db", tmp_path / "saved.db"
    _create(live, 1)
    backup_database(live, saved)
    asyncio.run(_register(live, 2))
    with pytest.raises(StorageError, match="lunara stop"):
        restore_database(saved, live, is_running=True)
    assert _count(live) == 2


def test_restore_replaces_the_data_and_keeps_the_previous_database(tmp_path: Path) -> None:
    live, saved = tmp_path / "lunara.db", tmp_path / "saved.db"
    _create(live, 1)
    backup_database(live, saved)
    asyncio.run(_register(live, 2))
    result = restore_database(saved, live, is_running=False)
    assert result.restored.row_counts["users"] == 1
    assert result.previous_copy is not None
    assert _count(result.previous_copy) == 2
    assert asyncio.run(_user_ids(live)) == [1]


def test_an_older_backup_is_restored_and_upgraded_on_open(tmp_path: Path) -> None:
    old, live = tmp_path / "old.db", tmp_path / "lunara.db"
    _create(old, 7, target=1)
    assert inspect_database(old).schema_version == 1
    restore_database(old, live, is_running=False)
    assert asyncio.run(_user_ids(live)) == [7]
    assert inspect_database(live).schema_version == LATEST_VERSION


def test_restore_refuses_files_that_are_not_lunara_databases(tmp_path: Path) -> None:
    live = tmp_path / "lunara.db"
    _create(live, 1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE t (x)")
    connection.close()
    future = tmp_path / "future.db"
    backup_database(live, future)
    connection = sqlite3.connect(future)
    connection.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (LATEST_VERSION + 1,))
    connection.commit()
    connection.close()
    for path, message in (
        (junk, "not a readable SQLite database"),
        (foreign, "not a Lunara database"),
        (future, f"schema version {LATEST_VERSION + 1}"),
        (tmp_path / "absent.db", "does not exist"),
    ):
        with pytest.raises(StorageError, match=message):
            restore_database(path, live, is_running=False)
    assert _count(live) == 1


def test_inspect_reports_damage_as_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    _create(path, *range(1, 500))
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(SchemaError):
        inspect_database(path)


def test_rotate_keys_reencrypts_every_secret(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    old, new = generate_key(), generate_key()
    asyncio.run(_store(path, KeyRing([old]), 1, 2))
    assert rotate_keys(path, KeyRing([new, old])) == 2
    assert asyncio.run(_load_all(path, KeyRing([new]), 1, 2)) == [API_SECRET, API_SECRET]


def test_rotate_keys_is_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    old, stray, new = generate_key(), generate_key(), generate_key()
    asyncio.run(_store(path, KeyRing([old]), 1, 3))
    asyncio.run(_store(path, KeyRing([stray]), 2))
    with pytest.raises(KeyMismatch, match="user 2"):
        rotate_keys(path, KeyRing([new, old]))
    assert asyncio.run(_load_all(path, KeyRing([old]), 1, 3)) == [API_SECRET, API_SECRET]
    with pytest.raises(StorageError, match="no database"):
        rotate_keys(tmp_path / "absent.db", KeyRing([new]))


async def _register(path: Path, *user_ids: int) -> None:
    connection = await open_database(path)
    for user_id in user_ids:
        await users.register(connection, user_id, None)
    await connection.close()


async def _user_ids(path: Path) -> list[int]:
    connection = await open_database(path)
    page = await users.list_page(connection)
    await connection.close()
    return [user.telegram_id for user in page.users]


async def _store(path: Path, ring: KeyRing, *user_ids: int) -> None:
    connection = await open_database(path)
    for user_id in user_ids:
        await users.register(connection, user_id, None)
        await credentials.store(connection, ring, user_id, Exchange.BINANCE, API_KEY, API_SECRET)
    await connection.close()


async def _load_all(path: Path, ring: KeyRing, *user_ids: int) -> list[str]:
    connection = await open_database(path)
    secrets = []
    for user_id in user_ids:
        loaded = await credentials.load(connection, ring, user_id, Exchange.BINANCE)
        assert loaded is not None
        secrets.append(loaded.api_secret)
    await connection.close()
    return secrets
