"""The orders that open and close positions.

Every order is recorded as `pending` under its client order id *before* it is sent,
so after a crash the engine can ask the exchange about each unsettled order instead
of guessing. Quantities and prices are Decimals stored as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal

import aiosqlite

from lunara.storage import users
from lunara.storage.checks import check_exit_reason, check_positive, check_symbol
from lunara.storage.database import (
    InvalidValue,
    StateConflict,
    StorageError,
    decimal_to_text,
    now_s,
    text_to_decimal,
    transaction,
)
from lunara.storage.rows import RowCodec, required
from lunara.trading.model import (
    ORDER_TRANSITIONS,
    UNSETTLED_ORDER_STATUSES,
    OrderSide,
    OrderStatus,
)

CLIENT_ORDER_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,36}$")
MAX_ERROR_LENGTH = 500

# Columns an order transition may set; anything else in the dynamic UPDATE is refused.
_ORDER_UPDATABLE_COLUMNS = frozenset(
    {"exchange_order_id", "fill_price", "fee", "error", "quantity", "fees", "expired"}
)


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


def _check_client_order_id(client_order_id: str) -> str:
    if not CLIENT_ORDER_ID_PATTERN.match(client_order_id):
        raise InvalidValue("client_order_id", "must be 1-36 characters of letters, digits and ._:-")
    return client_order_id


def _fees_from_text(raw: str) -> dict[str, Decimal]:
    if not raw:
        return {}
    return {str(asset): text_to_decimal(str(amount)) for asset, amount in json.loads(raw).items()}


def _fees_to_text(fees: dict[str, Decimal]) -> str:
    return json.dumps({asset: decimal_to_text(amount) for asset, amount in sorted(fees.items())})


_ORDERS = RowCodec(Order, fees=_fees_from_text)


async def get_order(connection: aiosqlite.Connection, client_order_id: str) -> Order | None:
    return await _ORDERS.one(
        connection, "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
    )


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
    check_symbol(symbol)
    check_positive("quantity", quantity)
    if exit_reason is not None:
        check_exit_reason(exit_reason)
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
    return required(
        await get_order(connection, client_order_id), f"order {client_order_id} is not recorded"
    )


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
    check_positive("fill_price", fill_price)
    if not isinstance(fee, Decimal) or not fee.is_finite() or fee < 0:
        raise InvalidValue("fee", "must be a decimal of at least 0")
    columns: dict[str, object] = {
        "fill_price": decimal_to_text(fill_price),
        "fee": decimal_to_text(fee),
        "error": None,
    }
    if filled_quantity is not None:
        columns["quantity"] = decimal_to_text(check_positive("filled_quantity", filled_quantity))
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
    connection: aiosqlite.Connection, client_order_id: str, error: str, *, now: float | None = None
) -> Order:
    """The exchange refused the order, or it was never placed: it will not fill."""
    return await _mark_with_error(connection, client_order_id, OrderStatus.REJECTED, error, now)


async def mark_order_unknown(
    connection: aiosqlite.Connection, client_order_id: str, error: str, *, now: float | None = None
) -> Order:
    """The exchange's answer was lost (timeout, disconnect): resolve later by asking it."""
    return await _mark_with_error(connection, client_order_id, OrderStatus.UNKNOWN, error, now)


async def _mark_with_error(
    connection: aiosqlite.Connection,
    client_order_id: str,
    status: OrderStatus,
    error: str,
    now: float | None,
) -> Order:
    """A transition that records why (the error kept to `MAX_ERROR_LENGTH` characters)."""
    return await _transition(
        connection, client_order_id, status, now, error=error[:MAX_ERROR_LENGTH]
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
    return await _ORDERS.all(
        connection,
        f"SELECT * FROM orders WHERE status IN ({placeholders}) ORDER BY created_at",
        tuple(status.value for status in UNSETTLED_ORDER_STATUSES),
    )


async def orders_of_position(connection: aiosqlite.Connection, position_id: int) -> list[Order]:
    return await _ORDERS.all(
        connection, "SELECT * FROM orders WHERE position_id = ? ORDER BY created_at", (position_id,)
    )
