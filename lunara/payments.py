"""Plans paid with Telegram Stars: invoice, pre-checkout validation, recording, refunds.

The invoice payload names the plan and the payer (`plan:<name>:<user id>`); the
pre-checkout answer checks it against the plan book (plan exists, price and currency
match, payer is the user and is active) before Telegram takes the Stars. The same
checks run again when the payment is recorded: the plan is granted for what was paid,
not for what the pre-checkout answer once allowed (a price changed in between, a
pre-checkout answered by another deployment, a forged update).

A refund is one Telegram call per charge however many admins (or retries) ask at
once: the calls for one charge queue, and the next finds it refunded.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from lunara import plans as plan_book
from lunara.storage import payments, users
from lunara.storage.database import RecordNotFound

STARS = "XTR"


class AlreadyRefunded(Exception):
    """Telegram refused a refund because the charge was refunded already (through
    Telegram's own support, say): raised by the `refund` the Telegram layer provides."""


class Refund(StrEnum):
    """What `/refund` did."""

    REFUNDED = "refunded"  # the Stars went back and the plan period was taken back
    ALREADY = "already"  # recorded as refunded before: nothing was done
    ALREADY_ON_TELEGRAM = "already_on_telegram"  # Telegram had refunded it; now recorded


def invoice_payload(plan: plan_book.Plan, user_id: int) -> str:
    return f"plan:{plan.name.value}:{user_id}"


@dataclass(frozen=True)
class CheckoutDecision:
    ok: bool
    error: str | None = None
    plan: plan_book.Plan | None = None


class PaymentMismatch(ValueError):
    """A completed payment that does not pay for the plan it names: not recorded."""


def _plan_paid_for(
    user_id: int, payload: str, currency: str, total_amount: int
) -> plan_book.Plan | str:
    """The plan `payload` buys if this payer, currency and amount pay for it; else why not."""
    parts = payload.split(":")
    if len(parts) != 3 or parts[0] != "plan":
        return "This invoice is not one of ours."
    plan = plan_book.plan_named(parts[1])
    if plan is None or plan.price_stars == 0:
        return "That plan no longer exists; see /plans."
    if parts[2] != str(user_id):
        return "This invoice was made for someone else."
    if currency != STARS or total_amount != plan.price_stars:
        return "The price changed; ask for a new invoice with /subscribe."
    return plan


async def check_pre_checkout(
    db: aiosqlite.Connection, user_id: int, payload: str, currency: str, total_amount: int
) -> CheckoutDecision:
    plan = _plan_paid_for(user_id, payload, currency, total_amount)
    if isinstance(plan, str):
        return CheckoutDecision(False, plan)
    user = await users.get(db, user_id)
    if user is None or not user.active:
        return CheckoutDecision(False, "Send /start first, then subscribe again.")
    return CheckoutDecision(True, plan=plan)


async def record_payment(
    db: aiosqlite.Connection,
    user_id: int,
    payload: str,
    charge_id: str,
    total_amount: int,
    *,
    currency: str,
) -> payments.PaymentOutcome:
    """Record a completed payment and grant its plan, once the payload, payer, amount and
    currency are checked against the plan book again; PaymentMismatch otherwise."""
    plan = _plan_paid_for(user_id, payload, currency, total_amount)
    if isinstance(plan, str):
        raise PaymentMismatch(
            f"payment {charge_id} of {total_amount} {currency[:8]!r} by user {user_id} does "
            f"not pay for its invoice ({plan}); not recorded, refund it with /refund"
        )
    return await payments.record(
        db,
        charge_id,
        user_id,
        plan.name.value,
        total_amount,
        plan_book.PLAN_PERIOD_S,
        currency=currency,
    )


# One lock per charge being refunded, dropped as soon as no refund of it is under way.
_refunding: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def refund_payment(
    db: aiosqlite.Connection,
    refund: Callable[[int, str], Awaitable[None]],
    charge_id: str,
) -> tuple[Refund, payments.Payment]:
    """Give the Stars back through Telegram first, then take the plan period back. A
    charge refunded already is not refunded again: recorded so, it is left alone;
    refunded on Telegram's side only, it is recorded now.

    `refund(user id, charge id)` is the Telegram call, handed in by the Telegram layer
    (raising AlreadyRefunded when Telegram had refunded the charge), so payments never
    imports that layer.

    Refunds of one charge run one at a time: the second finds the first's record and
    does not ask Telegram again (five admins sending /refund at once make one call).
    """
    lock = _refunding.get(charge_id)
    if lock is None:
        lock = _refunding[charge_id] = asyncio.Lock()
    async with lock:
        payment = await payments.get(db, charge_id)
        if payment is None:
            raise RecordNotFound(f"payment {charge_id} is not recorded")
        if payment.status is payments.PaymentStatus.REFUNDED:
            return Refund.ALREADY, payment
        result = Refund.REFUNDED
        try:
            await refund(payment.user_id, charge_id)
        except AlreadyRefunded:
            result = Refund.ALREADY_ON_TELEGRAM
        outcome = await payments.refund(db, charge_id)
        return result, outcome.payment
