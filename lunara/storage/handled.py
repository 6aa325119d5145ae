"""Telegram commands taken and answered: each command is answered once, even across crashes.

The same holds for the service message of a completed payment (Telegram sends it once):
it is taken, recorded and thanked for exactly like a command; for a plain text in a
private chat, answered with a hint (its words are not kept); and for an edited command
and a user blocking or unblocking the bot, which have no message id of their own and
are kept under minus their update id (`lunara.telegram.updates`). "Command" below means
any of them.

python-telegram-bot confirms a batch of updates to Telegram (with the next getUpdates
offset) as soon as it has fetched them, before their handlers have run; and the bot can
die after answering a command but before confirming it. So a command is written here
(`take`, state `started`, with the update itself) as soon as it is fetched, before the
batch is confirmed (the client does it: `lunara.telegram.inbox.InboxBot`); `begin` is
called as it is worked on (and records a command a replay brought that was never taken);
it is marked `answered` after its replies are sent:

- a command Telegram delivers again that is already `answered` is skipped;
- on start, commands left `started` by a run that died (or that stopped before it began
  them) are handed to the handlers again (`unfinished`), and so, while running, is a
  command whose answer could not be sent (Telegram unreachable past every retry), or a
  payment the database could not record; this is safe because the commands with effects
  are idempotent (a `/buy` is keyed by its message, a `/sell` by its position, a payment
  by its charge id).

A command that carries a secret (`/setkeys`) is recorded without its update, so its text
is never stored; if the bot dies while handling it, the trader sends it again.
Telegram forgets undelivered updates after 24 hours; rows older than `KEEP_S` are pruned.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite

from lunara.storage.database import now_s, transaction
from lunara.storage.rows import fetch_one

KEEP_S = 2 * 24 * 3600.0
STARTED = "started"
ANSWERED = "answered"


async def take(
    db: aiosqlite.Connection,
    commands: Sequence[tuple[int, int, int, str | None]],
    now: float | None = None,
) -> None:
    """Record fetched commands (chat, message, user, update) as `started`, in one
    transaction, before Telegram is told they arrived; a command already known (delivered
    again) keeps its state."""
    taken_at = now_s() if now is None else now
    async with transaction(db):
        await db.executemany(
            "INSERT OR IGNORE INTO handled_commands VALUES (?, ?, ?, ?, ?, ?)",
            [
                (chat, message, user, STARTED, update, taken_at)
                for chat, message, user, update in commands
            ],
        )


async def begin(
    db: aiosqlite.Connection,
    chat_id: int,
    message_id: int,
    user_id: int,
    update_json: str | None,
    now: float | None = None,
) -> float | None:
    """Record the command as taken; returns when it was taken (fetched, or now if it was
    not taken before), or None if it was answered already (skip it)."""
    taken_at = now_s() if now is None else now
    async with transaction(db):
        row = await fetch_one(
            db,
            "SELECT state, handled_at FROM handled_commands WHERE chat_id = ? AND message_id = ?",
            (chat_id, message_id),
        )
        if row is not None:
            return None if str(row[0]) == ANSWERED else float(row[1])
        await db.execute(
            "INSERT INTO handled_commands VALUES (?, ?, ?, ?, ?, ?)",
            (chat_id, message_id, user_id, STARTED, update_json, taken_at),
        )
    return taken_at


async def finish(db: aiosqlite.Connection, chat_id: int, message_id: int) -> None:
    """The command's replies were sent: forget its update, remember that it was answered."""
    async with transaction(db):
        await db.execute(
            "UPDATE handled_commands SET state = ?, update_json = NULL"
            " WHERE chat_id = ? AND message_id = ?",
            (ANSWERED, chat_id, message_id),
        )


async def unfinished(db: aiosqlite.Connection, taken_before: float | None = None) -> list[str]:
    """Updates of commands taken but not answered (before `taken_before`), oldest first."""
    cutoff = now_s() if taken_before is None else taken_before
    rows = await db.execute_fetchall(
        "SELECT update_json FROM handled_commands WHERE state = ? AND update_json IS NOT NULL"
        " AND handled_at <= ? ORDER BY handled_at",
        (STARTED, cutoff),
    )
    return [str(row[0]) for row in rows]


async def prune(db: aiosqlite.Connection, now: float | None = None) -> int:
    """Forget commands older than `KEEP_S`; returns how many."""
    cutoff = (now_s() if now is None else now) - KEEP_S
    async with transaction(db):
        cursor = await db.execute("DELETE FROM handled_commands WHERE handled_at < ?", (cutoff,))
    return int(cursor.rowcount or 0)
