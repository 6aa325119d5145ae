from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import paper_balances, payments, positions, user_settings, users
from lunara.storage.database import SchemaError, connect, open_database
from lunara.storage.migrations import (
    APPLICATION_ID,
    KNOWN_TABLES,
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    apply_migrations,
    checked_table,
    current_version,
)


async def _tables(connection: aiosqlite.Connection) -> set[str]:
    async with connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ) as cursor:
        return {row[0] for row in await cursor.fetchall()}


async def _seed_core_data(connection: aiosqlite.Connection) -> None:
    """Rows a v1 database would hold, written with plain SQL of the v1 schema."""
    await connection.executescript(
        """
        INSERT INTO users (telegram_id, username, plan, plan_expires_at, active, created_at)
            VALUES (42, 'alice', 'pro', 2000000000, 1, 1000);
        INSERT INTO positions (user_id, symbol, quantity, entry_price, status, opened_at,
                               entry_client_order_id)
            VALUES (42, 'BTCUSDT', '0.00100000', '50000.12', 'open', 1000, 'buy-1');
        INSERT INTO payments (charge_id, user_id, plan, amount_stars, currency, period_s, paid_at)
            VALUES ('charge-1', 42, 'pro', 250, 'XTR', 2592000, 1000);
        INSERT INTO paper_balances VALUES (42, 'USDT', '9950.5');
        """
    )


def test_versions_are_ordered_and_contiguous() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == MIGRATIONS[-1].version >= 2


@pytest.mark.parametrize("start", range(LATEST_VERSION))
async def test_upgrading_from_every_earlier_version_keeps_the_data(
    tmp_path: Path, start: int
) -> None:
    path = tmp_path / "lunara.db"
    connection = await connect(path)
    assert await apply_migrations(connection, target=start) == list(range(1, start + 1))
    assert await current_version(connection) == start
    if start >= 1:
        await _seed_core_data(connection)
    await connection.close()

    upgraded = await open_database(path)
    try:
        assert await current_version(upgraded) == LATEST_VERSION
        assert await _tables(upgraded) == KNOWN_TABLES
        async with upgraded.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == LATEST_VERSION
        if start >= 1:
            user = await users.get(upgraded, 42)
            assert user is not None and user.username == "alice" and user.plan == "pro"
            [position] = await positions.list_open(upgraded, 42)
            assert str(position.quantity) == "0.00100000"
            assert str(position.entry_price) == "50000.12"
            payment = await payments.get(upgraded, "charge-1")
            assert payment is not None
            assert payment.status is payments.PaymentStatus.PAID
            assert payment.refunded_at is None
            assert str(await paper_balances.paper_balance(upgraded, 42, "USDT")) == "9950.5"
    finally:
        await upgraded.close()


async def test_traders_with_settings_before_version_5_keep_a_trailing_stop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lunara.db"
    connection = await connect(path)
    await apply_migrations(connection, target=4)
    await connection.executescript(
        """
        INSERT INTO users (telegram_id, username, plan, active, created_at)
            VALUES (42, 'alice', 'free', 1, 1000);
        INSERT INTO user_settings (user_id, stake_usdt, symbols, trailing_stop_positive,
            trailing_stop_positive_offset, trailing_only_offset_is_reached, stoploss,
            auto_mode, updated_at)
            VALUES (42, '75', 'BTCUSDT', 0.01, 0.02, 1, -0.07, 0, 1000);
        """
    )
    await connection.close()
    upgraded = await open_database(path)
    try:
        settings = await user_settings.get(upgraded, 42)
        assert settings.trailing_stop is True
        assert (settings.stoploss, settings.trailing_stop_positive) == (-0.07, 0.01)
        with pytest.raises(sqlite3.IntegrityError):
            await upgraded.execute("UPDATE user_settings SET trailing_stop = 2")
    finally:
        await upgraded.close()


async def test_a_current_database_is_left_alone(tmp_path: Path) -> None:
    connection = await open_database(tmp_path / "lunara.db")
    try:
        assert await apply_migrations(connection) == []
        async with connection.execute("PRAGMA application_id") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == APPLICATION_ID
    finally:
        await connection.close()


async def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    connection = await connect(tmp_path / "lunara.db")
    broken = (
        *MIGRATIONS,
        Migration(
            LATEST_VERSION + 1,
            "broken",
            ("CREATE TABLE half_done (x INTEGER)", "ALTER TABLE missing ADD COLUMN y"),
        ),
    )
    try:
        with pytest.raises(SchemaError, match=rf"migration {LATEST_VERSION + 1} \(broken\)"):
            await apply_migrations(connection, migrations=broken)
        assert await current_version(connection) == LATEST_VERSION
        assert "half_done" not in await _tables(connection)
        assert not connection.in_transaction
    finally:
        await connection.close()


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    connection = await open_database(path)
    await connection.execute(
        "INSERT INTO schema_version VALUES (?, 'from the future', 0)", (LATEST_VERSION + 1,)
    )
    await connection.close()
    with pytest.raises(SchemaError, match="newer than this Lunara"):
        await open_database(path)


async def test_unknown_target_versions_are_refused(tmp_path: Path) -> None:
    connection = await connect(tmp_path / "lunara.db")
    try:
        with pytest.raises(SchemaError, match="no schema version"):
            await apply_migrations(connection, target=LATEST_VERSION + 5)
    finally:
        await connection.close()


def test_only_known_tables_may_appear_in_dynamic_sql() -> None:
    assert checked_table("users") == '"users"'
    for name in ('users"; DROP TABLE users; --', "sqlite_master", "Users"):
        with pytest.raises(SchemaError, match="unknown table"):
            checked_table(name)
