"""Answers follow their chat: into the forum topic a command came from, and to the
supergroup a group became, every part of a long answer too. The real
python-telegram-bot against the fake Bot API, real SQLite."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from lunara.storage import outbox as outbox_store
from lunara.storage import users
from tests.fakes.telegram_api import FakeTelegram, group_chat_id
from tests.lunara.telegram.conftest import ADMIN, UNPACED, RunningBot, running_bot
from tests.waiting import until, until_equal

SUPERGROUP = -1009999000001
TOPIC = 77


async def many_long_named_users(db: aiosqlite.Connection) -> None:
    """Enough users, with names long once escaped, that /users answers in several parts."""
    for user_id in range(40_000, 40_050):
        await users.register(db, user_id, "&" * 64)


async def all_sent(bot: RunningBot) -> None:
    """Wait until the outbox holds nothing queued (every part of every answer went)."""

    async def queued() -> int:
        return (await outbox_store.counts(bot.bot.db))["queued"]

    await until_equal(queued, 0, what="nothing queued")


async def test_every_part_of_a_long_answer_goes_to_the_forum_topic_its_command_came_from(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    fake = friendly_telegram
    forum = group_chat_id(ADMIN)
    async with running_bot(fake, bot_home, send_limits=UNPACED) as bot:
        await many_long_named_users(bot.bot.db)
        fake.push_text(ADMIN, "/users", topic=TOPIC)
        await until(lambda: fake.messages_to(forum) != [], what="the answer")
        await all_sent(bot)
    parts = fake.sent_messages(forum)
    assert len(parts) >= 3
    assert [part["thread_id"] for part in parts] == [TOPIC] * len(parts)
    assert parts[0]["reply_to"] is not None
    assert parts[0]["text"].startswith("<b>Users</b>")


async def test_every_part_of_a_long_answer_to_a_group_that_became_a_supergroup_goes_there(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Telegram refuses the first part (400, migrate_to_chat_id): it and the parts
    queued behind it move to the supergroup, and nothing is left for the old id."""
    fake = friendly_telegram
    group = group_chat_id(ADMIN)
    fake.migrate(group, SUPERGROUP)
    async with running_bot(fake, bot_home, send_limits=UNPACED) as bot:
        await many_long_named_users(bot.bot.db)
        fake.push_text(ADMIN, "/users", chat_type="group")
        await until(lambda: fake.messages_to(SUPERGROUP) != [], what="the answer")
        await all_sent(bot)
    parts = fake.messages_to(SUPERGROUP)
    assert len(parts) >= 3
    assert parts[0].startswith("<b>Users</b>")
    assert fake.messages_to(group) == []
    assert "".join(parts).count("&amp;" * 64) == 50  # every user's row, once


async def test_the_migration_service_message_moves_what_is_queued_for_the_old_group(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    """Messages held for the old group (Telegram asked it to wait a minute) follow the
    service message to the supergroup at once, where that wait does not apply."""
    group = group_chat_id(ADMIN)
    async with running_bot(fake_telegram, bot_home) as bot:
        fake_telegram.inject("sendMessage", 429, "Too Many Requests: retry after 60",
                             retry_after=60)  # fmt: skip
        await bot.bot.send(group, "first notice")
        await until(lambda: fake_telegram.call_count("sendMessage") == 1, what="the 429")
        await bot.bot.send(group, "second notice")
        fake_telegram.migrate(group, SUPERGROUP, tell=True)
        await until(lambda: len(fake_telegram.messages_to(SUPERGROUP)) == 2, what="both")
    assert fake_telegram.messages_to(SUPERGROUP) == ["first notice", "second notice"]
    assert fake_telegram.messages_to(group) == []
