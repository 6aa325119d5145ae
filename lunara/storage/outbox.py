"""Every message the bot sends, written down before it is sent: the outbox.

A message (an answer to a command, a notification, one recipient's copy of a
broadcast, a crash report, an invoice) is a row, `queued`, committed before anything
is sent; the sender (`lunara.telegram.outbox`) sends the rows and marks each `sent`
once Telegram accepted it, `blocked` when the user blocked the bot (403), `failed` when
Telegram refused it for good (400). A bot killed at any moment loses no message: what
is queued is sent by the next run. The one duplicate it cannot prevent is a message
Telegram accepted but the bot had not yet marked sent when it died (the Bot API has no
idempotent send).

An answer is written in the transaction that marks its command answered
(`lunara.storage.handled`), so a command is either answered and its answer queued, or
neither. Rows that carry a `dedupe_key` are written once whatever the number of tries
(a crash report owed since the last run). A broadcast is a `broadcasts` row plus one
outbox row per recipient, all in one transaction; it is keyed by the command that asked
for it, so a command answered again after a crash does not broadcast twice.

Rows leave the queue in priority order (answers, then notifications, then broadcasts),
oldest first; one chat's rows in that order too, one at a time (`heads`). A chat
Telegram told to wait (429) has its rows' `not_before` moved, which survives a restart
and holds the chat's later rows too, however long the wait.
Rows done more than `KEEP_S` ago are pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

import aiosqlite

from lunara.storage.database import now_s, transaction
from lunara.storage.rows import RowCodec, fetch_one

KEEP_S = 2 * 24 * 3600.0


class Priority(IntEnum):
    """Lower goes first: a trader waiting for an answer goes ahead of everything else."""

    ANSWER = 0
    NOTICE = 1
    BROADCAST = 2


class State(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    BLOCKED = "blocked"  # the user blocked the bot (403)
    FAILED = "failed"  # Telegram refused it for good (400)


@dataclass(frozen=True)
class Outgoing:
    """One message to write to the outbox: a text (HTML, at most one Telegram message),
    or with `invoice` the name of a plan whose Stars invoice is sent instead; with
    `thread_id`, into that topic of a forum supergroup."""

    chat_id: int
    text: str | None = None
    reply_to: int | None = None
    priority: Priority = Priority.NOTICE
    invoice: str | None = None
    dedupe_key: str | None = None
    thread_id: int | None = None


@dataclass(frozen=True)
class Queued:
    """A queued row as the sender sees it."""

    id: int
    chat_id: int
    priority: Priority
    text: str | None
    invoice: str | None
    reply_to: int | None
    broadcast_id: int | None
    attempts: int
    thread_id: int | None = None


_QUEUED = RowCodec(Queued)


@dataclass(frozen=True)
class BroadcastStart:
    id: int
    recipients: int
    new: bool  # False: this command had started it already (answered again after a crash)


@dataclass(frozen=True)
class BroadcastTally:
    """Where a broadcast stands: rows sent, blocked, failed, and still queued."""

    id: int
    chat_id: int
    message_id: int
    sent: int
    blocked: int
    failed: int
    queued: int


async def enqueue(
    db: aiosqlite.Connection, messages: Sequence[Outgoing], now: float | None = None
) -> None:
    """Queue `messages` in one transaction (joining the caller's, if any); a message whose
    `dedupe_key` is already in the outbox is not queued again."""
    if not messages:
        return
    at = now_s() if now is None else now
    async with transaction(db):
        await db.executemany(
            "INSERT OR IGNORE INTO outbox (chat_id, priority, text, invoice, reply_to,"
            " dedupe_key, thread_id, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (m.chat_id, int(m.priority), m.text, m.invoice, m.reply_to, m.dedupe_key,
                 m.thread_id, State.QUEUED.value, at)
                for m in messages
            ],
        )  # fmt: skip


async def heads(db: aiosqlite.Connection, now: float, limit: int) -> list[Queued]:
    """The next row of each chat (by priority, then age) that may go now, best first.

    A chat is held until the latest `not_before` of its queued rows: an answer queued
    after Telegram told the chat to wait (in this run or an earlier one) waits with it,
    rather than going ahead at once and being refused again."""
    return await _QUEUED.all(
        db,
        "SELECT o.id, o.chat_id, o.priority, COALESCE(o.text, b.text) AS text, o.invoice,"
        " o.reply_to, o.broadcast_id, o.attempts, o.thread_id FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY chat_id ORDER BY priority, id) AS place,"
        "   MAX(not_before) OVER (PARTITION BY chat_id) AS held_until"
        "  FROM outbox WHERE state = 'queued'"
        ") AS o LEFT JOIN broadcasts AS b ON b.id = o.broadcast_id"
        " WHERE o.place = 1 AND o.held_until <= ? ORDER BY o.priority, o.id LIMIT ?",
        (now, limit),
    )


async def next_due(db: aiosqlite.Connection) -> float | None:
    """When the earliest postponed row may go (None: nothing queued is postponed)."""
    row = await fetch_one(
        db, "SELECT MIN(not_before) FROM outbox WHERE state = 'queued' AND not_before > 0"
    )
    return None if row is None or row[0] is None else float(row[0])


async def mark(
    db: aiosqlite.Connection, row_id: int, state: State, now: float | None = None
) -> None:
    """The row is done: sent, blocked or failed."""
    async with transaction(db):
        await db.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, done_at = ?"
            " WHERE id = ? AND state = 'queued'",
            (state.value, now_s() if now is None else now, row_id),
        )


async def postpone(db: aiosqlite.Connection, row_id: int, chat_id: int, until: float) -> None:
    """The row was not sent (Telegram said wait, or could not be reached): count the try,
    and hold every queued row of its chat until `until`."""
    async with transaction(db):
        await db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,))
        await db.execute(
            "UPDATE outbox SET not_before = MAX(not_before, ?)"
            " WHERE chat_id = ? AND state = 'queued'",
            (until, chat_id),
        )


async def move_chat(db: aiosqlite.Connection, old_chat_id: int, new_chat_id: int) -> int:
    """A group became a supergroup under a new id: its queued rows go to the new chat, and
    so does the summary of a broadcast asked for there. Returns the rows moved."""
    async with transaction(db):
        cursor = await db.execute(
            # A new chat: a flood wait Telegram gave the old one does not hold it.
            "UPDATE outbox SET chat_id = ?, not_before = 0 WHERE chat_id = ? AND state = 'queued'",
            (new_chat_id, old_chat_id),
        )
        await db.execute(
            "UPDATE OR IGNORE broadcasts SET chat_id = ? WHERE chat_id = ? AND finished_at IS NULL",
            (new_chat_id, old_chat_id),
        )
    return int(cursor.rowcount or 0)


async def start_broadcast(
    db: aiosqlite.Connection, chat_id: int, message_id: int, text: str, now: float | None = None
) -> BroadcastStart:
    """Queue `text` for every active user, asked for by message `message_id` in `chat_id`;
    a broadcast that command started already is returned as it is."""
    at = now_s() if now is None else now
    async with transaction(db):
        known = await fetch_one(
            db,
            "SELECT id, recipients FROM broadcasts WHERE chat_id = ? AND message_id = ?",
            (chat_id, message_id),
        )
        if known is not None:
            return BroadcastStart(int(known[0]), int(known[1]), new=False)
        cursor = await db.execute(
            "INSERT INTO broadcasts (chat_id, message_id, text, recipients, created_at)"
            " VALUES (?, ?, ?, 0, ?)",
            (chat_id, message_id, text, at),
        )
        broadcast_id = int(cursor.lastrowid or 0)
        cursor = await db.execute(
            "INSERT INTO outbox (chat_id, priority, broadcast_id, state, created_at)"
            " SELECT telegram_id, ?, ?, ?, ? FROM users WHERE active = 1"
            " ORDER BY created_at, telegram_id",
            (int(Priority.BROADCAST), broadcast_id, State.QUEUED.value, at),
        )
        recipients = int(cursor.rowcount or 0)
        await db.execute(
            "UPDATE broadcasts SET recipients = ? WHERE id = ?", (recipients, broadcast_id)
        )
    return BroadcastStart(broadcast_id, recipients, new=True)


async def finish_broadcast(
    db: aiosqlite.Connection, broadcast_id: int, now: float | None = None
) -> BroadcastTally | None:
    """Once every recipient's row of a broadcast has been tried, close it and return its
    tally (once: None afterwards, and None while some recipient was not tried yet)."""
    async with transaction(db):
        broadcast = await fetch_one(
            db,
            "SELECT chat_id, message_id FROM broadcasts WHERE id = ? AND finished_at IS NULL",
            (broadcast_id,),
        )
        if broadcast is None:
            return None
        untried = await fetch_one(
            db,
            "SELECT 1 FROM outbox WHERE broadcast_id = ? AND state = 'queued' AND attempts = 0"
            " LIMIT 1",
            (broadcast_id,),
        )
        if untried is not None:
            return None  # someone not tried yet
        rows = await db.execute_fetchall(
            "SELECT state, COUNT(*) FROM outbox WHERE broadcast_id = ? GROUP BY state",
            (broadcast_id,),
        )
        counts = {str(row[0]): int(row[1]) for row in rows}
        await db.execute(
            "UPDATE broadcasts SET finished_at = ? WHERE id = ?",
            (now_s() if now is None else now, broadcast_id),
        )
    return BroadcastTally(
        broadcast_id,
        int(broadcast[0]),
        int(broadcast[1]),
        sent=counts.get(State.SENT.value, 0),
        blocked=counts.get(State.BLOCKED.value, 0),
        failed=counts.get(State.FAILED.value, 0),
        queued=counts.get(State.QUEUED.value, 0),
    )


async def counts(db: aiosqlite.Connection) -> dict[str, int]:
    """How many rows are in each state (for metrics and benchmarks)."""
    rows = await db.execute_fetchall("SELECT state, COUNT(*) FROM outbox GROUP BY state")
    found = {state.value: 0 for state in State}
    found.update({str(row[0]): int(row[1]) for row in rows})
    return found


async def prune(db: aiosqlite.Connection, now: float | None = None) -> int:
    """Forget rows done more than `KEEP_S` ago, and broadcasts with no row left."""
    cutoff = (now_s() if now is None else now) - KEEP_S
    async with transaction(db):
        cursor = await db.execute(
            "DELETE FROM outbox WHERE state != 'queued' AND done_at < ?", (cutoff,)
        )
        await db.execute(
            "DELETE FROM broadcasts WHERE finished_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM outbox WHERE outbox.broadcast_id = broadcasts.id)",
            (cutoff,),
        )
    return int(cursor.rowcount or 0)
