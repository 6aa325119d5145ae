"""Plans paid with Telegram Stars: invoice, pre-checkout validation, recording, refunds.

The invoice payload names the plan and the payer (`plan:<name>:<user id>`); the
pre-checkout answer checks it against the plan book (plan exists, price and currency
match, payer is the user and is active) before Telegram takes the Stars.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import aiosqlite

from lunara import plans as plan_book
from lunara.storage import payments, users
from lunara.storage.database import RecordNotFound

if TYPE_CHECKING:
    from lunara.telegram.commands import Deps

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


async def check_pre_checkout(
    db: aiosqlite.Connection, user_id: int, payload: str, currency: str, total_amount: int
) -> CheckoutDecision:
    parts = payload.split(":")
    if len(parts) != 3 or parts[0] != "plan":
        return CheckoutDecision(False, "This invoice is not one of ours.")
    plan = plan_book.plan_named(parts[1])
    if plan is None or plan.price_stars == 0:
        return CheckoutDecision(False, "That plan no longer exists; see /plans.")
    if parts[2] != str(user_id):
        return CheckoutDecision(False, "This invoice was made for someone else.")
    if currency != STARS or total_amount != plan.price_stars:
        return CheckoutDecision(False, "The price changed; ask for a new invoice with /subscribe.")
    user = await users.get(db, user_id)
    if user is None or not user.active:
        return CheckoutDecision(False, "Send /start first, then subscribe again.")
    return CheckoutDecision(True, plan=plan)


async def record_payment(
    db: aiosqlite.Connection, user_id: int, payload: str, charge_id: str, total_amount: int
) -> payments.PaymentOutcome:
    plan = plan_book.plan_named(payload.split(":")[1]) if payload.count(":") == 2 else None
    if plan is None:
        raise ValueError(f"payment {charge_id} names no plan")
    return await payments.record(
        db, charge_id, user_id, plan.name.value, total_amount, plan_book.PLAN_PERIOD_S
    )


async def refund_payment(deps: Deps, charge_id: str) -> tuple[Refund, payments.Payment]:
    """Give the Stars back through Telegram first, then take the plan period back. A
    charge refunded already is not refunded again: recorded so, it is left alone;
    refunded on Telegram's side only, it is recorded now."""
    payment = await payments.get(deps.db, charge_id)
    if payment is None:
        raise RecordNotFound(f"payment {charge_id} is not recorded")
    if payment.status is payments.PaymentStatus.REFUNDED:
        return Refund.ALREADY, payment
    result = Refund.REFUNDED
    try:
        await deps.refund(payment.user_id, charge_id)
    except AlreadyRefunded:
        result = Refund.ALREADY_ON_TELEGRAM
    outcome = await payments.refund(deps.db, charge_id)
    return result, outcome.payment
