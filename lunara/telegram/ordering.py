"""One user's updates run in the order they were sent; different users' run side by side.

python-telegram-bot runs concurrent updates as they come, so a fast `/sell` sent after a
slow `/buy` could run first and find nothing to sell. `PerUserOrder` is the application's
update processor: each user's messages, edits and member changes wait for that user's
previous one to finish (an `asyncio.Lock` per user: its waiters are served first come,
first served, and python-telegram-bot starts each update's task in the order fetched);
only then do they take one of the `concurrent` slots shared by everyone, so a user with a
backlog holds one slot, not all of them. Callback and pre-checkout queries skip the line:
they only need a quick answer (Telegram allows ten seconds for a pre-checkout).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

BACKLOG = 10_000
"""Updates in hand at once, running or waiting for their user's turn."""


def ordered_by(update: object) -> int | None:
    """The user whose turn an update waits for; None for one that waits for nobody."""
    if not isinstance(update, Update) or update.effective_user is None:
        return None
    if update.callback_query is not None or update.pre_checkout_query is not None:
        return None
    return update.effective_user.id


class PerUserOrder(BaseUpdateProcessor):
    """Run at most `concurrent` updates at once, each user's in the order fetched."""

    __slots__ = ("_locks", "_running", "_waiting")

    def __init__(self, concurrent: int, backlog: int = BACKLOG) -> None:
        super().__init__(backlog)
        self._running = asyncio.Semaphore(concurrent)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}  # user -> updates holding or waiting for the lock

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        user = ordered_by(update)
        if user is None:
            async with self._running:
                await coroutine
            return
        lock = self._locks.setdefault(user, asyncio.Lock())
        self._waiting[user] = self._waiting.get(user, 0) + 1
        try:
            async with lock, self._running:
                await coroutine
        finally:
            self._waiting[user] -= 1
            if not self._waiting[user]:  # nobody else in line: forget the user
                del self._waiting[user]
                del self._locks[user]

    async def initialize(self) -> None:
        """Nothing to set up: the locks are made as users write."""

    async def shutdown(self) -> None:
        """Nothing to free: every update's task ends before the application stops."""
