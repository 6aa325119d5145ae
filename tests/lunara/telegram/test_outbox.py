"""The outbox end to end: the real python-telegram-bot against the Bot API with
Telegram's flood limits (tests/fakes/telegram_api.py), real SQLite."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import outbox as outbox_store
from lunara.storage import users
from tests.fakes.telegram_api import FakeTelegram, group_chat_id
from tests.lunara.telegram.conftest import ADMIN, STRANGER, TRADER, running_bot
from tests.waiting import until


async def register(db: aiosqlite.Connection, user_ids: range) -> None:
    for user_id in user_ids:
        await users.register(db, user_id, f"user{user_id}")


async def is_active(db: aiosqlite.Connection, user_id: int) -> bool:
    user = await users.get(db, user_id)
    assert user is not None
    return user.active


@pytest.mark.slow
async def test_notifications_to_a_hundred_users_at_once_are_paced_without_a_single_429(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    recipients = range(5000, 5100)
    async with running_bot(fake_telegram, bot_home) as bot:
        for user_id in recipients:
            await bot.bot.notify(user_id, f"your stop sold {user_id}")
        await until(lambda: len(fake_telegram.sent) >= len(recipients), timeout_s=30,
                        what="every notification")  # fmt: skip
    assert fake_telegram.too_many_requests == 0
    for user_id in recipients:
        assert fake_telegram.messages_to(user_id) == [f"your stop sold {user_id}"]


async def test_messages_to_one_user_arrive_in_order_at_the_chats_pace(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    texts = [f"notice {n}" for n in range(5)]
    async with running_bot(fake_telegram, bot_home) as bot:
        for text in texts:
            await bot.bot.notify(TRADER, text)
        await until(lambda: len(fake_telegram.messages_to(TRADER)) == 5, what="five notices")
    assert fake_telegram.messages_to(TRADER) == texts
    assert fake_telegram.too_many_requests == 0


@pytest.mark.slow
async def test_a_group_is_sent_no_faster_than_telegram_allows_a_group(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    group = group_chat_id(TRADER)
    async with running_bot(fake_telegram, bot_home) as bot:
        for n in range(3):
            await bot.bot.send(group, f"group notice {n}")
        await until(lambda: len(fake_telegram.messages_to(group)) == 3, what="three notices")
    assert fake_telegram.messages_to(group) == [f"group notice {n}" for n in range(3)]
    assert fake_telegram.too_many_requests == 0


@pytest.mark.slow
async def test_an_answer_goes_ahead_of_a_broadcast_under_way(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    recipients = range(7000, 7200)
    async with running_bot(fake_telegram, bot_home) as bot:
        await register(bot.bot.db, recipients)
        assert "Broadcasting to 200 users" in await bot.ask(ADMIN, "/broadcast maintenance")
        await until(lambda: len(fake_telegram.sent) > 20, what="the broadcast under way")
        assert "Plans" in await bot.ask(TRADER, "/plans")
        copies_before_the_answer = sum(1 for m in fake_telegram.sent if m["chat_id"] in recipients)
        await until(
            lambda: any("Broadcast finished" in m for m in fake_telegram.messages_to(ADMIN)),
            timeout_s=30,
            what="the end of the broadcast",
        )
    assert copies_before_the_answer < 100  # it did not wait for the broadcast
    assert Counter(m["chat_id"] for m in fake_telegram.sent if m["chat_id"] in recipients) == {
        user_id: 1 for user_id in recipients
    }
    assert fake_telegram.too_many_requests == 0


async def test_a_broadcast_skips_users_who_blocked_the_bot_and_tells_the_admin_the_tally(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    recipients = range(7000, 7030)
    blocked = {7003, 7011, 7029}
    async with running_bot(fake_telegram, bot_home) as bot:
        await register(bot.bot.db, recipients)
        await bot.ask(ADMIN, "/start")
        for user_id in blocked:
            fake_telegram.block(user_id, tell=False)
        assert "Broadcasting to 31 users" in await bot.ask(ADMIN, "/broadcast new plans soon")
        await until(
            lambda: any("Broadcast finished" in m for m in fake_telegram.messages_to(ADMIN)),
            timeout_s=30,
            what="the summary",
        )
        summary = fake_telegram.messages_to(ADMIN)[-1]
        assert "Sent: 28" in summary
        assert "Blocked the bot (marked inactive): 3" in summary
        for user_id in recipients:
            assert await is_active(bot.bot.db, user_id) == (user_id not in blocked)
        assert await is_active(bot.bot.db, ADMIN)  # whoever sent it stays active
        # The next broadcast goes to the active users only.
        assert "Broadcasting to 28 users" in await bot.ask(ADMIN, "/broadcast and again")
    for user_id in set(recipients) - blocked:
        assert fake_telegram.messages_to(user_id)[0] == "new plans soon"
    assert fake_telegram.forbidden == len(blocked)


async def test_a_flood_wait_holds_only_its_chat_and_is_waited_out(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)
        told_to_wait = time.time()
        await bot.bot.notify(TRADER, "your stop sold")  # the one told to wait
        await until(lambda: fake_telegram.call_count("sendMessage") == 1, what="the 429")
        for n in range(3):
            await bot.bot.notify(STRANGER, f"other news {n}")
        await until(lambda: len(fake_telegram.messages_to(STRANGER)) == 3, what="the others")
        assert fake_telegram.messages_to(TRADER) == []  # still waiting
        await until(lambda: fake_telegram.messages_to(TRADER) != [], what="the held one")
    [held] = fake_telegram.sent_messages(TRADER)
    assert held["text"] == "your stop sold"
    assert held["at"] >= told_to_wait + 3


async def test_a_flood_wait_longer_than_a_minute_is_kept_across_a_restart(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """The old code waited 60 s at most and then dropped the message; the outbox keeps
    the wait on the chat's rows, so a restart neither drops nor rushes it."""
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject(
            "sendMessage", 429, "Too Many Requests: retry after 90", retry_after=90
        )
        told_to_wait = time.time()
        await bot.bot.notify(TRADER, "your stop sold")
        await until(lambda: fake_telegram.call_count("sendMessage") == 1, what="the 429")
    async with running_bot(fake_telegram, bot_home) as bot:
        assert "Plans" in await bot.ask(STRANGER, "/plans")  # the bot sends on
        due = await outbox_store.next_due(bot.bot.db)
        assert due is not None
        assert due >= told_to_wait + 90
        assert (await outbox_store.counts(bot.bot.db))["queued"] == 1
    assert fake_telegram.messages_to(TRADER) == []


async def test_answers_to_a_group_that_became_a_supergroup_follow_it(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    supergroup = -1009999000001
    fake_telegram.migrate(group_chat_id(TRADER), supergroup)
    async with running_bot(fake_telegram, bot_home):
        fake_telegram.push_text(TRADER, "/plans", chat_type="group")
        await until(lambda: fake_telegram.messages_to(supergroup) != [], what="the answer")
    [answer] = fake_telegram.messages_to(supergroup)
    assert "Plans" in answer


async def test_nothing_is_sent_while_the_instance_is_not_sure_it_holds_the_lease(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Fencing: a bot that lost (or could not confirm) the instance lease sends nothing;
    what it queued stays queued and goes out once it may send again."""
    asked = 0
    allowed = False

    def may_send() -> bool:
        nonlocal asked
        asked += 1
        return allowed

    async with running_bot(fake_telegram, bot_home) as bot:
        bot.bot.sender.may_send = may_send
        await bot.bot.notify(TRADER, "held back")
        await until(lambda: asked >= 3, what="the sender to ask three times")
        assert fake_telegram.messages_to(TRADER) == []
        allowed = True
        await until(lambda: fake_telegram.messages_to(TRADER) == ["held back"],
                        what="the message once sending is allowed")  # fmt: skip
