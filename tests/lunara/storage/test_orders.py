from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import orders, positions, users
from lunara.storage.database import InvalidValue, RecordNotFound, StateConflict, open_database
from lunara.trading.model import OrderSide, OrderStatus

D = Decimal


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 1, "one")
    await users.register(connection, 2, "two")
    yield connection
    await connection.close()


async def test_an_order_goes_from_pending_to_filled(db: aiosqlite.Connection) -> None:
    pending = await orders.record_pending_order(
        db, "lun-1-abc", 1, "BTCUSDT", OrderSide.BUY, D("0.5"), now=1
    )
    assert pending.status is OrderStatus.PENDING and pending.fill_price is None
    sent = await orders.mark_order_sent(db, "lun-1-abc", "88123", now=2)
    assert (sent.status, sent.exchange_order_id) == (OrderStatus.SENT, "88123")
    filled = await orders.mark_order_filled(
        db, "lun-1-abc", D("64000.5"), D("0.032"), filled_quantity=D("0.4999"), now=3
    )
    assert filled.status is OrderStatus.FILLED
    assert (filled.fill_price, filled.fee, filled.quantity) == (
        D("64000.5"),
        D("0.032"),
        D("0.4999"),
    )
    assert (filled.created_at, filled.updated_at) == (1, 3)
    position = await positions.open(db, 1, "BTCUSDT", filled.quantity, D("64000.5"), "lun-1-abc")
    linked = await orders.link_order_to_position(db, "lun-1-abc", position.id)
    assert linked.position_id == position.id
    assert await orders.orders_of_position(db, position.id) == [linked]
    assert await orders.get_order(db, "lun-1-abc") == linked


async def test_finished_orders_cannot_change_again(db: aiosqlite.Connection) -> None:
    await orders.record_pending_order(db, "o-1", 1, "BTCUSDT", OrderSide.SELL, D("1"))
    await orders.mark_order_rejected(db, "o-1", "insufficient balance")
    with pytest.raises(StateConflict, match="rejected; it cannot become filled"):
        await orders.mark_order_filled(db, "o-1", D("1"), D("0"))
    order = await orders.get_order(db, "o-1")
    assert order is not None and order.error == "insufficient balance"
    with pytest.raises(RecordNotFound):
        await orders.mark_order_sent(db, "nope")


async def test_a_client_order_id_is_recorded_once(db: aiosqlite.Connection) -> None:
    await orders.record_pending_order(db, "o-1", 1, "BTCUSDT", OrderSide.BUY, D("1"))
    with pytest.raises(StateConflict, match="already recorded"):
        await orders.record_pending_order(db, "o-1", 1, "BTCUSDT", OrderSide.BUY, D("1"))
    with pytest.raises(InvalidValue, match="client_order_id"):
        await orders.record_pending_order(db, "bad id!", 1, "BTCUSDT", OrderSide.BUY, D("1"))


async def test_unsettled_orders_are_listed_for_reconciliation(db: aiosqlite.Connection) -> None:
    for index, cid in enumerate(("a", "b", "c", "d")):
        await orders.record_pending_order(db, cid, 1, "BTCUSDT", OrderSide.BUY, D("1"), now=index)
    await orders.mark_order_sent(db, "b")
    await orders.mark_order_filled(db, "c", D("1"), D("0"))
    await orders.mark_order_unknown(db, "d", "timeout after 10 s")
    unsettled = await orders.list_unsettled_orders(db)
    assert [(o.client_order_id, o.status) for o in unsettled] == [
        ("a", OrderStatus.PENDING),
        ("b", OrderStatus.SENT),
        ("d", OrderStatus.UNKNOWN),
    ]
    resolved = await orders.mark_order_filled(db, "d", D("2"), D("0.01"))
    assert resolved.error is None
