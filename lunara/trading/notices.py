"""What a trader is told when a stop sells, written with the exit itself.

A stop's exit notice is an outbox row (`lunara.storage.outbox`) queued in the very
transaction that records the exit (the fill settled on its position, or the position
closed as dust): a SIGKILL leaves either the exit recorded and its notice queued, or
neither, never one without the other. The row's dedupe key names the exit order (or
the dust close), so settling the same fill again (a resumed exit, the start-up
recovery) never queues a second notice. The outbox's sender delivers it.

Exits a trader asked for (/sell) or an admin made are told in the command's answer,
so only a stop's exits get a notice here.
"""

from __future__ import annotations

import html
from decimal import Decimal

from lunara.storage.outbox import Outgoing, Priority
from lunara.storage.positions import Position
from lunara.trading.model import ExitReason

STOP_REASONS = frozenset({ExitReason.STOP_LOSS.value, ExitReason.TRAILING_STOP.value})
"""The exits a trader did not ask for at that moment, and so is told of."""
NOTICE_KEY = "exit-notice"


def told_of(reason: str | None) -> bool:
    """Whether an exit for `reason` gets a notice of its own."""
    return reason in STOP_REASONS


def exit_message(position: Position, sold: Decimal, price: Decimal, reason: str) -> str:
    """The trader's notice of a stop's exit: what was sold, at what, against the entry."""
    entry = position.entry_price
    change = (price - entry) / entry * 100 if entry > 0 else Decimal(0)
    label = "Trailing stop" if reason == ExitReason.TRAILING_STOP.value else "Stop loss"
    return (
        f"{label} hit: sold {sold.normalize()} {position.symbol} "
        f"at {price:.8g} ({change:+.2f}% from entry {entry:.8g})."
    )


def exit_notice(
    position: Position, sold: Decimal, price: Decimal, reason: str, client_order_id: str
) -> Outgoing:
    """The outbox row of a stop's exit by order `client_order_id`."""
    return Outgoing(
        position.user_id,
        html.escape(exit_message(position, sold, price, reason), quote=False),
        priority=Priority.NOTICE,
        dedupe_key=f"{NOTICE_KEY}:{client_order_id}",
    )


def dust_notice(position: Position, why: str) -> Outgoing:
    """The outbox row telling a trader their stop's exit found only dust (`why`)."""
    return Outgoing(
        position.user_id,
        html.escape(f"Your stop asked to sell, but {why}.", quote=False),
        priority=Priority.NOTICE,
        dedupe_key=f"{NOTICE_KEY}:dust:{position.id}",
    )
