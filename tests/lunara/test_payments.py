from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from lunara import accounts, payments
from lunara.plans import PLAN_PERIOD_S, PLANS, PlanName
from lunara.storage import payments as stored_payments
from lunara.storage import users
from lunara.storage.database import open_database

PAYER = 424242
PRO = PLANS[PlanName.PRO]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(connection, PAYER, "payer")
        yield connection
    finally:
        await connection.close()


async def test_a_matching_invoice_passes_pre_checkout(db: aiosqlite.Connection) -> None:
    payload = payments.invoice_payload(PRO, PAYER)
    decision = await accounts.check_pre_checkout(
        db, PAYER, payload, payments.STARS, PRO.price_stars
    )
    assert decision.ok
    assert decision.plan is PRO
    assert decision.error is None


@pytest.mark.parametrize(
    ("payload", "currency", "amount", "reason"),
    [
        ("something:else", payments.STARS, PRO.price_stars, "not one of ours"),
        ("plan:platinum:424242", payments.STARS, PRO.price_stars, "no longer exists"),
        ("plan:free:424242", payments.STARS, 0, "no longer exists"),
        ("plan:pro:1", payments.STARS, PRO.price_stars, "someone else"),
        ("plan:pro:424242", payments.STARS, PRO.price_stars - 1, "price changed"),
        ("plan:pro:424242", "USD", PRO.price_stars, "price changed"),
    ],
)
async def test_pre_checkout_refuses_invoices_that_do_not_match_the_plan_book(
    db: aiosqlite.Connection, payload: str, currency: str, amount: int, reason: str
) -> None:
    decision = await accounts.check_pre_checkout(db, PAYER, payload, currency, amount)
    assert not decision.ok
    assert decision.error is not None
    assert reason in decision.error


async def test_pre_checkout_refuses_inactive_or_unknown_payers(db: aiosqlite.Connection) -> None:
    await users.set_active(db, PAYER, False)
    payload = payments.invoice_payload(PRO, PAYER)
    inactive = await accounts.check_pre_checkout(
        db, PAYER, payload, payments.STARS, PRO.price_stars
    )
    stranger = await accounts.check_pre_checkout(
        db, 777, payments.invoice_payload(PRO, 777), payments.STARS, PRO.price_stars
    )
    assert not inactive.ok
    assert not stranger.ok


async def test_a_successful_payment_upgrades_the_plan_once_per_charge(
    db: aiosqlite.Connection,
) -> None:
    payload = payments.invoice_payload(PRO, PAYER)
    first = await accounts.record_payment(
        db, PAYER, payload, "charge_1", PRO.price_stars, currency=payments.STARS
    )
    again = await accounts.record_payment(
        db, PAYER, payload, "charge_1", PRO.price_stars, currency=payments.STARS
    )
    assert first.changed
    assert not again.changed
    assert first.user.plan == PlanName.PRO.value
    assert first.user.plan_expires_at is not None
    assert first.user.plan_expires_at - first.payment.paid_at == pytest.approx(PLAN_PERIOD_S)
    stored = await stored_payments.get(db, "charge_1")
    assert stored is not None
    assert stored.status is stored_payments.PaymentStatus.PAID


@pytest.mark.parametrize(
    ("payload", "currency", "amount", "reason"),
    [
        ("garbage", payments.STARS, 10, "not one of ours"),
        ("plan:platinum:424242", payments.STARS, PRO.price_stars, "no longer exists"),
        ("plan:pro:1", payments.STARS, PRO.price_stars, "someone else"),
        ("plan:pro:424242", payments.STARS, 1, "price changed"),
        ("plan:pro:424242", payments.STARS, PRO.price_stars + 1, "price changed"),
        ("plan:pro:424242", "USD", PRO.price_stars, "price changed"),
    ],
    ids=["no-plan", "unknown-plan", "other-payer", "amount-1", "amount-more", "currency"],
)
async def test_a_payment_that_does_not_pay_for_its_plan_is_not_recorded(
    db: aiosqlite.Connection, payload: str, currency: str, amount: int, reason: str
) -> None:
    with pytest.raises(accounts.PaymentMismatch, match=reason):
        await accounts.record_payment(db, PAYER, payload, "charge_2", amount, currency=currency)
    assert await stored_payments.get(db, "charge_2") is None
    user = await users.require(db, PAYER)
    assert user.plan == PlanName.FREE.value
    assert user.plan_expires_at is None
