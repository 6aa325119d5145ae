"""The inbox: every update that matters is answered exactly once, across crashes too.

python-telegram-bot confirms a batch of updates to Telegram (the next getUpdates offset)
before their handlers run, and the bot can die after answering but before confirming.
So `InboxBot`, the Bot API client, writes each entry of a batch (what the inbox holds of
an update: `lunara.telegram.updates`) to the inbox (`lunara.storage.handled`) before the
batch is confirmed; `Inbox.answer_once` works an entry out unless it was answered
already, and queues its answer in the outbox in the transaction that marks it answered;
`Inbox.unanswered` hands back what a run that died, or an answer that failed, left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite
from telegram import Bot, Update
from telegram.error import NetworkError, TelegramError
from telegram.ext import ExtBot

from lunara.dependencies import Watch
from lunara.storage import handled
from lunara.storage.outbox import Outgoing
from lunara.telegram.chats import topic_of
from lunara.telegram.errors import is_retryable, mark_telegram
from lunara.telegram.outbox import Outbox
from lunara.telegram.updates import Entry, inbox_entry_of

logger = logging.getLogger("lunara.telegram")

Apologies = Callable[[object, BaseException], list[Outgoing]]


FENCED_POLL_PAUSE_S = 0.5
"""How long the poller waits, instead of polling, while the instance lease is unconfirmed."""


class InboxBot(ExtBot[None]):
    """The Bot API client, writing every inbox entry it fetches to the inbox before
    python-telegram-bot confirms it to Telegram with the next getUpdates offset: an
    update Telegram will not deliver again is one we hold."""

    __slots__ = ("_closing", "_may_poll", "_take", "_watch")

    def __init__(
        self,
        *args: Any,
        take: Callable[[Sequence[Update]], Awaitable[None]],
        watch: Watch,
        may_poll: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._take = take
        self._watch = watch  # Telegram's reachability for `lunara status`
        self._may_poll = may_poll  # False while the instance lease is unconfirmed
        self._closing = False  # while polling stops: a batch fetched then is held back

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        if self._may_poll is not None and not self._may_poll():
            # Fencing: this instance is not sure it still holds the instance lease (it was
            # paused, or lost it): no poll, which would cut the live instance's short.
            await asyncio.sleep(FENCED_POLL_PAUSE_S)
            return ()
        return await self._fetch(*args, **kwargs)

    def polling_stops(self, stopping: bool) -> None:
        """Polling is being stopped (True), or starts again (False)."""
        self._closing = stopping

    async def _fetch(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        try:
            updates = await super().get_updates(*args, **kwargs)
        except TelegramError as error:
            mark_telegram(self._watch, error)
            raise
        self._watch.ok()
        if updates:
            try:
                await self._take(updates)
            except sqlite3.Error as error:
                # Not confirmed: the updater fetches the same batch again after a pause.
                raise NetworkError(
                    f"could not record the fetched updates ({type(error).__name__})"
                ) from error
            if self._closing:
                # The updater is stopping and would drop this batch, logging it as
                # CRITICAL. It is in the inbox, and unconfirmed, so Telegram delivers it
                # again to the next poll: nothing is lost by handing over nothing.
                return ()
        return updates


class Inbox:
    """Takes the entries of fetched updates, answers each once, gives back the unanswered."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        outbox: Outbox,
        apologies: Apologies,
        username: Callable[[], str],
    ) -> None:
        self.db = db
        self.outbox = outbox
        self._apologies = apologies  # what an unexpected error is answered with
        self._username = username  # the bot's, from getMe: known once it is initialized
        self.in_hand: set[tuple[int, int]] = set()  # (chat, key) being answered now
        self.stopping = False  # set once the bot is shutting down: start no new answers

    def entry_of(self, update: Update) -> Entry | None:
        """What the inbox holds of `update` (`lunara.telegram.updates`), if anything."""
        return inbox_entry_of(update, self._username())

    async def take(self, updates: Sequence[Update]) -> None:
        """Into the inbox, as fetched (`InboxBot`): the entries of a batch."""
        taken = []
        for update in updates:
            entry = self.entry_of(update)
            if entry is not None:
                taken.append((entry.chat_id, entry.key, entry.user_id, entry.payload))
        if taken:
            await handled.take(self.db, taken)

    async def answer_once(
        self,
        update: Update,
        entry: Entry,
        answer: Callable[[float], Awaitable[list[Outgoing]]],
        *,
        retry_on: type[Exception] | tuple[type[Exception], ...] = (),
    ) -> None:
        """Work out the answer of an inbox entry (`answer` is given when it was taken)
        unless it was answered already (a replay, or Telegram delivering it again) or the
        bot is stopping; then queue the answer and mark the entry answered in one
        transaction. One that failed on a network error (or a `retry_on` error) stays in
        the inbox and is tried again by the sweep; any other error is answered with an
        apology."""
        key = (entry.chat_id, entry.key)
        if key in self.in_hand:  # delivered again while a replay of it runs
            return
        if self.stopping and entry.payload is not None:
            # Fetched but not begun when the stop came: it stays in the inbox and is
            # answered on the next start, so a stop waits only for the answers under way.
            # (A secret command is not stored, so it cannot wait: it is answered now.)
            return
        self.in_hand.add(key)
        try:
            # Taken into the inbox when fetched; a replayed update may predate that.
            taken_at = await handled.begin(self.db, *key, entry.user_id, entry.payload)
            if taken_at is None:
                logger.info("update %d in chat %d was answered before a restart; skipping",
                            entry.key, entry.chat_id)  # fmt: skip
                return
            try:
                outgoing = await answer(taken_at)
            except Exception as error:
                if is_retryable(error) or isinstance(error, retry_on):
                    raise  # the error handler says so; the sweep tries it again
                # Answered with an apology, never replayed.
                outgoing = self._apologies(update, error)
            message = update.effective_message
            thread = topic_of(message) if message is not None else None
            await self.outbox.answer(*key, outgoing, thread_id=thread)
        finally:
            self.in_hand.discard(key)

    async def unanswered(self, bot: Bot, taken_before: float | None = None) -> list[Update]:
        """The updates taken (before `taken_before`) but not answered and not being
        answered now, in the order Telegram numbered them (each user's in the order sent)."""
        pending = await handled.unfinished(self.db, taken_before)
        updates = [Update.de_json(json.loads(payload), bot) for payload in pending]
        unanswered = []
        for update in sorted(updates, key=lambda update: update.update_id):
            entry = self.entry_of(update)
            if entry is not None and (entry.chat_id, entry.key) not in self.in_hand:
                unanswered.append(update)
        return unanswered
