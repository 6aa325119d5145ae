"""Telegram commands already answered, so a command delivered again is not answered twice.

Telegram delivers an update until the poller confirms it with the next offset. When the
bot dies after answering a command but before that confirmation, the next run receives
the command again; the bot looks it up here and stays silent. A command is recorded
after its replies are sent: one that was interrupted half-way is run again, which is
safe because the commands with effects are idempotent (a `/buy` is keyed by its message,
a `/sell` by its position, a payment by its charge id).

Telegram forgets undelivered updates after 24 hours; rows older than `KEEP_S` are pruned.
"""

from __future__ import annotations

import aiosqlite

from lunara.storage.database import now_s, transaction

KEEP_S = 2 * 24 * 3600.0


async def was_handled(db: aiosqlite.Connection, chat_id: int, message_id: int) -> bool:
    async with db.execute(
        "SELECT 1 FROM handled_commands WHERE chat_id = ? AND message_id = ?",
        (chat_id, message_id),
    ) as cursor:
        return await cursor.fetchone() is not None


async def mark_handled(
    db: aiosqlite.Connection, chat_id: int, message_id: int, user_id: int, now: float | None = None
) -> None:
    async with transaction(db):
        await db.execute(
            "INSERT OR IGNORE INTO handled_commands VALUES (?, ?, ?, ?)",
            (chat_id, message_id, user_id, now_s() if now is None else now),
        )


async def prune(db: aiosqlite.Connection, now: float | None = None) -> int:
    """Forget commands older than `KEEP_S`; returns how many."""
    cutoff = (now_s() if now is None else now) - KEEP_S
    async with transaction(db):
        cursor = await db.execute("DELETE FROM handled_commands WHERE handled_at < ?", (cutoff,))
    return int(cursor.rowcount or 0)
