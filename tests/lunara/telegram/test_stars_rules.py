"""What Telegram requires of a bot selling for Stars, end to end: /paysupport and /terms
answer, and a refund is never made twice. The real python-telegram-bot against the fake
Bot API (which refuses a second refund of a charge as Telegram does), real SQLite."""

from __future__ import annotations

from pathlib import Path

from lunara import payments as checkout
from lunara import plans as plan_book
from lunara.storage import payments, users
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, STRANGER, TRADER, UNPACED, RunningBot, running_bot
from tests.waiting import until

PRO = plan_book.PLANS[plan_book.PlanName.PRO]


async def paid_pro(bot: RunningBot, charge_id: str) -> None:
    """TRADER pays for the Pro plan with `charge_id`."""
    await bot.ask(TRADER, "/start")
    payload = checkout.invoice_payload(PRO, TRADER)
    bot.fake.push_successful_payment(TRADER, payload, charge_id, PRO.price_stars)
    await until(lambda: any("plan is active" in m for m in bot.fake.messages_to(TRADER)),
                    what="the payment recorded")  # fmt: skip


async def test_paysupport_and_terms_answer_anyone_with_the_configured_text_or_a_default(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    support = "Write to @lunara_help about payments & refunds."
    async with running_bot(friendly_telegram, bot_home, send_limits=UNPACED,
                           LUNARA_PAYSUPPORT_TEXT=support) as bot:  # fmt: skip
        assert (
            await bot.ask(STRANGER, "/paysupport")
            == "Write to @lunara_help about payments &amp; refunds."
        )
        terms = await bot.ask(STRANGER, "/terms")
        assert "Telegram Stars" in terms
        assert "30 days" in terms
        assert "/paysupport" in terms
        assert "Write to @lunara_help" in await bot.ask(TRADER, "/paysupport", chat_type="group")


async def test_refunding_a_charge_twice_refunds_it_once_and_says_it_was_already_refunded(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(friendly_telegram, bot_home, send_limits=UNPACED) as bot:
        await paid_pro(bot, "charge-7")
        first = await bot.ask(ADMIN, "/refund charge-7")
        assert first.startswith("Refunded <code>charge-7</code>: 250 Stars to user 2002")
        again = await bot.ask(ADMIN, "/refund charge-7")
        assert "was already refunded on" in again
        assert "nothing was done" in again
        user = await users.get(bot.bot.db, TRADER)
        assert user is not None
        assert user.plan == "free"
    assert len(friendly_telegram.refunds) == 1  # Telegram was asked once


async def test_a_charge_telegram_already_refunded_is_recorded_refunded_with_a_clear_reply(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Refunded through Telegram's support, not the bot: Telegram refuses to refund it
    again (CHARGE_ALREADY_REFUNDED); the bot records it refunded and says so."""
    async with running_bot(friendly_telegram, bot_home, send_limits=UNPACED) as bot:
        await paid_pro(bot, "charge-8")
        friendly_telegram.refunded_charges.add("charge-8")
        reply = await bot.ask(ADMIN, "/refund charge-8")
        assert "Telegram says payment <code>charge-8</code> was already refunded" in reply
        assert "Sorry" not in reply
        payment = await payments.get(bot.bot.db, "charge-8")
        assert payment is not None
        assert payment.status is payments.PaymentStatus.REFUNDED
        user = await users.get(bot.bot.db, TRADER)
        assert user is not None
        assert user.plan == "free"
