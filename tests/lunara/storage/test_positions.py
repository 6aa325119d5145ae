from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import positions, users
from lunara.storage.database import InvalidValue, RecordNotFound, StateConflict, open_database
from lunara.storage.positions import TrailingStopRecord
from lunara.trading.model import ExitReason, PositionStatus

D = Decimal


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 1, "one")
    await users.register(connection, 2, "two")
    yield connection
    await connection.close()


async def test_a_position_opens_and_closes_with_exact_decimals(db: aiosqlite.Connection) -> None:
    opened = await positions.open(db, 1, "BTCUSDT", D("0.00012345"), D("64250.10"), "buy-1", now=10)
    assert opened.status is PositionStatus.OPEN
    assert (opened.quantity, opened.entry_price) == (D("0.00012345"), D("64250.10"))
    assert await positions.get(db, opened.id) == opened
    closed = await positions.close(
        db, opened.id, D("65000.5"), ExitReason.TRAILING_STOP, "sell-1", now=20
    )
    assert closed.status is PositionStatus.CLOSED
    assert (closed.closed_at, closed.exit_price) == (20, D("65000.5"))
    assert (closed.exit_reason, closed.exit_client_order_id) == ("trailing_stop", "sell-1")
    assert await positions.list_open(db) == []


async def test_closing_twice_or_closing_nothing_is_refused(db: aiosqlite.Connection) -> None:
    opened = await positions.open(db, 1, "ETHUSDT", D("1"), D("3000"), None)
    await positions.close(db, opened.id, D("3100"), ExitReason.MANUAL, None)
    with pytest.raises(StateConflict, match="already closed"):
        await positions.close(db, opened.id, D("3200"), ExitReason.MANUAL, None)
    still = await positions.get(db, opened.id)
    assert still is not None and still.exit_price == D("3100")
    with pytest.raises(RecordNotFound):
        await positions.close(db, 999, D("1"), ExitReason.MANUAL, None)


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "field"),
    [
        ("btc-usdt", D("1"), D("1"), "symbol"),
        ("BTCUSDT", D("0"), D("1"), "quantity"),
        ("BTCUSDT", D("1"), D("-1"), "entry_price"),
        ("BTCUSDT", D("NaN"), D("1"), "quantity"),
    ],
)
async def test_implausible_positions_are_refused(
    db: aiosqlite.Connection, symbol: str, quantity: Decimal, price: Decimal, field: str
) -> None:
    with pytest.raises(InvalidValue, match=field):
        await positions.open(db, 1, symbol, quantity, price, None)


async def test_positions_need_a_registered_user(db: aiosqlite.Connection) -> None:
    with pytest.raises(RecordNotFound):
        await positions.open(db, 3, "BTCUSDT", D("1"), D("1"), None)


async def test_open_positions_are_listed_per_user_and_overall(db: aiosqlite.Connection) -> None:
    a = await positions.open(db, 1, "BTCUSDT", D("1"), D("1"), None, now=1)
    b = await positions.open(db, 2, "ETHUSDT", D("1"), D("1"), None, now=2)
    c = await positions.open(db, 1, "SOLUSDT", D("1"), D("1"), None, now=3)
    await positions.close(db, a.id, D("2"), "stop_loss", None, now=4)
    assert [p.id for p in await positions.list_open(db)] == [b.id, c.id]
    assert [p.id for p in await positions.list_open(db, 1)] == [c.id]
    assert [p.id for p in await positions.by_user(db, 1)] == [c.id, a.id]
    closed = await positions.by_user(db, 1, status=PositionStatus.CLOSED)
    assert [p.id for p in closed] == [a.id]
    assert [p.id for p in await positions.by_user(db, 1, limit=1)] == [c.id]


async def test_exit_reasons_must_be_simple_names(db: aiosqlite.Connection) -> None:
    opened = await positions.open(db, 1, "BTCUSDT", D("1"), D("1"), None)
    with pytest.raises(InvalidValue, match="exit_reason"):
        await positions.close(db, opened.id, D("1"), "Because; DROP", None)


async def test_trailing_stop_checkpoints_are_upserted_and_dropped_on_close(
    db: aiosqlite.Connection,
) -> None:
    opened = await positions.open(db, 1, "BTCUSDT", D("1"), D("100"), None)
    record = TrailingStopRecord(opened.id, 1, "BTCUSDT", 100.0, 100.0, 95.0, False, 1.0)
    await positions.save_trailing_stop(db, record)
    moved = TrailingStopRecord(opened.id, 1, "BTCUSDT", 100.0, 110.0, 107.8, True, 2.0)
    await positions.save_trailing_stop(db, moved)
    assert await positions.get_trailing_stop(db, opened.id) == moved
    assert await positions.list_trailing_stops(db) == [moved]
    await positions.close(db, opened.id, D("107.8"), ExitReason.TRAILING_STOP, None)
    assert await positions.get_trailing_stop(db, opened.id) is None
    with pytest.raises(StateConflict, match="not open"):
        await positions.save_trailing_stop(db, moved)  # a late write after the close
    assert await positions.get_trailing_stop(db, opened.id) is None
    with pytest.raises(StateConflict, match="not open"):
        await positions.save_trailing_stop(db, TrailingStopRecord(999, 1, "X", 1, 1, 1, False, 1))


async def test_a_trailing_stop_checkpoint_can_be_deleted(db: aiosqlite.Connection) -> None:
    opened = await positions.open(db, 1, "BTCUSDT", D("1"), D("100"), None)
    record = TrailingStopRecord(opened.id, 1, "BTCUSDT", 100.0, 100.0, 95.0, False, 1.0)
    await positions.save_trailing_stop(db, record)
    assert await positions.delete_trailing_stop(db, opened.id) is True
    assert await positions.delete_trailing_stop(db, opened.id) is False
