"""Plan expiry notices end to end: the bot running against the fake Bot API (the real
python-telegram-bot), the notices service beside it, real SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lunara.plan_expiry import PlanExpiryNotices, tell_expired
from lunara.storage import users
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, STRANGER, TRADER, UNPACED, running_bot
from tests.waiting import until

ENDED = "plan ended on"


async def test_a_plan_that_ended_is_told_once_and_a_renewed_one_again_when_it_ends(
    friendly_telegram: FakeTelegram, bot_home: Path
) -> None:
    fake = friendly_telegram
    now = time.time()
    async with running_bot(fake, bot_home, send_limits=UNPACED) as bot:
        db = bot.bot.db
        for user_id in (TRADER, STRANGER, ADMIN):
            await users.register(db, user_id, f"user{user_id}")
        await users.set_plan(db, TRADER, "pro", now - 5)  # ended
        await users.set_plan(db, STRANGER, "elite", now + 3600)  # still running
        await users.set_plan(db, ADMIN, "pro", now - 5)
        await users.set_active(db, ADMIN, False)  # blocked the bot: not told
        stop = asyncio.Event()
        notices = PlanExpiryNotices(db, bot.bot.outbox.wakeup.set, every_s=0.05)
        service = asyncio.create_task(notices.run(stop))
        try:
            await until(lambda: fake.messages_to(TRADER) != [], what="the notice")
            for _ in range(5):  # the service looks again and again: nothing new
                assert await tell_expired(db, time.time()) == 0
            # Renewed after the end, and ended again: a new end, told in its turn.
            await users.set_plan(db, TRADER, "elite", time.time() - 1)
            await until(lambda: len(fake.messages_to(TRADER)) == 2, what="the second")
        finally:
            stop.set()
            await service
    first, second = fake.messages_to(TRADER)
    assert f"<b>Pro</b> {ENDED}" in first
    assert "/subscribe pro" in first
    assert f"<b>Elite</b> {ENDED}" in second
    assert fake.messages_to(STRANGER) == []
    assert fake.messages_to(ADMIN) == []
