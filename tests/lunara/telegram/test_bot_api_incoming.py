"""What Telegram really sends, end to end against the fake Bot API (flood limits on):
commands delivered late, edits, floods of messages, button presses, the kinds of update
asked for, one user's commands in order, and blocks fetched just before a crash."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from lunara.storage import credentials, handled, user_settings, users
from lunara.storage import outbox as outbox_store
from lunara.storage.database import open_database
from lunara.telegram import bot as bot_module
from lunara.telegram.updates import ALLOWED_UPDATES
from tests.fakes.telegram_api import FakeTelegram, group_chat_id
from tests.lunara.telegram.conftest import ADMIN, TRADER, RunningBot, built_bot, running_bot
from tests.waiting import until, until_awaited

OTHER_TRADER = 2003  # gets the default role, trader


async def orders_of(db: aiosqlite.Connection, user_id: int) -> int:
    async with db.execute("SELECT COUNT(*) FROM orders WHERE user_id = ?", (user_id,)) as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def answered(db: aiosqlite.Connection) -> int:
    async with db.execute(
        "SELECT COUNT(*) FROM handled_commands WHERE state = ?", (handled.ANSWERED,)
    ) as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def reply_to(bot: RunningBot, update_id: int) -> str:
    """The one answer threaded to the message of `update_id`."""
    _, message_id = bot.fake.pushed[update_id]

    def answers() -> list[str]:
        return [m["text"] for m in bot.fake.sent if m["reply_to"] == message_id]

    await until(lambda: answers() != [], what=f"the answer to update {update_id}")
    return answers()[0]


async def ask_sent_at(bot: RunningBot, user_id: int, text: str, sent_at: float) -> str:
    """Send `text` as typed at `sent_at` (Telegram delivering it only now); its answer."""
    return await reply_to(bot, bot.fake.push_text(user_id, text, sent_at=sent_at))


# -- 4. commands delivered late ----------------------------------------------------------


@pytest.mark.slow
async def test_a_trade_command_that_arrives_late_is_not_run_and_read_only_ones_are_answered(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    an_hour_ago = time.time() - 3600
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        late_buy = await ask_sent_at(bot, TRADER, "/buy BTCUSDT 100", an_hour_ago)
        assert "was sent 1 hour ago" in late_buy, late_buy
        assert "did not act on it" in late_buy, late_buy
        assert "send it again" in late_buy
        late_change = await ask_sent_at(bot, TRADER, "/settings stake_usdt=55", an_hour_ago)
        assert "did not act on it" in late_change, late_change
        late_sell = await ask_sent_at(bot, TRADER, "/sell BTCUSDT", an_hour_ago)
        assert "did not act on it" in late_sell, late_sell
        # Reading is answered however late it comes.
        assert "Your settings" in await ask_sent_at(bot, TRADER, "/settings", an_hour_ago)
        assert "No open positions" in await ask_sent_at(bot, TRADER, "/positions", an_hour_ago)
        assert await orders_of(bot.bot.db, TRADER) == 0
        settings = await user_settings.get(bot.bot.db, TRADER)
        assert settings.stake_usdt != Decimal("55")
        # A command that came in time is run.
        fresh = await ask_sent_at(bot, TRADER, "/buy BTCUSDT 100", time.time() - 20)
        assert fresh.startswith("Bought"), fresh
        late_pause = await ask_sent_at(bot, ADMIN, "/pause", an_hour_ago)
        assert "did not act on it" in late_pause
        assert not await bot.bot.deps.trading.is_paused()


async def test_how_late_a_trade_command_may_arrive_is_configurable(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home, LUNARA_COMMAND_MAX_AGE_SECONDS="15") as bot:
        await bot.ask(TRADER, "/start")
        late = await ask_sent_at(bot, TRADER, "/buy BTCUSDT 100", time.time() - 40)
        assert "was sent 40 seconds ago" in late or "was sent 4" in late, late
        assert await orders_of(bot.bot.db, TRADER) == 0


# -- 5. edited messages ------------------------------------------------------------------


async def test_an_edited_command_is_not_run_and_the_user_is_told_to_send_it_again(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        first = fake_telegram.push_text(TRADER, "/positions")
        assert "No open positions" in await reply_to(bot, first)
        before = len(fake_telegram.messages_to(TRADER))
        fake_telegram.push_edit(first, "/buy BTCUSDT 100")
        await until(lambda: len(fake_telegram.messages_to(TRADER)) > before, what="the answer")
        assert fake_telegram.messages_to(TRADER)[before] == bot_module.EDIT_NOT_RUN
        # In a group: an edit addressed to another bot is not ours to answer.
        group = group_chat_id(TRADER)
        in_group = fake_telegram.push_text(TRADER, "/plans", chat_type="group")
        assert "Plans" in await reply_to(bot, in_group)
        fake_telegram.push_edit(in_group, "/buy@other_bot BTCUSDT 100")
        fake_telegram.push_edit(in_group, "/sell BTCUSDT")
        await until(lambda: len(fake_telegram.messages_to(group)) == 2, what="the answer")
        assert fake_telegram.messages_to(group)[1] == bot_module.EDIT_NOT_RUN
        assert await orders_of(bot.bot.db, TRADER) == 0
        await until_awaited(lambda: no_unfinished(bot.bot.db), what="every edit answered")
    assert len(fake_telegram.messages_to(group)) == 2  # the other bot's edit: no answer


async def no_unfinished(db: aiosqlite.Connection) -> bool:
    return await handled.unfinished(db) == []


async def test_an_edit_that_now_carries_keys_is_deleted_and_the_user_told_to_revoke_them(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    key, secret = "K7" * 20, "S9" * 20
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        private = fake_telegram.push_text(TRADER, "/plans")
        await reply_to(bot, private)
        in_group = fake_telegram.push_text(TRADER, "/plans", chat_type="group")
        await reply_to(bot, in_group)
        before = len(fake_telegram.messages_to(TRADER))
        fake_telegram.push_edit(private, f"/setkeys {key} {secret}")
        fake_telegram.push_edit(in_group, f"/setkeys {key} {secret}")
        await until(lambda: len(fake_telegram.deleted) == 2, what="both edits deleted")
        await until(lambda: len(fake_telegram.messages_to(TRADER)) > before, what="warning")
        await until(
            lambda: len(fake_telegram.messages_to(group_chat_id(TRADER))) == 2, what="warning"
        )
        stored = await credentials.info(bot.bot.db, TRADER, credentials.Exchange.BINANCE)
    assert set(fake_telegram.deleted) == {fake_telegram.pushed[private],
                                          fake_telegram.pushed[in_group]}  # fmt: skip
    assert fake_telegram.messages_to(TRADER)[before] == bot_module.EDITED_KEYS
    assert "Revoke those keys" in fake_telegram.messages_to(group_chat_id(TRADER))[1]
    assert stored is None  # an edit is never run, keys or not
    assert key not in str(fake_telegram.sent)
    assert secret not in str(fake_telegram.sent)
    kept = await asyncio.to_thread(
        lambda: b"".join(path.read_bytes() for path in bot_home.glob("lunara.db*"))
    )
    assert key.encode() not in kept
    assert secret.encode() not in kept


# -- 6. a rate limit for everything a user sends ------------------------------------------


async def test_everything_a_user_sends_counts_against_the_rate_limit_and_slow_down_is_sent_once(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    texts = ["hello", "/nosuchcommand", "/plans",  # the three a minute allowed
             "/plans", "more words", "/nosuchcommand", "/buy BTCUSDT 100", "/plans", "/help"]  # fmt: skip
    async with running_bot(fake_telegram, bot_home, LUNARA_RATE_LIMIT_PER_MINUTE="3") as bot:
        for text in texts:
            fake_telegram.push_text(TRADER, text)
        await until_awaited(
            lambda: all_answered(bot.bot.db, len(texts)), what="every message answered"
        )
        replies = fake_telegram.messages_to(TRADER)
        bought = await orders_of(bot.bot.db, TRADER)
    assert replies[0] == bot_module.HINT
    assert "don't know that command" in replies[1]
    assert "Plans" in replies[2]
    assert len(replies) == 4, replies
    assert "Slow down" in replies[3], replies
    assert bought == 0


async def all_answered(db: aiosqlite.Connection, count: int) -> bool:
    """`count` inbox entries answered and every answer sent."""
    return await answered(db) == count and (await outbox_store.counts(db))["queued"] == 0


# -- 8. button presses, and only the kinds of update handled ------------------------------


async def test_a_button_press_is_answered_and_only_the_kinds_of_update_handled_are_asked_for(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    too_old = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    fake_telegram.inject("answerCallbackQuery", 400, too_old)
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.push_callback_query(TRADER, "pressed-a-day-ago")  # refused: no apology
        query_id = fake_telegram.push_callback_query(TRADER, "old-button")
        await until(
            lambda: [a["callback_query_id"] for a in fake_telegram.callback_answers] == [query_id],
            what="the button press answered",
        )
        fake_telegram.push_update(
            "channel_post",
            {"message_id": 5, "date": int(time.time()), "chat": {"id": -77, "type": "channel"},
             "text": "/buy BTCUSDT 100"},
        )  # fmt: skip
        assert "Plans" in await bot.ask(TRADER, "/plans")
        await until_awaited(lambda: all_answered(bot.bot.db, 1), what="every answer sent")
    assert len(fake_telegram.messages_to(TRADER)) == 1  # the plans; no apology for the button
    asked = {tuple(kinds) for kinds in fake_telegram.allowed_updates_asked}
    assert asked == {tuple(ALLOWED_UPDATES)}
    assert set(ALLOWED_UPDATES) == {
        "message", "edited_message", "callback_query", "pre_checkout_query", "my_chat_member"
    }  # fmt: skip
    assert [next(iter(u.keys() - {"update_id"})) for u in fake_telegram.withheld] == [
        "channel_post"
    ]


# -- 9. one user's commands in the order sent ---------------------------------------------


async def test_one_users_commands_run_in_the_order_sent_while_other_users_pass(
    fake_telegram: FakeTelegram, bot_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        await bot.ask(OTHER_TRADER, "/start")
        trading = bot.bot.deps.trading
        entered, release = asyncio.Event(), asyncio.Event()
        read_balances = trading.balances

        async def slow_balances(user_id: int) -> Any:
            if user_id == TRADER:
                entered.set()
                await release.wait()
            return await read_balances(user_id)

        monkeypatch.setattr(trading, "balances", slow_balances)
        slow = fake_telegram.push_text(TRADER, "/balance")
        await asyncio.wait_for(entered.wait(), 15)
        fast = fake_telegram.push_text(TRADER, "/positions")
        other = fake_telegram.push_text(OTHER_TRADER, "/plans")
        # The other user's command passes both while the slow one holds its user's turn.
        assert "Plans" in await reply_to(bot, other)
        release.set()
        await reply_to(bot, fast)
        _, slow_id = fake_telegram.pushed[slow]
        _, fast_id = fake_telegram.pushed[fast]
        order = [m["reply_to"] for m in fake_telegram.sent_messages(TRADER)]
    assert order.index(slow_id) < order.index(fast_id)


# -- 3. blocks and unblocks, through the inbox --------------------------------------------


async def fetch_then_die(fake: FakeTelegram, home: Path, update_ids: list[int | None], *,
                         confirm: bool) -> None:  # fmt: skip
    """The poller fetches the batch through the real client (into the inbox) and dies
    before any handler runs; with `confirm`, after telling Telegram it has them."""
    async with built_bot(fake, home) as (bot, _):
        client = bot.application.bot
        await client.initialize()
        try:
            fetched = await client.get_updates(timeout=0)
            assert [update.update_id for update in fetched] == update_ids
            if confirm:
                await client.get_updates(offset=fetched[-1].update_id + 1, timeout=0)
        finally:
            await client.shutdown()


@pytest.mark.parametrize("confirmed", [True, False], ids=["confirmed", "delivered-again"])
async def test_blocks_and_unblocks_fetched_before_a_crash_are_applied_once_each_in_order(
    fake_telegram: FakeTelegram, bot_home: Path, caplog: pytest.LogCaptureFixture, confirmed: bool
) -> None:
    """Confirmed: Telegram will not send them again, the inbox must hold them. Not
    confirmed: Telegram sends them again (same update ids) beside the inbox's replay, and
    each is still applied once, the last one last."""
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
    changes = [fake_telegram.block(TRADER), fake_telegram.unblock(TRADER)]
    await fetch_then_die(fake_telegram, bot_home, changes, confirm=confirmed)
    caplog.set_level(logging.INFO, logger="lunara.telegram")
    async with running_bot(fake_telegram, bot_home) as bot:
        await until_awaited(lambda: no_unfinished(bot.bot.db), what="the changes applied")
        await until(lambda: fake_telegram.pending_updates() == 0, what="all confirmed")
        await until_awaited(lambda: no_unfinished(bot.bot.db), what="the changes applied")
        user = await users.get(bot.bot.db, TRADER)
    applied = [r.getMessage() for r in caplog.records if "the bot; marked" in r.getMessage()]
    assert applied == [f"user {TRADER} blocked the bot; marked inactive",
                       f"user {TRADER} unblocked the bot; marked active"]  # fmt: skip
    assert user is not None
    assert user.active is True


async def test_a_block_is_held_by_the_inbox_under_a_key_no_message_can_have(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """The inbox keeps a member change under minus its update id: no message id can
    equal it, so it never shadows a command of the same chat."""
    update_id = fake_telegram.block(TRADER)
    assert update_id is not None
    await fetch_then_die(fake_telegram, bot_home, [update_id], confirm=True)
    db = await open_database(bot_home / "lunara.db")
    try:
        async with db.execute("SELECT chat_id, message_id, state FROM handled_commands") as cur:
            rows = [tuple(row) for row in await cur.fetchall()]
    finally:
        await db.close()
    assert rows == [(TRADER, -update_id, handled.STARTED)]
