from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lunara import accounts, payments
from lunara.plans import PLAN_PERIOD_S, PLANS, Plan, PlanName
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


# --- what a payment buys: the pure check of payload, payer, currency and amount ---------

NOT_OURS = "This invoice is not one of ours."
NO_SUCH_PLAN = "That plan no longer exists; see /plans."
SOMEONE_ELSE = "This invoice was made for someone else."
PRICE_CHANGED = "The price changed; ask for a new invoice with /subscribe."

paid_plans = st.sampled_from([plan for plan in PLANS.values() if plan.price_stars > 0])
user_ids = st.integers(1, 10**12)
segment = st.text(st.characters(blacklist_characters=":"), max_size=10)


@given(plan=paid_plans, payer=user_ids)
def test_an_invoice_paid_in_full_by_its_payer_buys_its_plan(plan: Plan, payer: int) -> None:
    payload = payments.invoice_payload(plan, payer)
    assert payload == f"plan:{plan.name.value}:{payer}"
    assert payments.plan_paid_for(payer, payload, payments.STARS, plan.price_stars) is plan


@given(plan=paid_plans, payer=user_ids, kind=segment)
def test_a_payload_of_another_kind_buys_nothing(plan: Plan, payer: int, kind: str) -> None:
    assume(kind != "plan")
    payload = f"{kind}:{plan.name.value}:{payer}"
    assert payments.plan_paid_for(payer, payload, payments.STARS, plan.price_stars) == NOT_OURS


@given(plan=paid_plans, payer=user_ids, extra=st.lists(segment, min_size=1, max_size=3))
def test_a_payload_with_more_or_fewer_parts_buys_nothing(
    plan: Plan, payer: int, extra: list[str]
) -> None:
    longer = ":".join([payments.invoice_payload(plan, payer), *extra])
    shorter = f"plan:{payer}"
    for payload in (longer, shorter, "plan", ""):
        assert payments.plan_paid_for(payer, payload, payments.STARS, plan.price_stars) == NOT_OURS


@given(name=segment, payer=user_ids, amount=st.integers(0, 10_000))
def test_a_plan_the_book_does_not_sell_buys_nothing(name: str, payer: int, amount: int) -> None:
    assume(name.strip().lower() not in {"pro", "elite"})
    payload = f"plan:{name}:{payer}"
    assert payments.plan_paid_for(payer, payload, payments.STARS, amount) == NO_SUCH_PLAN


@given(plan=paid_plans, payer=user_ids, other=user_ids)
def test_an_invoice_made_for_someone_else_buys_nothing(plan: Plan, payer: int, other: int) -> None:
    assume(other != payer)
    payload = payments.invoice_payload(plan, other)
    assert payments.plan_paid_for(payer, payload, payments.STARS, plan.price_stars) == SOMEONE_ELSE


@given(plan=paid_plans, payer=user_ids, amount=st.integers(-10, 10_000), currency=st.text())
def test_only_the_plans_price_in_stars_buys_it(
    plan: Plan, payer: int, amount: int, currency: str
) -> None:
    payload = payments.invoice_payload(plan, payer)
    result = payments.plan_paid_for(payer, payload, currency, amount)
    if currency == payments.STARS and amount == plan.price_stars:
        assert result is plan
    else:
        assert result == PRICE_CHANGED


async def test_pre_checkout_tells_an_inactive_or_unknown_payer_to_start_first(
    db: aiosqlite.Connection,
) -> None:
    await users.set_active(db, PAYER, False)
    for payer in (PAYER, 777):
        payload = payments.invoice_payload(PRO, payer)
        decision = await accounts.check_pre_checkout(
            db, payer, payload, payments.STARS, PRO.price_stars
        )
        assert decision == accounts.CheckoutDecision(
            False, "Send /start first, then subscribe again."
        )


async def test_a_mismatched_payment_is_reported_with_its_currency_cut_short(
    db: aiosqlite.Connection,
) -> None:
    payload = payments.invoice_payload(PRO, PAYER)
    with pytest.raises(accounts.PaymentMismatch) as caught:
        await accounts.record_payment(
            db, PAYER, payload, "charge_3", PRO.price_stars, currency="XTRXTRXTRXTR"
        )
    assert str(caught.value) == (
        f"payment charge_3 of {PRO.price_stars} 'XTRXTRXT' by user {PAYER} does not pay for "
        f"its invoice ({PRICE_CHANGED}); not recorded, refund it with /refund"
    )
