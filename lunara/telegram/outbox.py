"""What the bot says goes through the outbox: written first, then sent at Telegram's pace.

`Outbox` writes messages (`lunara.storage.outbox`), split under Telegram's length
limit, and wakes the sender. `OutboxSender` is the one sender: it takes the next row of
each chat in priority order (answers, then notifications, then broadcasts) and sends
it (into its forum topic, if it has one) through python-telegram-bot, paced by
aiolimiter leaky buckets kept inside Telegram's flood limits (`SendLimits`): about 30
messages a second for the bot, 1 a second sustained to one private chat, 20 a minute
to one group. One chat's messages go
one at a time, in order, so the parts of a long answer arrive in order.

What Telegram answers decides what happens to a row:

- accepted: marked `sent`;
- 429 `retry_after`: the chat waits that long, however long it is (the wait is written
  to its rows, so a restart keeps it), and the whole bot pauses briefly in case the
  limit hit was the bot's own;
- 403 (the user blocked the bot): marked `blocked`, and the user marked inactive when
  it is their private chat (a group that removed the bot deactivates nobody);
- the group became a supergroup: its queued rows move to the new chat id (the service
  message announcing it moves them too, `lunara.telegram.chats`);
- 400 (refused for good): marked `failed`, logged;
- a timeout or a network error: tried again, with growing pauses, until it goes.

The last recipient of a broadcast tried, the admin who sent it gets a summary.
The sender runs only while this instance holds the poller lease, so two instances
never send the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import aiosqlite
from aiolimiter import AsyncLimiter
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from blueprint.backoff import backoff_delay
from lunara.storage import handled, users
from lunara.storage import outbox as store
from lunara.storage.database import RecordNotFound, transaction
from lunara.storage.outbox import BroadcastStart, BroadcastTally, Outgoing, Priority, State
from lunara.telegram import formatting as fmt

logger = logging.getLogger("lunara.telegram")

BATCH = 200
"""Rows looked at per read of the queue (the next row of up to this many chats)."""
RECHECK_S = 0.25
"""How soon to look again when rows wait only for their chat's pace."""
IDLE_S = 1.0
"""How soon to look again with nothing queued (rows another process may have written)."""
HOLD_ALL_S = 1.0
"""After any 429 the whole bot pauses this long: the limit hit may have been the bot's."""
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 300.0
"""Pauses before sending again to a chat Telegram could not be reached for."""
DRAIN_S = 7.0
"""On stop, how long the sends under way may take to finish (a client timeout and more)."""
MAX_IDLE_CHATS = 2_000
"""Pacing state kept for chats; the idle ones are dropped past this many."""


@dataclass(frozen=True)
class SendLimits:
    """The sender's pace: leaky buckets (a sustained rate, a short burst) kept inside
    Telegram's flood limits with room for network jitter."""

    per_second: float = 29.5  # the whole bot; Telegram allows about 30
    burst: int = 5
    private_per_second: float = 1.0  # one private chat; Telegram: 1 a second sustained
    private_burst: int = 2
    group_per_minute: float = 60 / 3.5  # one group; Telegram: 20 a minute
    group_burst: int = 2  # in any minute at most 2 + 60 / 3.5 ≈ 19 messages
    in_flight: int = 32  # sends under way at once

    @classmethod
    def unpaced(cls) -> SendLimits:
        """No pacing at all: for a server without Telegram's limits (benchmarks)."""
        fast = 1_000_000.0
        return cls(fast, 1_000, fast, 1_000, fast * 60, 1_000, 256)


TELEGRAM_LIMITS = SendLimits()


class Transport(Protocol):
    """How a row reaches Telegram (the bot's python-telegram-bot client); `thread_id`
    is the forum topic it goes to (None: the chat itself, or its General topic)."""

    async def send_text(
        self, chat_id: int, text: str, reply_to: int | None, thread_id: int | None = None
    ) -> None: ...

    async def send_invoice(
        self, chat_id: int, plan: str, reply_to: int | None, thread_id: int | None = None
    ) -> None: ...


def messages(
    chat_id: int,
    text: str,
    reply_to: int | None = None,
    priority: Priority | None = None,
    dedupe_key: str | None = None,
    thread_id: int | None = None,
) -> list[Outgoing]:
    """`text` as outbox rows: split under Telegram's limit, the first part threaded to
    `reply_to`, every part to forum topic `thread_id`; an answer (with `reply_to`) by
    default goes ahead of notifications."""
    if priority is None:
        priority = Priority.ANSWER if reply_to is not None else Priority.NOTICE
    return [
        Outgoing(chat_id, chunk, reply_to if index == 0 else None, priority,
                 dedupe_key=None if dedupe_key is None else f"{dedupe_key}:{index}",
                 thread_id=thread_id)
        for index, chunk in enumerate(fmt.split_message(text))
    ]  # fmt: skip


def in_topic(rows: Sequence[Outgoing], chat_id: int, thread_id: int | None) -> list[Outgoing]:
    """`rows`, those for `chat_id` put in its forum topic `thread_id`: an answer goes to
    the topic its command came from, every part of it (a part sent without the topic
    would land in the General topic)."""
    if thread_id is None:
        return list(rows)
    return [
        dataclasses.replace(row, thread_id=thread_id) if row.chat_id == chat_id else row
        for row in rows
    ]


class Outbox:
    """Writes messages to the outbox and wakes the sender."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.wakeup = asyncio.Event()  # something was queued, or a chat became free
        self.answer_queued = asyncio.Event()  # an answer was queued: look before the rest

    def _queued(self, rows: Sequence[Outgoing]) -> None:
        if any(row.priority is Priority.ANSWER for row in rows):
            self.answer_queued.set()
        self.wakeup.set()

    async def put(self, rows: Sequence[Outgoing]) -> None:
        await store.enqueue(self.db, rows)
        self._queued(rows)

    async def send(
        self,
        chat_id: int,
        text: str,
        reply_to: int | None = None,
        *,
        priority: Priority | None = None,
        dedupe_key: str | None = None,
    ) -> None:
        await self.put(messages(chat_id, text, reply_to, priority, dedupe_key))

    async def answer(
        self,
        chat_id: int,
        message_id: int,
        rows: Sequence[Outgoing],
        *,
        thread_id: int | None = None,
    ) -> None:
        """Queue the answer of a command (into the forum topic `thread_id` it came from)
        and mark the command answered, in one transaction."""
        rows = in_topic(rows, chat_id, thread_id)
        async with transaction(self.db):
            await store.enqueue(self.db, rows)
            await handled.finish(self.db, chat_id, message_id)
        self._queued(rows)

    async def broadcast(self, chat_id: int, message_id: int, text: str) -> BroadcastStart:
        """One row per active user; asked for again by the same command, the same one."""
        started = await store.start_broadcast(self.db, chat_id, message_id, text)
        if started.recipients:
            self.wakeup.set()
        else:
            await store.finish_broadcast(self.db, started.id)
        return started


def broadcast_summary(tally: BroadcastTally) -> str:
    return fmt.lines(
        "<b>Broadcast finished</b>",
        f"Sent: {tally.sent}",
        f"Blocked the bot (marked inactive): {tally.blocked}" if tally.blocked else None,
        f"Refused by Telegram: {tally.failed}" if tally.failed else None,
        f"Still queued (Telegram asked to wait; they go out when it allows): {tally.queued}"
        if tally.queued
        else None,
    )


def _seconds(delay: float | timedelta) -> float:
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


class OutboxSender:
    """Sends the outbox, paced, until stopped; see the module's docstring."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        outbox: Outbox,
        transport: Transport,
        limits: SendLimits = TELEGRAM_LIMITS,
        clock: Callable[[], float] = time.time,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        self.db = db
        # False while this instance is not sure it holds the instance lease (fencing):
        # what is queued stays queued for whoever holds it.
        self.may_send = may_send
        self.outbox = outbox
        self.transport = transport
        self.limits = limits
        self._clock = clock
        self._overall = AsyncLimiter(limits.burst, limits.burst / limits.per_second)
        self._chats: dict[int, AsyncLimiter] = {}
        self._busy: set[int] = set()  # chats with a send under way
        self._settled: set[int] = set()  # rows whose send ended since the queue was read
        self._held: dict[int, float] = {}  # chat -> when it may send again (429, failures)
        self._held_all_until = 0.0
        self._slots = asyncio.Semaphore(limits.in_flight)
        self._sends: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.flood_waits = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Send until `stop`; then let the sends under way finish (what is still queued
        stays queued for the next run)."""
        try:
            while not stop.is_set():
                try:
                    dispatched, waiting = await self._dispatch(stop)
                except sqlite3.Error as error:
                    logger.warning("could not read the outbox (%s); trying again",
                                   type(error).__name__)  # fmt: skip
                    dispatched, waiting = 0, True
                if not dispatched:
                    await self._idle(stop, waiting)
        finally:
            await self._finish_sends()

    async def _dispatch(self, stop: asyncio.Event) -> tuple[int, bool]:
        """Start sending the rows that may go now; (how many, whether others wait)."""
        self.outbox.wakeup.clear()
        self.outbox.answer_queued.clear()
        # Rows read now reflect every send ended before; one ending while this batch is
        # worked through is in `_settled`, so the batch never sends a row twice.
        self._settled.clear()
        now = self._clock()
        rows = await store.heads(self.db, now, BATCH)
        dispatched, waiting = 0, len(rows) == BATCH
        for row in rows:
            if stop.is_set():
                break
            if self.may_send is not None and not self.may_send():
                return dispatched, True
            if row.priority is not Priority.ANSWER and self.outbox.answer_queued.is_set():
                return dispatched, True  # an answer came in: it goes first
            now = self._clock()
            if now < self._held_all_until:
                await _wait(stop, self._held_all_until - now)
                return dispatched, True
            chat = row.chat_id
            if row.id in self._settled:
                continue
            pace = self._pace(chat)
            if chat in self._busy or self._held.get(chat, 0.0) > now or not pace.has_capacity():
                waiting = True
                continue
            await self._overall.acquire()
            await pace.acquire()
            await self._slots.acquire()
            self._busy.add(chat)
            task = asyncio.create_task(self._send(row))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            dispatched += 1
        return dispatched, waiting

    async def _idle(self, stop: asyncio.Event, waiting: bool) -> None:
        """Wait for something to send: a row queued, a chat free, a wait over, or a stop."""
        timeout = RECHECK_S if waiting else IDLE_S
        if not waiting:
            with contextlib.suppress(sqlite3.Error):
                due = await store.next_due(self.db)
                if due is not None:
                    timeout = min(timeout, max(RECHECK_S, due - self._clock()))
        waits = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self.outbox.wakeup.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in waits:
                pending.cancel()

    def _pace(self, chat_id: int) -> AsyncLimiter:
        pace = self._chats.get(chat_id)
        if pace is None:
            if len(self._chats) >= MAX_IDLE_CHATS:
                self._forget_idle_chats()
            limits = self.limits
            pace = (
                AsyncLimiter(limits.private_burst, limits.private_burst / limits.private_per_second)
                if chat_id > 0
                else AsyncLimiter(limits.group_burst, limits.group_burst * 60 / limits.group_per_minute)
            )  # fmt: skip
            self._chats[chat_id] = pace
        return pace

    def _forget_idle_chats(self) -> None:
        """Drop the pacing of chats whose bucket is empty (nothing sent lately)."""
        for chat, pace in list(self._chats.items()):
            if chat not in self._busy and pace.has_capacity(pace.max_rate):
                del self._chats[chat]
        now = self._clock()
        self._held = {chat: until for chat, until in self._held.items() if until > now}

    def _hold(self, chat_id: int, seconds: float) -> float:
        until = self._clock() + seconds
        self._held[chat_id] = max(self._held.get(chat_id, 0.0), until)
        return until

    async def _send(self, row: store.Queued) -> None:
        try:
            await self._attempt(row)
        except sqlite3.Error as error:
            # Sent or not, the outbox could not record it: it stays queued and goes again.
            logger.warning("could not record the outcome of a message to chat %d (%s)",
                           row.chat_id, type(error).__name__)  # fmt: skip
            self._hold(row.chat_id, RETRY_FIRST_S)
        finally:
            self._settled.add(row.id)
            self._busy.discard(row.chat_id)
            self._slots.release()
            self.outbox.wakeup.set()

    async def _attempt(self, row: store.Queued) -> None:
        try:
            if row.invoice is not None:
                await self.transport.send_invoice(
                    row.chat_id, row.invoice, row.reply_to, row.thread_id
                )
            elif row.text is not None:
                await self.transport.send_text(row.chat_id, row.text, row.reply_to, row.thread_id)
            else:
                raise LookupError("a queued message with nothing to send")
        except RetryAfter as error:
            wait = max(_seconds(error.retry_after), 0.0)
            self.flood_waits += 1
            self._held_all_until = max(self._held_all_until, self._clock() + min(wait, HOLD_ALL_S))
            await store.postpone(self.db, row.id, row.chat_id, self._hold(row.chat_id, wait))
            logger.warning("Telegram asked to wait %.0f s before sending to chat %d again",
                           wait, row.chat_id)  # fmt: skip
            return
        except ChatMigrated as error:
            moved = await store.move_chat(self.db, row.chat_id, error.new_chat_id)
            logger.info("chat %d became %d; %d queued messages follow it",
                        row.chat_id, error.new_chat_id, moved)  # fmt: skip
            return
        except Forbidden:
            await self._done(row, State.BLOCKED)
            return
        except BadRequest as error:
            logger.warning("Telegram refused a message to chat %d: %s", row.chat_id, error.message)
            await self._done(row, State.FAILED)
            return
        except TelegramError as error:  # timeouts, network errors, Telegram's own 5xx
            delay = backoff_delay(row.attempts + 1, RETRY_FIRST_S, RETRY_MAX_S)
            await store.postpone(self.db, row.id, row.chat_id, self._hold(row.chat_id, delay))
            logger.warning("could not send to chat %d (%s); trying again in %.1f s",
                           row.chat_id, type(error).__name__, delay)  # fmt: skip
            return
        except Exception as error:  # a bug: the message is given up, never sent in a loop
            reference = secrets.token_hex(4)
            logger.error("unexpected error sending to chat %d (ref %s)", row.chat_id, reference,
                         exc_info=error)  # fmt: skip
            await self._done(row, State.FAILED)
            return
        self.sent += 1
        await self._done(row, State.SENT)

    async def _done(self, row: store.Queued, state: State) -> None:
        """Record the outcome; with the last of a broadcast's first tries, its summary."""
        tally = None
        async with transaction(self.db):
            await store.mark(self.db, row.id, state)
            if state is State.BLOCKED and row.chat_id > 0:
                with contextlib.suppress(RecordNotFound):
                    await users.set_active(self.db, row.chat_id, False)
                    logger.info("user %d blocked the bot; marked inactive", row.chat_id)
            if row.broadcast_id is not None:
                tally = await store.finish_broadcast(self.db, row.broadcast_id)
                if tally is not None:
                    await store.enqueue(
                        self.db, messages(tally.chat_id, broadcast_summary(tally), tally.message_id)
                    )
        if tally is not None:
            self.outbox.answer_queued.set()

    async def _finish_sends(self) -> None:
        if not self._sends:
            return
        _, late = await asyncio.wait(set(self._sends), timeout=DRAIN_S)
        for task in late:  # sent or not: it stays queued and goes again on the next run
            task.cancel()
        if late:
            await asyncio.wait(late)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
