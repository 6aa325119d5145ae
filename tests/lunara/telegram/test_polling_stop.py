"""A batch Telegram hands over while polling stops: held in the inbox, handed to no
updater (which would drop it, logging a CRITICAL "Updater stopped unexpectedly"), and
answered by the next run. The real python-telegram-bot against the fake Bot API, real
SQLite."""

from __future__ import annotations

from pathlib import Path

from lunara.storage import handled
from lunara.telegram.inbox import InboxBot
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import TRADER, built_bot, running_bot
from tests.waiting import until


async def test_a_batch_fetched_while_polling_stops_is_held_and_answered_by_the_next_run(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with built_bot(fake_telegram, bot_home) as (bot, _trading):
        client = bot.application.bot
        assert isinstance(client, InboxBot)
        await client.initialize()
        fake_telegram.push_text(TRADER, "/plans", username="trader")
        client.polling_stops(True)
        assert await client.get_updates(timeout=0) == ()  # nothing for the stopping updater
        assert len(await handled.unfinished(bot.db)) == 1  # but the inbox holds it
        client.polling_stops(False)
        assert len(await client.get_updates(timeout=0)) == 1  # unconfirmed: delivered again
        await client.shutdown()
    async with running_bot(fake_telegram, bot_home):
        await until(lambda: fake_telegram.messages_to(TRADER), what="/plans answered")
    answers = fake_telegram.messages_to(TRADER)
    assert len(answers) == 1
    assert "Plans" in answers[0]
