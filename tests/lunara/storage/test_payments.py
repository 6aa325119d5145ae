from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import payments, users
from lunara.storage.database import InvalidValue, RecordNotFound, StateConflict, open_database
from lunara.storage.payments import PaymentStatus

DAY = 86_400
MONTH = 30 * DAY


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 5, "payer")
    yield connection
    await connection.close()


async def test_a_payment_starts_the_plan_for_its_period(db: aiosqlite.Connection) -> None:
    outcome = await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    assert outcome.changed
    assert outcome.payment.status is PaymentStatus.PAID
    assert (outcome.payment.amount_stars, outcome.payment.currency) == (250, "XTR")
    assert (outcome.user.plan, outcome.user.plan_expires_at) == ("pro", 1000.0 + MONTH)
    assert await payments.get(db, "ch-1") == outcome.payment


async def test_paying_again_extends_from_the_current_expiry(db: aiosqlite.Connection) -> None:
    await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    second = await payments.record(db, "ch-2", 5, "pro", 250, MONTH, now=2000.0)
    assert second.user.plan_expires_at == 1000.0 + 2 * MONTH
    lapsed = await payments.record(db, "ch-3", 5, "pro", 250, MONTH, now=1000.0 + 3 * MONTH)
    assert lapsed.user.plan_expires_at == 1000.0 + 4 * MONTH
    listed = await payments.list_by_user(db, 5)
    assert [p.charge_id for p in listed] == ["ch-3", "ch-2", "ch-1"]


async def test_a_different_plan_starts_now(db: aiosqlite.Connection) -> None:
    await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    switched = await payments.record(db, "ch-2", 5, "team", 900, MONTH, now=2000.0)
    assert (switched.user.plan, switched.user.plan_expires_at) == ("team", 2000.0 + MONTH)


async def test_a_payment_delivered_twice_counts_once(db: aiosqlite.Connection) -> None:
    first = await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    again = await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1500.0)
    assert not again.changed
    assert again.payment == first.payment
    assert again.user.plan_expires_at == 1000.0 + MONTH
    with pytest.raises(StateConflict, match="other details"):
        await payments.record(db, "ch-1", 5, "pro", 1, MONTH)


async def test_a_refund_takes_back_the_period_it_bought(db: aiosqlite.Connection) -> None:
    await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    await payments.record(db, "ch-2", 5, "pro", 250, MONTH, now=1000.0)
    refunded = await payments.refund(db, "ch-2", now=2000.0)
    assert refunded.changed
    assert refunded.payment.status is PaymentStatus.REFUNDED
    assert refunded.payment.refunded_at == 2000.0
    assert (refunded.user.plan, refunded.user.plan_expires_at) == ("pro", 1000.0 + MONTH)
    last = await payments.refund(db, "ch-1", now=3000.0)
    assert (last.user.plan, last.user.plan_expires_at) == ("free", None)


async def test_refunding_twice_changes_nothing(db: aiosqlite.Connection) -> None:
    await payments.record(db, "ch-1", 5, "pro", 250, MONTH, now=1000.0)
    await payments.record(db, "ch-2", 5, "pro", 250, MONTH, now=1000.0)
    await payments.refund(db, "ch-1", now=2000.0)
    again = await payments.refund(db, "ch-1", now=2500.0)
    assert not again.changed
    assert again.payment.refunded_at == 2000.0
    assert again.user.plan_expires_at == 1000.0 + MONTH
    with pytest.raises(RecordNotFound):
        await payments.refund(db, "ch-404")


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("bad charge!", 5, "pro", 250, MONTH), "charge_id"),
        (("ch", 5, "free", 250, MONTH), "plan"),
        (("ch", 5, "Pro", 250, MONTH), "plan"),
        (("ch", 5, "pro", 0, MONTH), "amount_stars"),
        (("ch", 5, "pro", 250, 0), "period_s"),
        (("ch", 5, "pro", 250, 10_000 * DAY), "period_s"),
    ],
)
async def test_implausible_payments_are_refused(
    db: aiosqlite.Connection, arguments: tuple[str, int, str, int, int], field: str
) -> None:
    with pytest.raises(InvalidValue, match=field):
        await payments.record(db, *arguments)
    assert await payments.list_by_user(db, 5) == []
    user = await users.get(db, 5)
    assert user is not None
    assert user.plan == "free"


async def test_payments_need_a_registered_user(db: aiosqlite.Connection) -> None:
    with pytest.raises(RecordNotFound):
        await payments.record(db, "ch-1", 6, "pro", 250, MONTH)
