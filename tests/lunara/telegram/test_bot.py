"""The Telegram bot end to end: real python-telegram-bot polling a local Bot API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blueprint.clock import utc_now
from blueprint.ledger import ExitRecord, Ledger, LedgerDocument
from blueprint.manifest import Permission
from blueprint.mirror import NullMirror
from blueprint.paths import HomePaths
from lunara import accounts
from lunara import payments as payments_flow
from lunara import plans as plan_book
from lunara.app import CrashReporter
from lunara.storage import credentials, handled, payments, users
from lunara.storage import outbox as outbox_store
from lunara.storage.database import open_database
from lunara.telegram import bot as bot_module
from lunara.telegram import lease as lease_module
from lunara.telegram import outbox as outbox_module
from lunara.telegram import polling
from lunara.telegram.bot import CLIENT_TIMEOUT_S
from lunara.telegram.commands import COMMANDS
from lunara.telegram.guard import RefusalAudit
from lunara.telegram.lease import PollLease
from lunara.telegram.parsing import MAX_AMOUNT
from lunara.telegram.polling import TelegramService
from lunara.telegram.updates import BLANKED_TEXT
from lunara.trading.binance import RetryPolicy
from tests.fakes.binance_api import FakeBinance
from tests.fakes.telegram_api import FakeTelegram, check_html
from tests.lunara.telegram.conftest import (
    ADMIN,
    STRANGER,
    TOKEN,
    TRADER,
    UNPACED,
    RunningBot,
    built_bot,
    running_bot,
)
from tests.waiting import until, until_awaited, until_equal

NO_RATE_LIMIT = {"LUNARA_RATE_LIMIT_PER_MINUTE": "1000"}
"""For a test asking one user every command: each message counts against the limit."""
EXPECTED: dict[str, Permission] = {
    "start": Permission.TG_START,
    "help": Permission.TG_HELP,
    "status": Permission.TG_STATUS,
    "plans": Permission.TG_PLANS,
    "paysupport": Permission.TG_PAYSUPPORT,
    "terms": Permission.TG_TERMS,
    "balance": Permission.TG_BALANCE,
    "positions": Permission.TG_POSITIONS,
    "buy": Permission.TG_BUY,
    "sell": Permission.TG_SELL,
    "analyze": Permission.TG_ANALYZE,
    "settings": Permission.TG_SETTINGS,
    "setkeys": Permission.TG_SETKEYS,
    "subscribe": Permission.TG_SUBSCRIBE,
    "users": Permission.TG_USERS,
    "user": Permission.TG_USER,
    "broadcast": Permission.TG_BROADCAST,
    "pause": Permission.TG_PAUSE,
    "resume": Permission.TG_RESUME,
    "botstatus": Permission.TG_BOTSTATUS,
    "refund": Permission.TG_REFUND,
}
"""Each Telegram command → the permission it must need, written independently of the
command table (`COMMANDS`), which the matrix below is generated from."""

ROLE_PREFIXES = {  # the roles of the test manifest (tests/lunara/telegram/conftest.py)
    ADMIN: ("tg.admin.", "tg.trade.", "tg.info."),
    TRADER: ("tg.trade.", "tg.info."),
    STRANGER: ("tg.info.",),  # unnamed: the default role, "viewer"
}


def test_every_telegram_command_has_an_expected_permission() -> None:
    assert sorted(COMMANDS) == sorted(EXPECTED)
    assert {p for p in Permission if p.startswith("tg.")} == set(EXPECTED.values())


async def test_every_command_as_every_role(friendly_telegram: FakeTelegram, bot_home: Path) -> None:
    fake_telegram = friendly_telegram  # 60 questions in a row: see `friendly_telegram`
    async with running_bot(
        fake_telegram, bot_home, default_role="viewer", send_limits=UNPACED, **NO_RATE_LIMIT
    ) as bot:
        # Every refusal audited, not the first of each user per minute: the matrix reads
        # the permission each decision names.
        bot.bot.guard.refusals = RefusalAudit(window_s=0.0)
        for user in ROLE_PREFIXES:
            await bot.ask(user, "/start")
        audit_path = bot_home / "audit.jsonl"
        for name in COMMANDS:
            for user, prefixes in ROLE_PREFIXES.items():
                before = len(audit_path.read_text().splitlines())
                reply = await bot.ask(user, f"/{name}")
                denied = "does not allow" in reply
                assert denied == (not EXPECTED[name].startswith(prefixes)), (user, name, reply)
                entries = [json.loads(line) for line in audit_path.read_text().splitlines()]
                decision = next(e for e in entries[before:] if e["action"] == f"tg.{name}")
                assert decision["permission"] == EXPECTED[name], decision
                assert decision["principal"] == f"telegram:{user}"
                assert decision["decision"] == ("denied" if denied else "allowed")
        assert not fake_telegram.rejected  # every reply was well-formed HTML


async def test_help_lists_only_the_callers_commands(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        trader_help = await bot.ask(TRADER, "/help")
        admin_help = await bot.ask(ADMIN, "/help")
        assert "/buy" in trader_help
        assert "/broadcast" not in trader_help
        assert "/broadcast" in admin_help


async def test_buy_positions_and_sell_on_the_paper_exchange(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        bought = await bot.ask(TRADER, "/buy BTCUSDT 100")
        assert bought.startswith("Bought"), bought
        positions = await bot.ask(TRADER, "/positions")
        assert "BTCUSDT" in positions
        sold = await bot.ask(TRADER, "/sell BTCUSDT")
        assert sold.startswith("Sold"), sold
        assert "No open positions" in await bot.ask(TRADER, "/positions")


@pytest.mark.slow
async def test_bad_arguments_get_the_usage_line(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        for text in ("/buy", "/buy BTC-USDT 10", "/buy BTCUSDT -5", "/buy BTCUSDT lots", "/sell",
                     "/settings stake", "/user abc", "/settings trailing_stop_positive=7"):  # fmt: skip
            user = ADMIN if text.startswith("/user") else TRADER
            reply = await bot.ask(user, text)
            assert "Usage" in reply, (text, reply)


@pytest.mark.slow
async def test_an_amount_that_is_not_finite_positive_and_bounded_is_refused_saying_why(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        for amount, said in (
            ("nan", "the amount must be a finite number"),
            ("-inf", "the amount must be a finite number"),
            ("Infinity", "the amount must be a finite number"),
            ("0", "the amount must be positive"),
            ("1e7", f"the amount must be at most {MAX_AMOUNT}"),
        ):
            reply = await bot.ask(TRADER, f"/buy BTCUSDT {amount}")
            assert said in reply, (amount, reply)
            assert "Usage" in reply, (amount, reply)
        assert "No open positions" in await bot.ask(TRADER, "/positions")


async def test_settings_are_shown_and_updated(fake_telegram: FakeTelegram, bot_home: Path) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        reply = await bot.ask(TRADER, "/settings stake_usdt=50 symbols=BTCUSDT auto_mode=on")
        assert "50" in reply
        assert "BTCUSDT" in reply
        assert "auto_mode" in await bot.ask(TRADER, "/settings")


@pytest.mark.slow
async def test_symbols_binance_does_not_list_are_refused_by_settings_and_buy_naming_them(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    prices = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("2500")}
    with FakeBinance(prices=prices) as binance:
        async with running_bot(
            fake_telegram,
            bot_home,
            LUNARA_MARKET="binance",
            BINANCE_API_BASE_URL=binance.base_url,
            LUNARA_SYMBOLS="BTCUSDT,ETHUSTD",  # a typo: left out at start
        ) as bot:
            await bot.ask(TRADER, "/start")
            refused = await bot.ask(TRADER, "/settings symbols=BTCUSDT,NOPEUSDT auto_mode=on")
            assert "Binance does not list NOPEUSDT" in refused, refused
            unchanged = await bot.ask(TRADER, "/settings")
            assert "NOPEUSDT" not in unchanged
            assert "off" in unchanged.split("auto_mode")[1]
            saved = await bot.ask(TRADER, "/settings symbols=ethusdt")
            assert "ETHUSDT" in saved, saved
            buy = await bot.ask(TRADER, "/buy ETHUSTD 100")
            assert "ETHUSTD is not traded by this bot; choose one of BTCUSDT" in buy, buy
            assert (await bot.ask(TRADER, "/buy BTCUSDT 100")).startswith("Bought")


@pytest.mark.slow
async def test_a_trader_can_switch_to_a_plain_stop_and_back(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        assert "trailing_stop on" in _plain(await bot.ask(TRADER, "/settings"))
        reply = _plain(await bot.ask(TRADER, "/settings trailing_stop=off"))
        assert "trailing_stop off (plain stop)" in reply
        assert "trailing_stop off (plain stop)" in _plain(await bot.ask(TRADER, "/settings"))
        assert "trailing_stop on" in _plain(await bot.ask(TRADER, "/settings trailing_stop=on"))
        assert "Usage" in await bot.ask(TRADER, "/settings trailing_stop=maybe")


def _plain(reply: str) -> str:
    """A settings table with its markup and column padding collapsed to single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", reply).split())


@pytest.mark.slow
async def test_settings_watch_no_more_symbols_than_the_plan_allows(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """What counts: the symbols listed in /settings, or with `all` and auto mode on, every
    symbol the bot trades. The free plan allows two; Pro ten."""
    free = plan_book.PLANS[plan_book.PlanName.FREE]
    three = "BTCUSDT,ETHUSDT,SOLUSDT"
    assert free.max_symbols == 2
    async with running_bot(fake_telegram, bot_home, LUNARA_SYMBOLS=three) as bot:
        await bot.ask(TRADER, "/start")
        listed = _plain(await bot.ask(TRADER, f"/settings symbols={three} auto_mode=on"))
        assert listed == (
            "Your Free plan allows 2 symbols; that would be 3. Nothing was changed. Name at "
            "most 2 with /settings symbols=BTCUSDT,ETHUSDT , or see /plans."
        ), listed
        every = _plain(await bot.ask(TRADER, "/settings auto_mode=on"))
        assert "allows 2 symbols; auto mode on all symbols would watch the bot's 3" in every
        unchanged = _plain(await bot.ask(TRADER, "/settings"))
        assert "symbols all" in unchanged
        assert "auto_mode off" in unchanged
        two = _plain(await bot.ask(TRADER, "/settings symbols=SOLUSDT,ETHUSDT auto_mode=on"))
        assert "symbols SOLUSDT,ETHUSDT" in two
        assert "auto_mode on" in two
        assert "2 symbols" in _plain(await bot.ask(TRADER, "/plans"))
        await users.set_plan(bot.bot.db, TRADER, plan_book.PlanName.PRO.value, time.time() + 3600)
        assert f"symbols {three}" in _plain(await bot.ask(TRADER, f"/settings symbols={three}"))
        assert "auto_mode on" in _plain(await bot.ask(TRADER, "/settings symbols=all"))


async def test_setkeys_is_private_only_deletes_the_message_and_stores_encrypted(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    key, secret = "K" * 64, "S" * 64
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        group_reply = await bot.ask(TRADER, f"/setkeys {key} {secret}", chat_type="group")
        assert "private chat" in group_reply
        reply = await bot.ask(TRADER, f"/setkeys {key} {secret}")
        assert "Keys saved" in reply
        assert fake_telegram.deleted  # the message with the secret was deleted
    replies = str(fake_telegram.sent)
    assert key not in replies
    assert secret not in replies
    assert TOKEN not in replies
    database = await asyncio.to_thread((bot_home / "lunara.db").read_bytes)
    assert key.encode() not in database
    assert secret.encode() not in database
    for path, text in await asyncio.to_thread(_texts_beside_the_database, bot_home):
        assert key not in text, path
        assert secret not in text, path
        assert TOKEN not in text, path


def _texts_beside_the_database(home: Path) -> list[tuple[Path, str]]:
    """Every file of `home` but the database, as text (read off the event loop)."""
    return [
        (path, path.read_text(errors="replace"))
        for path in home.rglob("*")
        if path.is_file() and path.suffix != ".db"
    ]


@pytest.mark.slow
async def test_setkeys_in_live_mode_stores_only_keys_the_exchange_accepts(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    good = ("G" * 64, "g" * 64)
    view_only = ("V" * 64, "v" * 64)
    prices = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("2500")}
    with FakeBinance(prices=prices) as binance:
        binance.add_account(*good, USDT="1000")
        binance.add_account(*view_only, USDT="1000")
        binance.no_trading.add(view_only[0])
        async with running_bot(
            fake_telegram,
            bot_home,
            LUNARA_MODE="live",
            LUNARA_MARKET="binance",
            BINANCE_API_BASE_URL=binance.base_url,
            LUNARA_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ) as bot:
            await bot.ask(TRADER, "/start")
            unknown = await bot.ask(TRADER, f"/setkeys {'U' * 64} {'u' * 64}")
            assert "Binance refused these keys" in unknown, unknown
            refused = await bot.ask(TRADER, f"/setkeys {view_only[0]} {view_only[1]}")
            assert "may not trade" in refused, refused
            binance.inject("account", 503, -1001, "Internal error", times=RetryPolicy().attempts)
            unreachable = await bot.ask(TRADER, f"/setkeys {good[0]} {good[1]}")
            assert "could not reach Binance" in unreachable, unreachable
            assert await credentials.info(bot.bot.db, TRADER, credentials.Exchange.BINANCE) is None
            saved = await bot.ask(TRADER, f"/setkeys {good[0]} {good[1]}")
            assert "Keys saved" in saved, saved
            assert "USDT" in await bot.ask(TRADER, "/balance")  # the stored pair trades live
            binance.inject("account", 503, -1001, "Internal error", times=RetryPolicy().attempts)
            down = await bot.ask(TRADER, "/balance")
            assert "Binance is not answering right now" in down, down  # not an apology
        assert len(fake_telegram.deleted) == 4  # every message that carried a secret


@pytest.mark.slow
async def test_a_reply_stalled_past_the_client_timeout_is_sent_again(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    # The server holds the first sendMessage past the client's read timeout and then fails
    # it, so nothing was delivered: the bot must time out, retry, and reply exactly once.
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("sendMessage", 502, "Bad Gateway", stall_s=CLIENT_TIMEOUT_S + 1)
        assert "Plans" in await bot.ask(TRADER, "/plans")
        # The answer is marked sent once Telegram took it: the outbox sends it no more.
        await until_equal(
            lambda: outbox_store.counts(bot.bot.db),
            {"queued": 0, "sent": 1, "blocked": 0, "failed": 0},
            what="the answer marked sent",
        )
        assert len(fake_telegram.messages_to(TRADER)) == 1


async def test_answers_are_threaded_and_a_redelivered_command_is_not_answered_twice(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        update_id = fake_telegram.push_text(TRADER, "/buy BTCUSDT 100", username="trader")
        _, message_id = fake_telegram.pushed[update_id]
        await until(
            lambda: any(m["reply_to"] == message_id for m in fake_telegram.sent), what="a reply"
        )
        # The poller died before confirming: Telegram delivers the same message again.
        fake_telegram.redeliver(update_id)
        assert "Plans" in await bot.ask(TRADER, "/plans")  # handled after the redelivery
    answers = [m for m in fake_telegram.sent if m["reply_to"] == message_id]
    assert len(answers) == 1
    assert answers[0]["text"].startswith("Bought")
    async with (
        aiosqlite.connect(bot_home / "lunara.db") as db,
        db.execute("SELECT COUNT(*) FROM orders WHERE user_id = ?", (TRADER,)) as cur,
    ):
        row = await cur.fetchone()
    assert row is not None
    assert row[0] == 1


async def test_a_plain_text_gets_one_hint_even_when_delivered_again(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        update_id = fake_telegram.push_text(TRADER, "buy btc pls", username="trader")
        _, message_id = fake_telegram.pushed[update_id]
        await until(
            lambda: any(m["reply_to"] == message_id for m in fake_telegram.sent), what="a hint"
        )
        # The bot died after answering, before the next getUpdates confirmed the batch.
        fake_telegram.redeliver(update_id)
        fake_telegram.push_text(TRADER, "anyone there?", chat_type="group")
        assert "Plans" in await bot.ask(TRADER, "/plans")  # handled after the redelivery
    answers = [m for m in fake_telegram.sent if m["reply_to"] == message_id]
    assert [a["text"] for a in answers] == [bot_module.HINT]
    assert fake_telegram.messages_to(-1000000000 - TRADER) == []  # group chatter is not ours


@pytest.mark.slow
async def test_an_answer_telegram_keeps_failing_is_tried_until_it_goes_and_sent_once(
    fake_telegram: FakeTelegram, bot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 0.05)
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("sendMessage", 502, "Bad Gateway", times=6)
        assert "Plans" in await bot.ask(TRADER, "/plans")
        # Telegram has it; the row is marked sent once its answer is back in the bot.
        await until_equal(
            lambda: outbox_store.counts(bot.bot.db),
            {"queued": 0, "sent": 1, "blocked": 0, "failed": 0},
            what="the answer marked sent",
        )
    assert len(fake_telegram.messages_to(TRADER)) == 1


async def test_admin_pause_blocks_buys_until_resume(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        assert "paused" in await bot.ask(ADMIN, "/pause")
        refused = await bot.ask(TRADER, "/buy BTCUSDT 100")
        assert "paused" in refused.lower()
        await bot.ask(ADMIN, "/resume")
        assert (await bot.ask(TRADER, "/buy BTCUSDT 100")).startswith("Bought")


async def test_broadcast_reaches_every_active_user(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        for user in (TRADER, STRANGER):
            await bot.ask(user, "/start")
        reply = await bot.ask(ADMIN, "/broadcast maintenance at <noon> & later")
        assert "Broadcasting to 2 users" in reply  # the admin never sent /start
        await until(
            lambda: any("Broadcast finished" in m for m in fake_telegram.messages_to(ADMIN)),
            what="the summary",
        )
        assert "Sent: 2" in fake_telegram.messages_to(ADMIN)[-1]
        for user in (TRADER, STRANGER):
            assert "&lt;noon&gt; &amp; later" in fake_telegram.messages_to(user)[-1]


async def test_stars_payment_upgrades_the_plan_and_refund_takes_it_back(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    pro = plan_book.PLANS[plan_book.PlanName.PRO]
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.push_text(TRADER, "/subscribe pro")
        await until(lambda: len(fake_telegram.invoices) == 1, what="an invoice")
        invoice = fake_telegram.invoices[0]
        assert invoice["currency"] == "XTR"
        assert invoice["prices"][0]["amount"] == pro.price_stars
        payload = invoice["payload"]
        fake_telegram.push_pre_checkout(TRADER, payload, pro.price_stars + 1)
        fake_telegram.push_pre_checkout(TRADER, payload, pro.price_stars)
        await until(lambda: len(fake_telegram.answers) == 2, what="pre-checkout answers")
        assert [a["ok"] for a in fake_telegram.answers] == [False, True]
        fake_telegram.push_successful_payment(TRADER, payload, "charge-1", pro.price_stars)
        await until(lambda: any("plan is active" in m for m in fake_telegram.messages_to(TRADER)))
        user = await users.get(bot.bot.db, TRADER)
        assert user is not None
        assert user.plan == "pro"
        assert "Refunded" in await bot.ask(ADMIN, "/refund charge-1")
        assert fake_telegram.refunds[0]["telegram_payment_charge_id"] == "charge-1"
        payment = await payments.get(bot.bot.db, "charge-1")
        assert payment is not None
        assert payment.status is payments.PaymentStatus.REFUNDED


async def _paid_pro(bot: RunningBot, fake_telegram: FakeTelegram, charge_id: str) -> None:
    pro = plan_book.PLANS[plan_book.PlanName.PRO]
    await bot.ask(TRADER, "/start")
    payload = payments_flow.invoice_payload(pro, TRADER)
    fake_telegram.push_successful_payment(TRADER, payload, charge_id, pro.price_stars)
    await until(lambda: any("plan is active" in m for m in fake_telegram.messages_to(TRADER)))


async def test_concurrent_refunds_of_one_charge_make_one_refund_call(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home, send_limits=UNPACED) as bot:
        await _paid_pro(bot, fake_telegram, "charge-5x")
        # One admin's commands run in the order sent, so concurrent refunds come from
        # several admins at once: asked here of the refund flow itself, five at a time.
        outcomes = await asyncio.gather(
            *(
                accounts.refund_payment(bot.bot.db, bot.bot.deps.refund, "charge-5x")
                for _ in range(5)
            )
        )
        assert sorted(result.value for result, _ in outcomes) == sorted(
            [accounts.Refund.REFUNDED.value] + [accounts.Refund.ALREADY.value] * 4
        )
        assert [r["telegram_payment_charge_id"] for r in fake_telegram.refunds] == ["charge-5x"]
        answer = await bot.ask(ADMIN, "/refund charge-5x")
        assert "already refunded" in answer
        assert "nothing was done" in answer
        assert len(fake_telegram.refunds) == 1
        user = await users.require(bot.bot.db, TRADER)
        assert user.plan == "free"


@pytest.mark.parametrize(
    ("amount_off", "currency"), [(-1, "XTR"), (0, "USD")], ids=["amount", "currency"]
)
async def test_a_completed_payment_that_does_not_pay_for_its_plan_grants_nothing(
    fake_telegram: FakeTelegram, bot_home: Path, amount_off: int, currency: str
) -> None:
    pro = plan_book.PLANS[plan_book.PlanName.PRO]
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        payload = payments_flow.invoice_payload(pro, TRADER)
        fake_telegram.push_successful_payment(
            TRADER, payload, "charge-odd", pro.price_stars + amount_off, currency=currency
        )
        await until(
            lambda: any("PaymentMismatch" in m for m in fake_telegram.messages_to(ADMIN)),
            what="the admins told",
        )
        assert "something went wrong" in fake_telegram.messages_to(TRADER)[-1]
        assert await payments.get(bot.bot.db, "charge-odd") is None
        user = await users.require(bot.bot.db, TRADER)
        assert user.plan == "free"
        assert user.plan_expires_at is None


async def test_rate_limit_answers_clearly(fake_telegram: FakeTelegram, bot_home: Path) -> None:
    async with running_bot(fake_telegram, bot_home, LUNARA_RATE_LIMIT_PER_MINUTE="3") as bot:
        replies = [await bot.ask(TRADER, "/plans") for _ in range(4)]
        assert "Slow down" in replies[-1]
        assert all("Slow down" not in reply for reply in replies[:3])


async def test_injected_409_is_survived_and_recorded(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("getUpdates", 409, "Conflict: terminated by other getUpdates request")
        await until(lambda: (bot_home / "telegram-state.json").exists(), what="conflict record")
        assert json.loads((bot_home / "telegram-state.json").read_text())["conflicts"] >= 1
        assert "Plans" in await bot.ask(TRADER, "/plans")  # still polling and answering


async def test_retry_after_and_timeouts_on_send_are_retried(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
        fake_telegram.inject("sendMessage", 502, "Bad Gateway")
        assert "Plans" in await bot.ask(TRADER, "/plans")


async def test_a_user_who_blocked_the_bot_is_marked_inactive_when_a_notification_is_refused(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.block(TRADER, tell=False)
        await bot.bot.notify(TRADER, "your stop triggered")
        await until_equal(lambda: user_active(bot.bot.db, TRADER), False, what="marked inactive")
        assert fake_telegram.forbidden == 1
        assert (await outbox_store.counts(bot.bot.db))["blocked"] == 1


async def user_active(db: aiosqlite.Connection, user_id: int) -> bool | None:
    user = await users.get(db, user_id)
    return None if user is None else user.active


def tries_of(lease: PollLease, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each try of `lease` to take the poller lease, as it ends (False: refused)."""
    tries: list[bool] = []
    try_once = lease._try_once

    async def recorded() -> bool:
        held = await try_once()
        tries.append(held)
        return held

    monkeypatch.setattr(lease, "_try_once", recorded)
    return tries


async def test_two_instances_never_poll_at_once(
    fake_telegram: FakeTelegram, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_home, second_home = tmp_path / "a", tmp_path / "b"
    first_home.mkdir()
    second_home.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    # Both instances share one LUNARA_HOME lock directory through the lease path.
    lease_a = PollLease(TOKEN, shared)
    lease_b = PollLease(TOKEN, shared)
    stop = asyncio.Event()
    assert await lease_a.acquire(stop)
    tries = tries_of(lease_b, monkeypatch)
    waiting = asyncio.create_task(lease_b.acquire(stop))
    await until(lambda: False in tries, what="the second lease refused")
    assert not waiting.done()  # the second waits instead of polling
    await lease_a.release()
    assert await asyncio.wait_for(waiting, 5)
    await lease_b.release()


async def test_two_bots_against_one_server_never_poll_concurrently(
    fake_telegram: FakeTelegram, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    async with running_bot(fake_telegram, home) as first:
        second_home = tmp_path / "home2"
        second_home.mkdir()
        # Same home → same lease file: the second bot must wait.
        from lunara.telegram.bot import TelegramBot

        second = TelegramBot(
            first.bot.settings, first.bot.paths, first.bot.guard.manifest, first.bot.guard.audit,
            first.bot.db, first.bot.deps.trading,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(TelegramService(second).run(stop))
        for _ in range(5):
            assert "Plans" in await first.ask(TRADER, "/plans")
        stop.set()
        await asyncio.wait_for(task, 10)
        assert fake_telegram.max_concurrent_polls == 1


async def test_redis_lease_is_exclusive_and_released(
    redis_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_db)
    try:
        first, second = PollLease(TOKEN, tmp_path, client), PollLease(TOKEN, tmp_path, client)
        stop = asyncio.Event()
        assert await first.acquire(stop)
        tries = tries_of(second, monkeypatch)
        waiting = asyncio.create_task(second.acquire(stop))
        await until(lambda: False in tries, what="the second lease refused")
        assert not waiting.done()
        assert TOKEN not in str(await client.keys("*"))  # the key is a hash, not the token
        await first.release()
        assert await asyncio.wait_for(waiting, 5)
        await second.release()
    finally:
        await client.aclose()


async def test_a_lease_lost_with_a_flushed_redis_is_taken_back(
    redis_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio import Redis

    monkeypatch.setattr(lease_module, "RENEW_EVERY_S", 0.05)
    client = Redis.from_url(redis_db)
    try:
        lease = PollLease(TOKEN, tmp_path, client)
        assert await lease.acquire(asyncio.Event())
        await client.flushdb()

        async def taken_back() -> bool:
            return bool(await client.exists(lease.key))

        await until_awaited(taken_back, what="the lease key set again")  # renewed by taking it back
        assert not lease.lost.is_set()
        await client.set(lease.key, "another instance")
        await asyncio.wait_for(lease.lost.wait(), 2)  # a real owner is respected
        await lease.release()
        assert await client.get(lease.key) == b"another instance"
    finally:
        await client.aclose()


async def answered_once_on_start(fake: FakeTelegram, home: Path, message_id: int, what: str) -> str:
    """Start the bot: message `message_id`, left from a crash, gets exactly one answer
    (returned), and new commands are answered too."""
    async with running_bot(fake, home) as running:
        await until(lambda: any(m["reply_to"] == message_id for m in fake.sent), what=what)
        assert "Plans" in await running.ask(TRADER, "/plans")
    answers = [m for m in fake.sent if m["reply_to"] == message_id]
    assert len(answers) == 1
    return str(answers[0]["text"])


async def test_a_command_taken_but_not_answered_before_a_crash_is_answered_on_start(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    # The poller had confirmed the update (it fetched the next batch); the bot died in
    # the handler. Telegram will not send it again: the next run must answer it.
    message_id = 900
    update = {
        "update_id": 77,
        "message": {
            "message_id": message_id, "date": int(time.time()),
            "chat": {"id": TRADER, "type": "private"},
            "from": {"id": TRADER, "is_bot": False, "first_name": "trader"},
            "text": "/plans", "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }  # fmt: skip
    db = await open_database(bot_home / "lunara.db")
    try:
        assert await handled.begin(db, TRADER, message_id, TRADER, json.dumps(update))
    finally:
        await db.close()
    answer = await answered_once_on_start(
        fake_telegram, bot_home, message_id, "the answer to the command taken before the crash"
    )
    assert "Plans" in answer
    db = await open_database(bot_home / "lunara.db")
    try:
        assert await handled.unfinished(db) == []
    finally:
        await db.close()


async def fetch_and_confirm_then_die(fake: FakeTelegram, home: Path, update_id: int) -> None:
    """The poller fetches the batch holding `update_id` through the real client and
    confirms it (the next getUpdates carries the offset); then the bot dies before any
    handler runs. Telegram has forgotten the update."""
    async with built_bot(fake, home) as (bot, _):
        client = bot.application.bot
        await client.initialize()
        try:
            fetched = await client.get_updates(timeout=0)
            assert [update.update_id for update in fetched] == [update_id]
            assert await client.get_updates(offset=update_id + 1, timeout=0) == ()
        finally:
            await client.shutdown()
    assert fake.confirmed_below > update_id


async def test_a_command_fetched_and_confirmed_but_never_handled_is_answered_after_a_crash(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """The poller fetched a batch and confirmed it (the next getUpdates carries the
    offset), and the bot died before any handler ran: Telegram will not deliver it again,
    so it must already be in the inbox."""
    update_id = fake_telegram.push_text(TRADER, "/plans", username="trader")
    _, message_id = fake_telegram.pushed[update_id]
    await fetch_and_confirm_then_die(fake_telegram, bot_home, update_id)
    answer = await answered_once_on_start(
        fake_telegram, bot_home, message_id, "the answer to the command fetched before the crash"
    )
    assert "Plans" in answer


async def test_a_plain_text_fetched_before_a_crash_is_answered_on_start_without_its_words(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Users paste anything into a chat, keys too: the inbox keeps a plain text until it
    is answered, but never its words (the hint does not depend on them)."""
    words = "my secret is Zq81vKx0ExampleOnly"
    update_id = fake_telegram.push_text(
        TRADER, words, username="trader", replying_to="and the other Pq52wYt7ExampleOnly"
    )
    _, message_id = fake_telegram.pushed[update_id]
    await fetch_and_confirm_then_die(fake_telegram, bot_home, update_id)
    async with (
        aiosqlite.connect(bot_home / "lunara.db") as db,
        db.execute("SELECT state, update_json FROM handled_commands") as cursor,
    ):
        rows = list(await cursor.fetchall())
    assert [row[0] for row in rows] == [handled.STARTED]
    assert "Zq81vKx0" not in rows[0][1]
    assert "Pq52wYt7" not in rows[0][1]
    assert json.loads(rows[0][1])["message"]["text"] == BLANKED_TEXT
    answer = await answered_once_on_start(
        fake_telegram, bot_home, message_id, "the hint for the text fetched before the crash"
    )
    assert answer == bot_module.HINT
    stored = (bot_home / "lunara.db").read_bytes().decode("latin-1")
    assert "Zq81vKx0" not in stored
    assert "Pq52wYt7" not in stored


async def test_a_payment_fetched_and_confirmed_but_never_handled_is_recorded_after_a_crash(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Telegram sends a completed payment once: a bot that dies after confirming it must
    still grant the plan, and thank the payer once, when it comes back."""
    pro = plan_book.PLANS[plan_book.PlanName.PRO]
    payload = payments_flow.invoice_payload(pro, TRADER)
    async with running_bot(fake_telegram, bot_home) as running:
        await running.ask(TRADER, "/start")
    update_id = fake_telegram.push_successful_payment(TRADER, payload, "charge-7", pro.price_stars)
    _, message_id = fake_telegram.pushed[update_id]
    await fetch_and_confirm_then_die(fake_telegram, bot_home, update_id)
    db = await open_database(bot_home / "lunara.db")
    try:
        assert await payments.get(db, "charge-7") is None  # died before recording it
    finally:
        await db.close()

    def thanks() -> list[dict[str, Any]]:
        return [m for m in fake_telegram.sent if m["reply_to"] == message_id]

    async with running_bot(fake_telegram, bot_home) as running:
        await until(lambda: thanks() != [], what="the thanks for the payment")
        assert "Plans" in await running.ask(TRADER, "/plans")
        payment = await payments.get(running.bot.db, "charge-7")
        user = await users.get(running.bot.db, TRADER)
    assert payment is not None
    assert payment.status is payments.PaymentStatus.PAID
    assert user is not None
    assert user.plan == "pro"
    assert [m["text"] for m in thanks()] == ["Thank you! Your Pro plan is active."]


async def test_a_payment_the_database_could_not_record_is_recorded_by_a_later_sweep(
    fake_telegram: FakeTelegram, bot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payer cannot send a payment again: one that failed on a database error stays in
    the inbox and is recorded, and thanked for, once the database takes it."""
    monkeypatch.setattr(polling, "RETRY_UNANSWERED_S", 0.5)
    pro = plan_book.PLANS[plan_book.PlanName.PRO]
    payload = payments_flow.invoice_payload(pro, TRADER)
    async with running_bot(fake_telegram, bot_home) as running:
        await running.ask(TRADER, "/start")
        db = running.bot.db
        # An OperationalError on every insert, as a locked or failing disk gives.
        await db.execute(
            "CREATE TRIGGER refuse_payments BEFORE INSERT ON payments"
            " BEGIN SELECT disk_trouble(); END"
        )
        update_id = fake_telegram.push_successful_payment(
            TRADER, payload, "charge-8", pro.price_stars
        )
        _, message_id = fake_telegram.pushed[update_id]
        await until(
            lambda: any("went wrong" in m for m in fake_telegram.messages_to(TRADER)),
            what="the apology",
        )
        assert await payments.get(db, "charge-8") is None
        await db.execute("DROP TRIGGER refuse_payments")

        def answers() -> list[str]:
            return [m["text"] for m in fake_telegram.sent if m["reply_to"] == message_id]

        await until(lambda: len(answers()) == 2, what="the thanks, after a sweep")
        payment = await payments.get(db, "charge-8")
        later = sweeps_of(running, monkeypatch)
        await until(lambda: len(later) >= 2, what="two later sweeps")
    assert [update_id in found for found in later[:2]] == [False, False]  # found answered
    assert payment is not None
    assert payment.status is payments.PaymentStatus.PAID
    apology, thanks = answers()
    assert "went wrong" in apology
    assert thanks == "Thank you! Your Pro plan is active."


def sweeps_of(running: RunningBot, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The update ids each sweep of the inbox finds unanswered, from now on."""
    sweeps: list[list[int]] = []
    inbox = running.bot.inbox
    unanswered = inbox.unanswered

    async def recorded(bot: Any, taken_before: float | None = None) -> list[Any]:
        found = await unanswered(bot, taken_before)
        sweeps.append([update.update_id for update in found])
        return found

    monkeypatch.setattr(inbox, "unanswered", recorded)
    return sweeps


@pytest.mark.slow
async def test_a_stop_leaves_the_answers_telegram_did_not_take_yet_for_the_next_start(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """A stop does not wait on a backlog (a slow stop is cut short by the watchdog,
    mid-send): the commands taken are answered into the outbox, the sends under way
    finish, and what Telegram did not take yet is sent by the next start, once each."""
    count = 100
    fake_telegram.inject_stall("sendMessage", 3.0, times=count)
    async with running_bot(fake_telegram, bot_home) as running:
        pushed = [fake_telegram.push_text(6000 + n, "/plans") for n in range(count)]
        await until(lambda: fake_telegram.confirmed_below > pushed[-1], what="all fetched")
        await until_equal(lambda: handled_unfinished(running.bot.db), 0, what="all answered")
    message_ids = {fake_telegram.pushed[update_id][1] for update_id in pushed}

    def answers() -> Counter[int]:
        return Counter(m["reply_to"] for m in fake_telegram.sent if m["reply_to"] in message_ids)

    sent_before_the_stop = sum(answers().values())
    assert sent_before_the_stop < count
    assert set(answers().values()) <= {1}
    db = await open_database(bot_home / "lunara.db")
    try:
        assert (await outbox_store.counts(db))["queued"] == count - sent_before_the_stop
    finally:
        await db.close()
    async with running_bot(fake_telegram, bot_home) as running:
        await until(lambda: len(answers()) == count, what="every answer sent")
    assert set(answers().values()) == {1}


async def handled_unfinished(db: aiosqlite.Connection) -> int:
    return len(await handled.unfinished(db))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(sorted(COMMANDS)),
    st.lists(st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != ""), max_size=4),
)
def test_random_arguments_never_crash_and_replies_are_valid_html(
    name: str, arguments: list[str]
) -> None:
    from lunara.telegram.commands import CommandContext, Deps  # noqa: F401 (shape check below)
    from lunara.telegram.parsing import UsageError, split_arguments

    text = f"/{name} " + " ".join(arguments)
    with contextlib.suppress(UsageError):
        split_arguments(text)
    assert (
        check_html(
            "<b>" + text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</b>"
        )
        is None
    )


async def test_an_unknown_user_without_a_default_role_is_refused_everything(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    fake_telegram = friendly_telegram  # 20 questions in a row: see `friendly_telegram`
    async with running_bot(
        fake_telegram, bot_home, default_role=None, send_limits=UNPACED, **NO_RATE_LIMIT
    ) as bot:
        for name in COMMANDS:
            reply = await bot.ask(STRANGER, f"/{name}")
            assert "does not allow" in reply, (name, reply)
        assert "/help" in await bot.ask(STRANGER, "/nonsense")
        assert "/help" in await bot.ask(STRANGER, "just chatting")
    audit = [json.loads(line) for line in (bot_home / "audit.jsonl").read_text().splitlines()]
    mine = [entry for entry in audit if entry["principal"] == f"telegram:{STRANGER}"]
    # Refusals are audited by sample (lunara.telegram.guard.RefusalAudit): a stranger's
    # first refusal of the minute is written, the rest are counted in the next line.
    assert [(entry["action"], entry["decision"]) for entry in mine] == [
        (f"tg.{next(iter(COMMANDS))}", "denied")
    ]


async def test_telegram_unreachable_at_start_is_waited_out_without_a_traceback(
    fake_telegram: FakeTelegram,
    bot_home: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot_module, "CLIENT_TIMEOUT_S", 1.0)  # a short stall times out
    monkeypatch.setattr(polling, "START_RETRY_FIRST_S", 0.2)
    # getMe (the first call of a start) fails: a Telegram outage when the bot starts.
    fake_telegram.inject("getMe", 502, "Bad Gateway", times=2)
    fake_telegram.inject_stall("getMe", 2.0)
    async with running_bot(fake_telegram, bot_home) as bot:
        assert "Plans" in await bot.ask(TRADER, "/plans")
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    waits = [
        r.getMessage() for r in caplog.records if "Telegram is not reachable" in r.getMessage()
    ]
    assert len(waits) == 3, waits
    assert "TimedOut" in waits[2]


async def test_a_stop_while_telegram_is_unreachable_at_start_ends_the_service_at_once(
    fake_telegram: FakeTelegram,
    bot_home: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(polling, "START_RETRY_FIRST_S", 60.0)  # the stop must cut this
    fake_telegram.inject("getMe", 502, "Bad Gateway", times=100)
    async with built_bot(fake_telegram, bot_home) as (bot, _trading):
        stop = asyncio.Event()
        service = asyncio.create_task(TelegramService(bot).run(stop))
        await until(
            lambda: logged(caplog, "not reachable"), what="a warning that Telegram is not reachable"
        )
        stop.set()
        await asyncio.wait_for(service, 2)  # returns (no exception) well within the grace
    assert fake_telegram.polls_by_token.get(TOKEN, 0) == 0


def logged(caplog: pytest.LogCaptureFixture, words: str) -> bool:
    return any(words in record.getMessage() for record in caplog.records)


def with_crash_reporter(
    bot: bot_module.TelegramBot, home: Path, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The Telegram service and the crash reporter, running as `python -m lunara` runs them."""
    return [
        asyncio.create_task(service.run(stop))
        for service in (TelegramService(bot), CrashReporter(bot, HomePaths.resolve(home)))
    ]


def crashed_before(home: Path) -> None:
    """The ledger of a bot whose last run was SIGKILLed: the next run owes the admins a report."""
    record = ExitRecord(code=None, signal=signal.SIGKILL, at=utc_now(), reason="killed by SIGKILL")

    def mutate(document: LedgerDocument) -> None:
        document.last_exit = record
        document.restart_times = [time.time()]

    Ledger(HomePaths.resolve(home), "lunara", NullMirror()).update(mutate)


@pytest.mark.slow
async def test_the_crash_report_waits_out_a_telegram_outage_and_reaches_the_admin_once(
    fake_telegram: FakeTelegram,
    bot_home: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_FIRST_S", 0.05)
    crashed_before(bot_home)
    fake_telegram.inject("getMe", 502, "Bad Gateway", times=2)
    fake_telegram.inject("sendMessage", 502, "Bad Gateway", times=6)  # past a send's retries
    async with built_bot(fake_telegram, bot_home) as (bot, _trading):
        stop = asyncio.Event()
        tasks = with_crash_reporter(bot, bot_home, stop)
        running = RunningBot(fake_telegram, bot, bot_home)
        try:
            await until(
                lambda: bool(fake_telegram.messages_to(ADMIN)), timeout_s=40, what="the report"
            )
            assert "Plans" in await running.ask(TRADER, "/plans")
        finally:
            stop.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert results == [None, None]
    reports = fake_telegram.messages_to(ADMIN)
    assert len(reports) == 1
    assert "SIGKILL" in reports[0]
    assert (bot_home / "crash-report.json").exists()  # the next start does not send it again
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


async def test_a_crash_report_telegram_keeps_refusing_stays_queued_and_the_next_start_sends_it(
    fake_telegram: FakeTelegram, bot_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crashed_before(bot_home)
    fake_telegram.inject("sendMessage", 502, "Bad Gateway", times=100)
    async with built_bot(fake_telegram, bot_home) as (bot, _trading):
        stop = asyncio.Event()
        tasks = with_crash_reporter(bot, bot_home, stop)
        await until(
            lambda: logged(caplog, "could not send to chat"), what="a warning that it was refused"
        )
        stop.set()
        assert await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10) == [
            None,
            None,
        ]
    assert not fake_telegram.messages_to(ADMIN)
    assert (bot_home / "crash-report.json").exists()  # queued: the next start queues no other
    fake_telegram.clear_injected()  # Telegram takes messages again
    async with built_bot(fake_telegram, bot_home) as (bot, _trading):
        stop = asyncio.Event()
        tasks = with_crash_reporter(bot, bot_home, stop)
        running = RunningBot(fake_telegram, bot, bot_home)
        try:
            await until(lambda: bool(fake_telegram.messages_to(ADMIN)), what="the report")
            assert "Plans" in await running.ask(TRADER, "/plans")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    reports = fake_telegram.messages_to(ADMIN)
    assert len(reports) == 1
    assert "SIGKILL" in reports[0]


async def test_old_inbox_rows_are_pruned_while_running_not_only_at_start(
    fake_telegram: FakeTelegram, bot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(polling, "RETRY_UNANSWERED_S", 0.2)
    monkeypatch.setattr(polling, "PRUNE_EVERY_S", 0.2)
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")  # running: the start-up prune is behind us
        # What the running pruner deletes is counted as it deletes it, so the rows need not
        # be seen before it gets to them (it runs every 0.2 s, in the middle of the setup).
        deleted: list[int] = []
        real_prune = handled.prune

        async def counted_prune(db: aiosqlite.Connection, now: float | None = None) -> int:
            count = await real_prune(db, now)
            deleted.append(count)
            return count

        monkeypatch.setattr(handled, "prune", counted_prune)
        long_ago = time.time() - handled.KEEP_S - 60
        rows = [(TRADER, 10_000 + n, TRADER, None) for n in range(100)]
        await handled.take(bot.bot.db, rows, now=long_ago)
        for _, message_id, _, _ in rows:
            await handled.finish(bot.bot.db, TRADER, message_id)

        async def old_rows() -> int:
            async with bot.bot.db.execute(
                "SELECT COUNT(*) FROM handled_commands WHERE handled_at < ?",
                (time.time() - handled.KEEP_S,),
            ) as cursor:
                row = await cursor.fetchone()
            return int(row[0]) if row else 0

        async def pruned() -> bool:
            return sum(deleted) >= len(rows) and await old_rows() == 0

        await until_awaited(pruned, 15, "the old rows pruned")
        assert sum(deleted) == len(rows)
        assert await old_rows() == 0
