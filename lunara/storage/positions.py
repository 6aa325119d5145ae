"""Trading state: positions, the orders that open and close them, trailing-stop
checkpoints, and paper-trading balances.

Every order is recorded as `pending` under its client order id *before* it is sent,
so after a crash the engine can ask the exchange about each unsettled order instead
of guessing. Quantities and prices are Decimals stored as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import aiosqlite

from lunara.storage import users
from lunara.storage.database import (
    InvalidValue,
    RecordNotFound,
    StateConflict,
    StorageError,
    decimal_to_text,
    now_s,
    optional_decimal,
    text_to_decimal,
    transaction,
)
from lunara.trading.symbols import is_symbol

ASSET_PATTERN = re.compile(r"^[A-Z0-9]{2,12}$")
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,36}$")
EXIT_REASON_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_ERROR_LENGTH = 500


class InsufficientBalance(StorageError):
    """A paper balance would go below zero."""


class PositionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ExitReason(StrEnum):
    """Why a position was closed; the engine may record other lower-case reasons too."""

    MANUAL = "manual"
    STOP_LOSS = "stop_loss"
    TRAILING_STOP = "trailing_stop"
    ADMIN = "admin"
    DUST = "dust"  # what was left is below what the exchange takes; kept as residue


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FILLED = "filled"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


# Which status may follow which: filled and rejected are final; unknown (a timeout or
# a lost answer) is resolved later by asking the exchange.
ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.SENT, OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.UNKNOWN}
    ),
    OrderStatus.SENT: frozenset({OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.UNKNOWN}),
    OrderStatus.UNKNOWN: frozenset({OrderStatus.SENT, OrderStatus.FILLED, OrderStatus.REJECTED}),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}

# Columns an order transition may set; anything else in the dynamic UPDATE is refused.
_ORDER_UPDATABLE_COLUMNS = frozenset(
    {"exchange_order_id", "fill_price", "fee", "error", "quantity", "fees", "expired"}
)

UNSETTLED_ORDER_STATUSES = (OrderStatus.PENDING, OrderStatus.SENT, OrderStatus.UNKNOWN)


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
class Order:
    client_order_id: str
    user_id: int
    position_id: int | None
    symbol: str
    side: OrderSide
    quantity: Decimal
    status: OrderStatus
    exchange_order_id: str | None
    fill_price: Decimal | None
    fee: Decimal | None
    created_at: float
    updated_at: float
    error: str | None
    fees: dict[str, Decimal] = field(default_factory=dict)  # commission per asset
    expired: bool = False  # the exchange ended it before filling all it asked
    settled: bool = False  # its fill has been applied to its position
    exit_reason: str | None = None  # why an exit order was placed (None: a buy)


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


def _check_symbol(symbol: str) -> str:
    if not is_symbol(symbol):
        raise InvalidValue("symbol", "must be a trading pair such as BTCUSDT")
    return symbol


def _check_positive(field: str, value: Decimal) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise InvalidValue(field, "must be a positive decimal")
    return value


def _check_client_order_id(client_order_id: str) -> str:
    if not CLIENT_ORDER_ID_PATTERN.match(client_order_id):
        raise InvalidValue("client_order_id", "must be 1-36 characters of letters, digits and ._:-")
    return client_order_id


def _row_to_position(row: aiosqlite.Row) -> Position:
    return Position(
        id=int(row["id"]),
        user_id=int(row["user_id"]),
        symbol=row["symbol"],
        quantity=text_to_decimal(row["quantity"]),
        entry_price=text_to_decimal(row["entry_price"]),
        status=PositionStatus(row["status"]),
        opened_at=float(row["opened_at"]),
        closed_at=row["closed_at"],
        exit_price=optional_decimal(row["exit_price"]),
        exit_reason=row["exit_reason"],
        entry_client_order_id=row["entry_client_order_id"],
        exit_client_order_id=row["exit_client_order_id"],
        entry_cost=optional_decimal(row["entry_cost"]),
        sold_quantity=optional_decimal(row["sold_quantity"]) or Decimal(0),
        exit_proceeds=optional_decimal(row["exit_proceeds"]) or Decimal(0),
        residue_quantity=optional_decimal(row["residue_quantity"]),
        realized_pnl=optional_decimal(row["realized_pnl"]),
    )


async def _positions(
    connection: aiosqlite.Connection, where: str, parameters: tuple[object, ...]
) -> list[Position]:
    async with connection.execute(f"SELECT * FROM positions WHERE {where}", parameters) as cursor:
        rows = await cursor.fetchall()
    return [_row_to_position(row) for row in rows]


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
    _check_symbol(symbol)
    _check_positive("quantity", quantity)
    _check_positive("entry_price", entry_price)
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
    _check_positive("exit_price", exit_price)
    if not EXIT_REASON_PATTERN.match(exit_reason):
        raise InvalidValue("exit_reason", "must be a lower-case reason such as trailing_stop")
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
    _check_positive("sold", sold)
    async with transaction(connection):
        position = await get(connection, position_id)
        if position is None:
            raise RecordNotFound(f"position {position_id} does not exist")
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


# Orders


def _row_to_order(row: aiosqlite.Row) -> Order:
    return Order(
        client_order_id=row["client_order_id"],
        user_id=int(row["user_id"]),
        position_id=row["position_id"],
        symbol=row["symbol"],
        side=OrderSide(row["side"]),
        quantity=text_to_decimal(row["quantity"]),
        status=OrderStatus(row["status"]),
        exchange_order_id=row["exchange_order_id"],
        fill_price=optional_decimal(row["fill_price"]),
        fee=optional_decimal(row["fee"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        error=row["error"],
        fees=_fees_from_text(row["fees"]),
        expired=bool(row["expired"]),
        settled=bool(row["settled"]),
        exit_reason=row["exit_reason"],
    )


def _fees_from_text(raw: str | None) -> dict[str, Decimal]:
    if not raw:
        return {}
    return {str(asset): text_to_decimal(str(amount)) for asset, amount in json.loads(raw).items()}


def _fees_to_text(fees: dict[str, Decimal]) -> str:
    return json.dumps({asset: decimal_to_text(amount) for asset, amount in sorted(fees.items())})


async def get_order(connection: aiosqlite.Connection, client_order_id: str) -> Order | None:
    async with connection.execute(
        "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else _row_to_order(row)


async def record_pending_order(
    connection: aiosqlite.Connection,
    client_order_id: str,
    user_id: int,
    symbol: str,
    side: OrderSide,
    quantity: Decimal,
    *,
    position_id: int | None = None,
    exit_reason: str | None = None,
    now: float | None = None,
) -> Order:
    """Write the intent before sending: a duplicate client order id is refused. An exit
    order keeps its `exit_reason`, so a recovery settles it for what it was."""
    _check_client_order_id(client_order_id)
    _check_symbol(symbol)
    _check_positive("quantity", quantity)
    if exit_reason is not None and not EXIT_REASON_PATTERN.match(exit_reason):
        raise InvalidValue("exit_reason", "must be a lower-case reason such as trailing_stop")
    at = now_s() if now is None else now
    async with transaction(connection):
        await users.require(connection, user_id)
        if await get_order(connection, client_order_id) is not None:
            raise StateConflict(f"order {client_order_id} is already recorded")
        await connection.execute(
            "INSERT INTO orders (client_order_id, user_id, position_id, symbol, side, quantity, "
            "status, exit_reason, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                client_order_id,
                user_id,
                position_id,
                symbol,
                OrderSide(side).value,
                decimal_to_text(quantity),
                OrderStatus.PENDING.value,
                exit_reason,
                at,
                at,
            ),
        )
        return await _require_order(connection, client_order_id)


async def _require_order(connection: aiosqlite.Connection, client_order_id: str) -> Order:
    order = await get_order(connection, client_order_id)
    if order is None:
        raise RecordNotFound(f"order {client_order_id} is not recorded")
    return order


async def _transition(
    connection: aiosqlite.Connection,
    client_order_id: str,
    status: OrderStatus,
    now: float | None,
    **columns: object,
) -> Order:
    unknown = set(columns) - _ORDER_UPDATABLE_COLUMNS
    if unknown:
        raise StorageError(f"refusing to update order columns {sorted(unknown)}")
    at = now_s() if now is None else now
    async with transaction(connection):
        order = await _require_order(connection, client_order_id)
        if status not in ORDER_TRANSITIONS[order.status]:
            raise StateConflict(
                f"order {client_order_id} is {order.status.value}; it cannot become {status.value}"
            )
        assignments = "".join(f", {name} = ?" for name in columns)
        await connection.execute(
            f"UPDATE orders SET status = ?, updated_at = ?{assignments} WHERE client_order_id = ?",
            (status.value, at, *columns.values(), client_order_id),
        )
        return await _require_order(connection, client_order_id)


async def mark_order_sent(
    connection: aiosqlite.Connection,
    client_order_id: str,
    exchange_order_id: str | None = None,
    *,
    now: float | None = None,
) -> Order:
    return await _transition(
        connection, client_order_id, OrderStatus.SENT, now, exchange_order_id=exchange_order_id
    )


async def mark_order_filled(
    connection: aiosqlite.Connection,
    client_order_id: str,
    fill_price: Decimal,
    fee: Decimal,
    *,
    filled_quantity: Decimal | None = None,
    exchange_order_id: str | None = None,
    fees: dict[str, Decimal] | None = None,
    expired: bool = False,
    now: float | None = None,
) -> Order:
    """`filled_quantity` replaces the requested one when the exchange filled another amount.

    `fee` is the commission valued in the quote asset (BNB excluded); `fees` the
    commission per asset as paid; `expired` that the exchange ended it part-filled.
    """
    _check_positive("fill_price", fill_price)
    if not isinstance(fee, Decimal) or not fee.is_finite() or fee < 0:
        raise InvalidValue("fee", "must be a decimal of at least 0")
    columns: dict[str, object] = {
        "fill_price": decimal_to_text(fill_price),
        "fee": decimal_to_text(fee),
        "error": None,
    }
    if filled_quantity is not None:
        columns["quantity"] = decimal_to_text(_check_positive("filled_quantity", filled_quantity))
    if exchange_order_id is not None:
        columns["exchange_order_id"] = exchange_order_id
    if fees:
        columns["fees"] = _fees_to_text(fees)
    if expired:
        columns["expired"] = 1
    return await _transition(connection, client_order_id, OrderStatus.FILLED, now, **columns)


async def mark_order_settled(connection: aiosqlite.Connection, client_order_id: str) -> Order:
    """The filled order's effect on its position is written (in the caller's transaction)."""
    async with transaction(connection):
        await connection.execute(
            "UPDATE orders SET settled = 1 WHERE client_order_id = ? AND status = ?",
            (client_order_id, OrderStatus.FILLED.value),
        )
        return await _require_order(connection, client_order_id)


async def mark_order_rejected(
    connection: aiosqlite.Connection,
    client_order_id: str,
    error: str,
    *,
    now: float | None = None,
) -> Order:
    return await _transition(
        connection, client_order_id, OrderStatus.REJECTED, now, error=error[:MAX_ERROR_LENGTH]
    )


async def mark_order_unknown(
    connection: aiosqlite.Connection,
    client_order_id: str,
    error: str,
    *,
    now: float | None = None,
) -> Order:
    """The exchange's answer was lost (timeout, disconnect): resolve later by asking it."""
    return await _transition(
        connection, client_order_id, OrderStatus.UNKNOWN, now, error=error[:MAX_ERROR_LENGTH]
    )


async def link_order_to_position(
    connection: aiosqlite.Connection, client_order_id: str, position_id: int
) -> Order:
    async with transaction(connection):
        await _require_order(connection, client_order_id)
        await connection.execute(
            "UPDATE orders SET position_id = ? WHERE client_order_id = ?",
            (position_id, client_order_id),
        )
        return await _require_order(connection, client_order_id)


async def list_unsettled_orders(connection: aiosqlite.Connection) -> list[Order]:
    """Orders whose outcome is not known yet, oldest first: the start-up reconciliation list."""
    placeholders = ", ".join("?" for _ in UNSETTLED_ORDER_STATUSES)
    async with connection.execute(
        f"SELECT * FROM orders WHERE status IN ({placeholders}) ORDER BY created_at",
        tuple(status.value for status in UNSETTLED_ORDER_STATUSES),
    ) as cursor:
        rows = await cursor.fetchall()
    return [_row_to_order(row) for row in rows]


async def orders_of_position(connection: aiosqlite.Connection, position_id: int) -> list[Order]:
    async with connection.execute(
        "SELECT * FROM orders WHERE position_id = ? ORDER BY created_at", (position_id,)
    ) as cursor:
        rows = await cursor.fetchall()
    return [_row_to_order(row) for row in rows]


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


def _row_to_trailing_stop(row: aiosqlite.Row) -> TrailingStopRecord:
    return TrailingStopRecord(
        position_id=int(row["position_id"]),
        user_id=int(row["user_id"]),
        symbol=row["symbol"],
        entry_price=float(row["entry_price"]),
        peak_price=float(row["peak_price"]),
        stop_price=float(row["stop_price"]),
        activated=bool(row["activated"]),
        updated_at=float(row["updated_at"]),
    )


async def get_trailing_stop(
    connection: aiosqlite.Connection, position_id: int
) -> TrailingStopRecord | None:
    async with connection.execute(
        "SELECT * FROM trailing_stops WHERE position_id = ?", (position_id,)
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else _row_to_trailing_stop(row)


async def list_trailing_stops(connection: aiosqlite.Connection) -> list[TrailingStopRecord]:
    async with connection.execute("SELECT * FROM trailing_stops ORDER BY position_id") as cursor:
        rows = await cursor.fetchall()
    return [_row_to_trailing_stop(row) for row in rows]


async def delete_trailing_stop(connection: aiosqlite.Connection, position_id: int) -> bool:
    async with transaction(connection):
        cursor = await connection.execute(
            "DELETE FROM trailing_stops WHERE position_id = ?", (position_id,)
        )
        return cursor.rowcount > 0


# Paper balances


def _check_asset(asset: str) -> str:
    if not ASSET_PATTERN.match(asset):
        raise InvalidValue("asset", "must be an asset such as USDT or BTC")
    return asset


async def paper_balances(connection: aiosqlite.Connection, user_id: int) -> dict[str, Decimal]:
    async with connection.execute(
        "SELECT asset, free FROM paper_balances WHERE user_id = ? ORDER BY asset", (user_id,)
    ) as cursor:
        rows = await cursor.fetchall()
    return {row["asset"]: text_to_decimal(row["free"]) for row in rows}


async def paper_balance(connection: aiosqlite.Connection, user_id: int, asset: str) -> Decimal:
    async with connection.execute(
        "SELECT free FROM paper_balances WHERE user_id = ? AND asset = ?",
        (user_id, _check_asset(asset)),
    ) as cursor:
        row = await cursor.fetchone()
    return Decimal(0) if row is None else text_to_decimal(row["free"])


async def seed_paper_balance(
    connection: aiosqlite.Connection, user_id: int, asset: str, amount: Decimal
) -> bool:
    """Give a new paper trader their starting balance; False if they already have one."""
    _check_positive("amount", amount)
    async with transaction(connection):
        await users.require(connection, user_id)
        cursor = await connection.execute(
            "INSERT INTO paper_balances (user_id, asset, free) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id, asset) DO NOTHING",
            (user_id, _check_asset(asset), decimal_to_text(amount)),
        )
        return cursor.rowcount > 0


async def adjust_paper_balances(
    connection: aiosqlite.Connection, user_id: int, deltas: dict[str, Decimal]
) -> dict[str, Decimal]:
    """Apply several balance changes at once (a fill moves two assets); none may go negative."""
    for asset, delta in deltas.items():
        _check_asset(asset)
        if not isinstance(delta, Decimal) or not delta.is_finite():
            raise InvalidValue("delta", "must be a finite decimal")
    async with transaction(connection):
        updated: dict[str, Decimal] = {}
        for asset, delta in deltas.items():
            balance = await paper_balance(connection, user_id, asset) + delta
            if balance < 0:
                raise InsufficientBalance(
                    f"not enough {asset}: {decimal_to_text(-delta)} needed, "
                    f"{decimal_to_text(balance - delta)} available"
                )
            await connection.execute(
                "INSERT INTO paper_balances (user_id, asset, free) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, asset) DO UPDATE SET free = excluded.free",
                (user_id, asset, decimal_to_text(balance)),
            )
            updated[asset] = balance
        return updated
