"""Plan payments (Telegram Stars) and the subscription period each one buys.

A payment and the plan change it causes are written in one transaction, keyed by
Telegram's charge id, so a payment delivered twice extends the plan once. A refund
takes back exactly the period that payment added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from lunara.storage import users
from lunara.storage.database import (
    InvalidValue,
    RecordNotFound,
    StateConflict,
    now_s,
    transaction,
)
from lunara.storage.rows import RowCodec, required
from lunara.storage.users import FREE_PLAN, User

TELEGRAM_STARS = "XTR"
CHARGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
MAX_PERIOD_S = 400 * 24 * 3600


class PaymentStatus(StrEnum):
    PAID = "paid"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Payment:
    charge_id: str
    user_id: int
    plan: str
    amount_stars: int
    currency: str
    period_s: int
    status: PaymentStatus
    paid_at: float
    refunded_at: float | None


@dataclass(frozen=True)
class PaymentOutcome:
    """The payment, the user's plan after it, and whether this call changed anything."""

    payment: Payment
    user: User
    changed: bool


_PAYMENTS = RowCodec(Payment)


async def get(connection: aiosqlite.Connection, charge_id: str) -> Payment | None:
    return await _PAYMENTS.one(
        connection, "SELECT * FROM payments WHERE charge_id = ?", (charge_id,)
    )


async def list_by_user(
    connection: aiosqlite.Connection, user_id: int, *, limit: int = 50
) -> list[Payment]:
    """A trader's payments, newest first."""
    return await _PAYMENTS.all(
        connection,
        "SELECT * FROM payments WHERE user_id = ? ORDER BY paid_at DESC LIMIT ?",
        (user_id, limit),
    )


async def record(
    connection: aiosqlite.Connection,
    charge_id: str,
    user_id: int,
    plan: str,
    amount_stars: int,
    period_s: int,
    *,
    currency: str = TELEGRAM_STARS,
    now: float | None = None,
) -> PaymentOutcome:
    """Record a successful payment and extend (or start) the user's plan by `period_s`.

    Paying again for the plan in force extends it from its current expiry; paying for a
    different plan starts that plan now.
    """
    if not CHARGE_ID_PATTERN.match(charge_id):
        raise InvalidValue("charge_id", "is not a Telegram payment charge id")
    users.check_plan(plan)
    if plan == FREE_PLAN:
        raise InvalidValue("plan", "the free plan is not sold")
    if isinstance(amount_stars, bool) or not isinstance(amount_stars, int) or amount_stars <= 0:
        raise InvalidValue("amount_stars", "must be a positive whole number of Stars")
    if isinstance(period_s, bool) or not isinstance(period_s, int):
        raise InvalidValue("period_s", "must be a whole number of seconds")
    if not 0 < period_s <= MAX_PERIOD_S:
        raise InvalidValue("period_s", "must be a positive number of seconds, at most 400 days")
    if not CURRENCY_PATTERN.match(currency):
        raise InvalidValue("currency", "must be a three-letter currency code such as XTR")
    at = now_s() if now is None else now
    async with transaction(connection):
        user = await users.require(connection, user_id)
        existing = await get(connection, charge_id)
        if existing is not None:
            same = (existing.user_id, existing.plan, existing.amount_stars, existing.currency) == (
                user_id,
                plan,
                amount_stars,
                currency,
            )
            if not same:
                raise StateConflict(f"charge {charge_id} is already recorded with other details")
            return PaymentOutcome(existing, user, changed=False)
        await connection.execute(
            "INSERT INTO payments (charge_id, user_id, plan, amount_stars, currency, period_s, "
            "status, paid_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (charge_id, user_id, plan, amount_stars, currency, period_s, PaymentStatus.PAID, at),
        )
        still_running = (
            user.plan == plan and user.plan_expires_at is not None and user.plan_expires_at > at
        )
        start = user.plan_expires_at if still_running and user.plan_expires_at else at
        updated = await users.set_plan(connection, user_id, plan, start + period_s)
        payment = await get(connection, charge_id)
    if payment is None:
        raise RecordNotFound(f"payment {charge_id} vanished while being recorded")
    return PaymentOutcome(payment, updated, changed=True)


async def refund(
    connection: aiosqlite.Connection, charge_id: str, *, now: float | None = None
) -> PaymentOutcome:
    """Mark a payment refunded and take back the period it bought; a second call changes nothing."""
    at = now_s() if now is None else now
    async with transaction(connection):
        payment = required(await get(connection, charge_id), f"payment {charge_id} is not recorded")
        user = await users.require(connection, payment.user_id)
        if payment.status is PaymentStatus.REFUNDED:
            return PaymentOutcome(payment, user, changed=False)
        await connection.execute(
            "UPDATE payments SET status = ?, refunded_at = ? WHERE charge_id = ?",
            (PaymentStatus.REFUNDED, at, charge_id),
        )
        if user.plan == payment.plan and user.plan_expires_at is not None:
            expires = user.plan_expires_at - payment.period_s
            if expires <= at:
                user = await users.set_plan(connection, user.telegram_id, FREE_PLAN, None)
            else:
                user = await users.set_plan(connection, user.telegram_id, user.plan, expires)
        refunded = await get(connection, charge_id)
    if refunded is None:
        raise RecordNotFound(f"payment {charge_id} vanished while being refunded")
    return PaymentOutcome(refunded, user, changed=True)
