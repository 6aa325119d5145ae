"""A long flood wait (429 with a `retry_after` past a minute) end to end: the real
python-telegram-bot against the fake Bot API, real SQLite. The wait is not endured: the
sender of the second run reads a clock the test moves on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from lunara.storage import outbox as outbox_store
from lunara.telegram.outbox import TELEGRAM_LIMITS, OutboxSender
from lunara.telegram.polling import TelegramService
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import STRANGER, TOKEN, TRADER, RunningBot, built_bot
from tests.waiting import until, until_awaited, until_equal

WAIT_S = 90  # longer than the 60 s the bot once capped a flood wait at


class MovableClock:
    """Wall time plus whatever the test has moved it on by."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


@contextlib.asynccontextmanager
async def bot_on_clock(
    fake: FakeTelegram, home: Path, clock: MovableClock
) -> AsyncIterator[RunningBot]:
    """The bot running as `running_bot` runs it, its outbox sender reading `clock`."""
    async with built_bot(fake, home) as (bot, trading):
        bot.sender = OutboxSender(bot.db, bot.outbox, bot, TELEGRAM_LIMITS, clock=clock)
        stop = asyncio.Event()
        service = asyncio.create_task(TelegramService(bot).run(stop))
        engine = asyncio.create_task(trading.runner.run(stop))
        running = RunningBot(fake, bot, home)
        try:
            await until(lambda: fake.polls_by_token.get(TOKEN, 0) > 0, what="polling")
            yield running
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(service, engine, return_exceptions=True), 30)


async def test_a_flood_wait_past_a_minute_is_waited_out_across_a_restart_and_holds_new_answers(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    clock = MovableClock()
    async with bot_on_clock(fake_telegram, bot_home, clock) as bot:
        fake_telegram.inject("sendMessage", 429, f"Too Many Requests: retry after {WAIT_S}",
                             retry_after=WAIT_S)  # fmt: skip
        await bot.bot.notify(TRADER, "your stop sold")
        await until(lambda: fake_telegram.call_count("sendMessage") == 1, what="the 429")
    # A new run, while the wait still holds: the trader asks something.
    async with bot_on_clock(fake_telegram, bot_home, clock) as bot:
        fake_telegram.push_text(TRADER, "/plans", username="trader")
        answered = await _queued_answer(bot, TRADER)
        assert "Plans" in await bot.ask(STRANGER, "/plans")  # sent after the trader's was queued
        assert fake_telegram.messages_to(TRADER) == []  # neither the notice nor the answer
        # STRANGER's row is marked sent once Telegram's answer is back in the bot, which
        # can be a moment after the fake took the message: the trader's two stay queued.
        await until_equal(lambda: queued(bot), 2, what="the trader's two answers queued")
        clock.ahead = WAIT_S + 1.0  # the wait is over
        await until(lambda: len(fake_telegram.messages_to(TRADER)) == 2, what="both")
    texts = fake_telegram.messages_to(TRADER)
    assert sorted(texts, key=len) == sorted(["your stop sold", answered], key=len)
    assert fake_telegram.call_count("sendMessage") == 1 + 1 + 2  # the 429, STRANGER's, both
    assert fake_telegram.too_many_requests == 0


async def queued(bot: RunningBot) -> int:
    return (await outbox_store.counts(bot.bot.db))["queued"]


async def _queued_answer(bot: RunningBot, chat_id: int) -> str:
    """Wait until the answer to `chat_id`'s command is in the outbox; its text."""
    found: list[str] = []

    async def look() -> bool:
        async with bot.bot.db.execute(
            "SELECT text FROM outbox WHERE chat_id = ? AND priority = 0 AND state = 'queued'",
            (chat_id,),
        ) as cursor:
            found[:] = [str(row[0]) for row in await cursor.fetchall()]
        return bool(found)

    await until_awaited(look, what="the answer queued")
    return found[0]
