"""The outbox: every message written before it is sent, taken in priority order, once."""

from __future__ import annotations

import aiosqlite

from lunara.storage import outbox, users
from lunara.storage.outbox import Outgoing, Priority, State


def text(
    chat: int, words: str, priority: Priority = Priority.NOTICE, dedupe_key: str | None = None
) -> Outgoing:
    return Outgoing(chat, words, priority=priority, dedupe_key=dedupe_key)


async def head_texts(db: aiosqlite.Connection, now: float = 1e12) -> list[str | None]:
    return [row.text for row in await outbox.heads(db, now, 100)]


async def test_each_chat_gives_its_next_row_answers_first_then_by_age(
    db: aiosqlite.Connection,
) -> None:
    await outbox.enqueue(db, [text(1, "note 1a"), text(2, "note 2a"), text(1, "note 1b")])
    await outbox.enqueue(db, [text(2, "answer 2", Priority.ANSWER)])
    # Chat 2's answer overtakes its notification; chat 1 gives one row at a time, in order.
    assert await head_texts(db) == ["answer 2", "note 1a"]
    [answer, first] = await outbox.heads(db, 1e12, 100)
    await outbox.mark(db, answer.id, State.SENT)
    await outbox.mark(db, first.id, State.SENT)
    assert await head_texts(db) == ["note 2a", "note 1b"]  # oldest first across chats


async def test_a_row_with_a_dedupe_key_is_queued_once(db: aiosqlite.Connection) -> None:
    report = text(5, "crash report", dedupe_key="crash-report:at:5")
    await outbox.enqueue(db, [report])
    await outbox.enqueue(db, [report])  # queued again by a restart: ignored
    assert await head_texts(db) == ["crash report"]


async def test_a_postponed_chat_holds_all_its_rows_and_survives_as_not_before(
    db: aiosqlite.Connection,
) -> None:
    await outbox.enqueue(db, [text(1, "first"), text(1, "second"), text(2, "other")])
    [first, _] = await outbox.heads(db, 1000.0, 100)
    await outbox.postpone(db, first.id, 1, until=2000.0)
    assert await head_texts(db, 1500.0) == ["other"]
    assert await outbox.next_due(db) == 2000.0
    [again, _] = await outbox.heads(db, 2000.0, 100)
    assert again.id == first.id
    assert again.attempts == 1


async def test_an_answer_queued_to_a_held_chat_waits_for_the_hold(
    db: aiosqlite.Connection,
) -> None:
    """The hold is the chat's, not the row's: an answer queued later (after a restart,
    say) would otherwise go first by priority and skip a wait Telegram asked for."""
    await outbox.enqueue(db, [text(1, "notice")])
    [held] = await outbox.heads(db, 1000.0, 100)
    await outbox.postpone(db, held.id, 1, until=5000.0)
    await outbox.enqueue(db, [text(1, "answer", Priority.ANSWER), text(2, "other")])
    assert await head_texts(db, 4999.0) == ["other"]
    assert await head_texts(db, 5000.0) == ["answer", "other"]


async def test_a_migrated_group_takes_its_queued_rows_along(db: aiosqlite.Connection) -> None:
    await outbox.enqueue(db, [text(-5, "to the group"), text(-6, "another group")])
    assert await outbox.move_chat(db, -5, -1000000000005) == 1
    assert {row.chat_id for row in await outbox.heads(db, 1e12, 100)} == {-1000000000005, -6}


async def test_a_broadcast_is_one_row_per_active_user_and_started_once_per_command(
    db: aiosqlite.Connection,
) -> None:
    for user_id in (11, 12, 13):
        await users.register(db, user_id, None)
    await users.set_active(db, 13, False)
    started = await outbox.start_broadcast(db, 11, 900, "hello all")
    assert started.recipients == 2
    assert started.new
    again = await outbox.start_broadcast(db, 11, 900, "hello all")  # the command replayed
    assert again.id == started.id
    assert not again.new
    rows = await outbox.heads(db, 1e12, 100)
    assert sorted(row.chat_id for row in rows) == [11, 12]
    assert {row.text for row in rows} == {"hello all"}  # the text is the broadcast's
    assert {row.priority for row in rows} == {Priority.BROADCAST}


async def test_a_broadcast_finishes_once_every_recipient_was_tried(
    db: aiosqlite.Connection,
) -> None:
    for user_id in (11, 12, 13):
        await users.register(db, user_id, None)
    started = await outbox.start_broadcast(db, 11, 900, "hello all")
    rows = {row.chat_id: row for row in await outbox.heads(db, 1e12, 100)}
    await outbox.mark(db, rows[11].id, State.SENT)
    await outbox.mark(db, rows[12].id, State.BLOCKED)
    assert await outbox.finish_broadcast(db, started.id) is None  # 13 not tried yet
    await outbox.postpone(db, rows[13].id, 13, until=1e12)  # tried: Telegram said wait
    tally = await outbox.finish_broadcast(db, started.id)
    assert tally is not None
    assert (tally.sent, tally.blocked, tally.failed, tally.queued) == (1, 1, 0, 1)
    assert (tally.chat_id, tally.message_id) == (11, 900)
    assert await outbox.finish_broadcast(db, started.id) is None  # summarised once


async def test_rows_done_long_ago_are_pruned_and_queued_ones_never(
    db: aiosqlite.Connection,
) -> None:
    await outbox.enqueue(db, [text(1, "sent"), text(2, "waiting")], now=100.0)
    [sent, _] = await outbox.heads(db, 1e12, 100)
    await outbox.mark(db, sent.id, State.SENT, now=100.0)
    assert await outbox.prune(db, now=100.0 + outbox.KEEP_S + 1) == 1
    assert await outbox.counts(db) == {"queued": 1, "sent": 0, "blocked": 0, "failed": 0}
