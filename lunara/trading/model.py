"""The trading vocabulary: order sides, order and position states, exit reasons.

One set of names for every layer: the exchanges speak them, the order path decides
with them and the storage keeps their values as the tables hold them. Nothing of
ours is imported here, so any layer may import it.
"""

from __future__ import annotations

from enum import StrEnum


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

UNSETTLED_ORDER_STATUSES = (OrderStatus.PENDING, OrderStatus.SENT, OrderStatus.UNKNOWN)
