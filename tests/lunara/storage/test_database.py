from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunara.storage.database import (
    PAGE_CACHE_KIB,
    StateConflict,
    StorageError,
    decimal_to_text,
    open_database,
    text_to_decimal,
    transaction,
)
from lunara.storage.migrations import LATEST_VERSION, current_version


async def _scalar(connection: aiosqlite.Connection, sql: str) -> object:
    async with connection.execute(sql) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def test_open_database_uses_wal_foreign_keys_a_busy_timeout_and_a_small_cache(
    db: aiosqlite.Connection,
) -> None:
    assert await _scalar(db, "PRAGMA journal_mode") == "wal"
    assert await _scalar(db, "PRAGMA foreign_keys") == 1
    assert int(str(await _scalar(db, "PRAGMA busy_timeout"))) >= 1000
    assert await _scalar(db, "PRAGMA cache_size") == -PAGE_CACHE_KIB  # KiB, not the 2 MiB default
    assert await current_version(db) == LATEST_VERSION


async def test_open_database_creates_missing_folders(tmp_path: Path) -> None:
    connection = await open_database(tmp_path / "a" / "b" / "lunara.db")
    await connection.close()
    assert (tmp_path / "a" / "b" / "lunara.db").is_file()


async def test_transaction_commits_or_rolls_back_as_a_whole(db: aiosqlite.Connection) -> None:
    async def insert_then_fail() -> None:
        async with transaction(db):
            await db.execute("INSERT INTO bot_flags VALUES ('a', '1', 0, NULL)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    assert await _scalar(db, "SELECT COUNT(*) FROM bot_flags") == 0
    async with transaction(db):
        await db.execute("INSERT INTO bot_flags VALUES ('a', '1', 0, NULL)")
        await db.execute("INSERT INTO bot_flags VALUES ('b', '1', 0, NULL)")
    assert await _scalar(db, "SELECT COUNT(*) FROM bot_flags") == 2


async def test_nested_transactions_join_the_outer_one(db: aiosqlite.Connection) -> None:
    async def inner_then_outer_fails() -> None:
        async with transaction(db):
            async with transaction(db):
                await db.execute("INSERT INTO bot_flags VALUES ('inner', '1', 0, NULL)")
            raise RuntimeError("outer fails after inner finished")

    with pytest.raises(RuntimeError):
        await inner_then_outer_fails()
    assert await _scalar(db, "SELECT COUNT(*) FROM bot_flags") == 0


async def test_concurrent_writers_on_one_connection_are_serialised(
    db: aiosqlite.Connection,
) -> None:
    async def writer(name: str) -> None:
        for index in range(20):
            async with transaction(db):
                await db.execute(
                    "INSERT INTO bot_flags VALUES (?, '1', 0, NULL)", (f"{name}{index}",)
                )
                await asyncio.sleep(0)  # let the other writer try to interleave

    await asyncio.gather(writer("a"), writer("b"), writer("c"))
    assert await _scalar(db, "SELECT COUNT(*) FROM bot_flags") == 60


async def test_constraint_violations_become_state_conflicts(db: aiosqlite.Connection) -> None:
    with pytest.raises(StateConflict, match="FOREIGN KEY"):
        async with transaction(db):
            await db.execute("INSERT INTO paper_balances VALUES (999, 'USDT', '1')")


async def test_writes_by_another_connection_are_visible(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    first = await open_database(path)
    second = await open_database(path)
    try:
        async with transaction(first):
            await first.execute("INSERT INTO bot_flags VALUES ('x', '1', 0, NULL)")
        assert await _scalar(second, "SELECT value FROM bot_flags WHERE key = 'x'") == "1"
    finally:
        await first.close()
        await second.close()


def test_decimal_text_is_positional_never_scientific() -> None:
    assert decimal_to_text(Decimal("1E-8")) == "0.00000001"
    assert decimal_to_text(Decimal("1E+3")) == "1000"
    assert decimal_to_text(Decimal("-0")) == "0"
    with pytest.raises(StorageError):
        decimal_to_text(Decimal("NaN"))
    with pytest.raises(StorageError):
        text_to_decimal("abc")
    with pytest.raises(StorageError):
        text_to_decimal("Infinity")


@given(
    st.decimals(min_value=-(10**15), max_value=10**15, places=18, allow_nan=False)
    | st.decimals(min_value=-(10**30), max_value=10**30, places=0, allow_nan=False)
)
def test_decimals_survive_the_text_round_trip_exactly(value: Decimal) -> None:
    text = decimal_to_text(value)
    assert "E" not in text.upper()
    assert text_to_decimal(text) == value
