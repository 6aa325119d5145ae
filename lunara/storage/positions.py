"""Trading positions and their trailing-stop checkpoints.

A position is opened by a filled buy order and closed by the sell that ends it; closing
drops its trailing-stop checkpoint in the same transaction. Quantities and prices are
Decimals stored as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import aiosqlite

from lunara.storage import users
from lunara.storage.checks import check_exit_reason, check_positive, check_symbol
from lunara.storage.database import (
    InvalidValue,
    RecordNotFound,
    StateConflict,
    StorageError,
    decimal_to_text,
    now_s,
    transaction,
)
from lunara.storage.rows import RowCodec, required
from lunara.trading.model import PositionStatus


@dataclass(frozen=True)
class Position:
    id: int
    user_id: int
    symbol: str
    quantity: Decimal
    entry_price: Decimal
    status: PositionStatus
    opened_at: float
    closed_at: float | None
    exit_price: Decimal | None
    exit_reason: str | None
    entry_client_order_id: str | None
    exit_client_order_id: str | None
    # Quote spent on the entry (fees in quote included), base sold so far, quote received
    # for it net of fees, base left on the account when it closed, and the profit.
    entry_cost: Decimal | None = None
    sold_quantity: Decimal = Decimal(0)
    exit_proceeds: Decimal = Decimal(0)
    residue_quantity: Decimal | None = None
    realized_pnl: Decimal | None = None


@dataclass(frozen=True)
class TrailingStopRecord:
    """A checkpoint of one position's trailing stop (the hot copy may live in Redis)."""

    position_id: int
    user_id: int
    symbol: str
    entry_price: float
    peak_price: float
    stop_price: float
    activated: bool
    updated_at: float


_POSITIONS = RowCodec(Position)
_TRAILING_STOPS = RowCodec(TrailingStopRecord)


async def _positions(
    connection: aiosqlite.Connection, where: str, parameters: tuple[object, ...]
) -> list[Position]:
    return await _POSITIONS.all(connection, f"SELECT * FROM positions WHERE {where}", parameters)


async def get(connection: aiosqlite.Connection, position_id: int) -> Position | None:
    found = await _positions(connection, "id = ?", (position_id,))
    return found[0] if found else None


async def open(
    connection: aiosqlite.Connection,
    user_id: int,
    symbol: str,
    quantity: Decimal,
    entry_price: Decimal,
    entry_client_order_id: str | None,
    *,
    entry_cost: Decimal | None = None,
    now: float | None = None,
) -> Position:
    """Record a position opened by a filled buy order; ``quantity`` is what the account
    received (net of a commission taken in the base asset)."""
    check_symbol(symbol)
    check_positive("quantity", quantity)
    check_positive("entry_price", entry_price)
    at = now_s() if now is None else now
    async with transaction(connection):
        await users.require(connection, user_id)
        cursor = await connection.execute(
            "INSERT INTO positions (user_id, symbol, quantity, entry_price, status, opened_at, "
            "entry_client_order_id, entry_cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                user_id,
                symbol,
                decimal_to_text(quantity),
                decimal_to_text(entry_price),
                PositionStatus.OPEN.value,
                at,
                entry_client_order_id,
                None if entry_cost is None else decimal_to_text(entry_cost),
            ),
        )
        position_id = cursor.lastrowid
        if position_id is None:
            raise StorageError("the database did not return the new position's id")
        opened = await get(connection, position_id)
    if opened is None:
        raise StorageError(f"position {position_id} vanished while being opened")
    return opened


async def close(
    connection: aiosqlite.Connection,
    position_id: int,
    exit_price: Decimal,
    exit_reason: str,
    exit_client_order_id: str | None,
    *,
    sold: Decimal | None = None,
    proceeds: Decimal | None = None,
    now: float | None = None,
) -> Position:
    """Close an open position and drop its trailing-stop checkpoint, atomically.

    With ``sold`` (base this last exit sold) and ``proceeds`` (quote it brought, net of
    fees) the position also records what it sold in all, the residue it left on the
    account (what was held minus what was sold: dust under the lot step) and its
    profit from what was really bought and sold.
    """
    check_positive("exit_price", exit_price)
    check_exit_reason(exit_reason)
    at = now_s() if now is None else now
    async with transaction(connection):
        position = await get(connection, position_id)
        totals: dict[str, str | None] = {}
        if position is not None and sold is not None and proceeds is not None:
            total_proceeds = position.exit_proceeds + proceeds
            totals = {
                "sold_quantity": decimal_to_text(position.sold_quantity + sold),
                "exit_proceeds": decimal_to_text(total_proceeds),
                "residue_quantity": decimal_to_text(max(position.quantity - sold, Decimal(0))),
                "realized_pnl": None
                if position.entry_cost is None
                else decimal_to_text(total_proceeds - position.entry_cost),
            }
        assignments = "".join(f", {name} = ?" for name in totals)
        cursor = await connection.execute(
            "UPDATE positions SET status = ?, closed_at = ?, exit_price = ?, exit_reason = ?, "
            f"exit_client_order_id = ?{assignments} WHERE id = ? AND status = ?",
            (
                PositionStatus.CLOSED.value,
                at,
                decimal_to_text(exit_price),
                exit_reason,
                exit_client_order_id,
                *totals.values(),
                position_id,
                PositionStatus.OPEN.value,
            ),
        )
        if cursor.rowcount == 0:
            existing = await get(connection, position_id)
            if existing is None:
                raise RecordNotFound(f"position {position_id} does not exist")
            raise StateConflict(f"position {position_id} is already closed")
        await connection.execute("DELETE FROM trailing_stops WHERE position_id = ?", (position_id,))
        closed = await get(connection, position_id)
    if closed is None:
        raise StorageError(f"position {position_id} vanished while being closed")
    return closed


async def record_partial_exit(
    connection: aiosqlite.Connection, position_id: int, sold: Decimal, proceeds: Decimal
) -> Position:
    """An exit the exchange filled only partly: the position keeps what was not sold.

    It stays open (its trailing stop with it), so the rest is sold by the next exit.
    """
    check_positive("sold", sold)
    async with transaction(connection):
        position = required(
            await get(connection, position_id), f"position {position_id} does not exist"
        )
        if position.status is not PositionStatus.OPEN:
            raise StateConflict(f"position {position_id} is already closed")
        if sold >= position.quantity:
            raise StateConflict(f"position {position_id} holds only {position.quantity}")
        await connection.execute(
            "UPDATE positions SET quantity = ?, sold_quantity = ?, exit_proceeds = ? WHERE id = ?",
            (
                decimal_to_text(position.quantity - sold),
                decimal_to_text(position.sold_quantity + sold),
                decimal_to_text(position.exit_proceeds + proceeds),
                position_id,
            ),
        )
        updated = await get(connection, position_id)
    if updated is None:
        raise StorageError(f"position {position_id} vanished while being updated")
    return updated


async def list_open(connection: aiosqlite.Connection, user_id: int | None = None) -> list[Position]:
    """Open positions of one trader, or of everyone (for the engine's start-up)."""
    if user_id is None:
        return await _positions(connection, "status = ? ORDER BY id", (PositionStatus.OPEN.value,))
    return await _positions(
        connection, "status = ? AND user_id = ? ORDER BY id", (PositionStatus.OPEN.value, user_id)
    )


async def by_user(
    connection: aiosqlite.Connection,
    user_id: int,
    *,
    status: PositionStatus | None = None,
    limit: int = 50,
) -> list[Position]:
    """A trader's positions, newest first."""
    if not 1 <= limit <= 1000:
        raise InvalidValue("limit", "must be between 1 and 1000")
    if status is None:
        return await _positions(
            connection, "user_id = ? ORDER BY opened_at DESC, id DESC LIMIT ?", (user_id, limit)
        )
    return await _positions(
        connection,
        "user_id = ? AND status = ? ORDER BY opened_at DESC, id DESC LIMIT ?",
        (user_id, PositionStatus(status).value, limit),
    )


# Trailing-stop checkpoints


async def save_trailing_stop(
    connection: aiosqlite.Connection, record: TrailingStopRecord
) -> TrailingStopRecord:
    """Upsert one checkpoint of an open position.

    A checkpoint arriving after the position closed is refused, so a late write from the
    trailing-stop loop cannot resurrect a stop for a position that is gone.
    """
    async with transaction(connection):
        position = await get(connection, record.position_id)
        if position is None or position.status is not PositionStatus.OPEN:
            raise StateConflict(f"position {record.position_id} is not open")
        await connection.execute(
            "INSERT INTO trailing_stops (position_id, user_id, symbol, entry_price, peak_price, "
            "stop_price, activated, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (position_id) DO UPDATE SET peak_price = excluded.peak_price, "
            "stop_price = excluded.stop_price, activated = excluded.activated, "
            "updated_at = excluded.updated_at",
            (
                record.position_id,
                record.user_id,
                record.symbol,
                record.entry_price,
                record.peak_price,
                record.stop_price,
                int(record.activated),
                record.updated_at,
            ),
        )
    return record


async def get_trailing_stop(
    connection: aiosqlite.Connection, position_id: int
) -> TrailingStopRecord | None:
    return await _TRAILING_STOPS.one(
        connection, "SELECT * FROM trailing_stops WHERE position_id = ?", (position_id,)
    )


async def list_trailing_stops(connection: aiosqlite.Connection) -> list[TrailingStopRecord]:
    return await _TRAILING_STOPS.all(
        connection, "SELECT * FROM trailing_stops ORDER BY position_id"
    )


async def delete_trailing_stop(connection: aiosqlite.Connection, position_id: int) -> bool:
    async with transaction(connection):
        cursor = await connection.execute(
            "DELETE FROM trailing_stops WHERE position_id = ?", (position_id,)
        )
        return cursor.rowcount > 0
