"""A forged inbox row in a backup is not answered after a restore.

The bot answers, on start, every command its inbox holds as taken but not answered
(exactly-once answering across crashes). A backup carrying such a row, a /broadcast
"from the admin", would have the real bot send it to every user; a restore leaves
unfinished inbox rows out, so it is never sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import handled, users
from lunara.storage import outbox as outbox_store
from lunara.storage.backup import backup_database, restore_database
from lunara.storage.database import open_database
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, TRADER, UNPACED, running_bot
from tests.waiting import until, until_awaited

FORGED_TEXT = "/broadcast send your coins to bc1q-attacker"
FORGED_MESSAGE_ID = 777_000


def forged_update() -> str:
    """The inbox's stored form of an update: a /broadcast as the admin's own message."""
    sender = {"id": ADMIN, "is_bot": False, "first_name": "Admin"}
    command_length = len(FORGED_TEXT.split()[0])
    return json.dumps(
        {
            "update_id": 900_000,
            "message": {
                "message_id": FORGED_MESSAGE_ID,
                "date": int(time.time()),
                "chat": {"id": ADMIN, "type": "private"},
                "from": sender,
                "text": FORGED_TEXT,
                "entities": [{"type": "bot_command", "offset": 0, "length": command_length}],
            },
        }
    )


async def _seed(database: Path) -> None:
    db = await open_database(database)
    try:
        await users.register(db, TRADER, "trader")
        await handled.take(db, [(ADMIN, FORGED_MESSAGE_ID, ADMIN, forged_update())])
    finally:
        await db.close()


async def _queued(db: aiosqlite.Connection) -> int:
    return (await outbox_store.counts(db))["queued"]


@pytest.mark.parametrize("restored", [False, True], ids=["left-in-the-inbox", "restored"])
async def test_a_forged_broadcast_in_the_inbox_is_sent_only_if_not_restored(
    fake_telegram: FakeTelegram, bot_home: Path, restored: bool
) -> None:
    database = bot_home / "lunara.db"
    if restored:
        crafted = bot_home.parent / "crafted.db"
        await _seed(bot_home.parent / "elsewhere.db")
        await asyncio.to_thread(backup_database, bot_home.parent / "elsewhere.db", crafted)
        result = await asyncio.to_thread(restore_database, crafted, database, is_running=False)
        assert result.dropped_commands == 1
    else:
        await _seed(database)

    def broadcast_reached_trader() -> bool:
        return any("bc1q-attacker" in text for text in fake_telegram.messages_to(TRADER))

    async with running_bot(fake_telegram, bot_home, send_limits=UNPACED) as bot:
        if not restored:
            # The replay is real: this is what a restore must not bring back.
            await until(broadcast_reached_trader, what="the replayed broadcast")
            return
        # The inbox was replayed before polling began; ask something and let the outbox
        # drain, so anything the replay queued would have been sent by now.
        await bot.ask(TRADER, "/help")

        async def drained() -> bool:
            return await _queued(bot.bot.db) == 0

        await until_awaited(drained, 15, "the outbox drained")
        assert await _queued(bot.bot.db) == 0
        assert not broadcast_reached_trader()
        async with bot.bot.db.execute(
            "SELECT COUNT(*) FROM handled_commands WHERE message_id = ?", (FORGED_MESSAGE_ID,)
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        assert row[0] == 0
