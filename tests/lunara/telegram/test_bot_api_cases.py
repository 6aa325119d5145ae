"""Telegram as it really behaves in groups and with blocked users, end to end against the
fake Bot API (Telegram's flood limits on)."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from lunara.storage import credentials, users
from tests.fakes.telegram_api import FakeTelegram, group_chat_id
from tests.lunara.telegram.conftest import TRADER, RunningBot, running_bot
from tests.waiting import until, until_equal


async def active(db: aiosqlite.Connection, user_id: int) -> bool | None:
    user = await users.get(db, user_id)
    return None if user is None else user.active


async def until_active_is(bot: RunningBot, user_id: int, wanted: bool) -> None:
    await until_equal(
        lambda: active(bot.bot.db, user_id), wanted, what=f"user {user_id} active={wanted}"
    )


async def orders_of(db: aiosqlite.Connection, user_id: int) -> int:
    async with db.execute("SELECT COUNT(*) FROM orders WHERE user_id = ?", (user_id,)) as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


async def test_a_command_addressed_to_another_bot_is_ignored_and_one_to_us_answered(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    group = group_chat_id(TRADER)
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.push_text(TRADER, "/buy@other_bot BTCUSDT 100", chat_type="group")
        fake_telegram.push_text(TRADER, "/nosuchcommand", chat_type="group")
        reply = await bot.ask(TRADER, f"/plans@{fake_telegram.username.upper()}", "group")
        assert "Plans" in reply
        assert await orders_of(bot.bot.db, TRADER) == 0  # nothing was bought
    assert fake_telegram.messages_to(group) == [reply]  # no answer to the other two


async def test_private_commands_in_a_group_answer_only_with_a_pointer_to_the_private_chat(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        for text in ("/balance", "/subscribe pro"):
            reply = await bot.ask(TRADER, text, chat_type="group")
            assert "only in" in reply, reply
            assert "private chat" in reply, reply
            assert f"https://t.me/{fake_telegram.username}" in reply
        assert "USDT" in await bot.ask(TRADER, "/balance")  # in private, the balances
    assert fake_telegram.invoices == []  # an invoice made in a group could never be paid


async def test_setkeys_in_a_group_is_deleted_and_the_user_told_to_revoke_the_keys(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    key, secret = "K" * 64, "S" * 64
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.push_text(TRADER, f"/setkeys {key} {secret}", chat_type="group")
        group_message = fake_telegram.pushed[max(fake_telegram.pushed)]
        await until(lambda: bool(fake_telegram.messages_to(group_chat_id(TRADER))))
        [warning] = fake_telegram.messages_to(group_chat_id(TRADER))
        stored = await credentials.info(bot.bot.db, TRADER, credentials.Exchange.BINANCE)
    assert "Revoke those keys" in warning
    assert group_message in fake_telegram.deleted
    assert stored is None
    assert key not in str(fake_telegram.sent)
    assert secret not in str(fake_telegram.sent)


async def test_blocking_makes_a_user_inactive_and_unblocking_or_start_active_again(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.block(TRADER)  # Telegram sends my_chat_member: kicked
        await until_active_is(bot, TRADER, False)
        fake_telegram.unblock(TRADER)  # my_chat_member: member
        await until_active_is(bot, TRADER, True)
        fake_telegram.block(TRADER)
        await until_active_is(bot, TRADER, False)
        fake_telegram.unblock(TRADER, tell=False)  # the update was lost; the user writes
        assert "Welcome" in await bot.ask(TRADER, "/start")
        assert await active(bot.bot.db, TRADER) is True


async def test_a_group_that_refuses_the_bot_deactivates_nobody(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        await bot.ask(TRADER, "/start")
        fake_telegram.block(group_chat_id(TRADER), tell=False)  # the bot was removed
        fake_telegram.push_text(TRADER, "/plans", chat_type="group")
        await until(lambda: fake_telegram.forbidden == 1, what="the refused answer")
        assert "Plans" in await bot.ask(TRADER, "/plans")  # and in private it answers
        assert await active(bot.bot.db, TRADER) is True
