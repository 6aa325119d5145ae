"""Telling a trader their paid plan has ended: once, through the outbox.

Every `CHECK_EVERY_S` the users whose paid plan ended and who were not told of that end
are found (`lunara.storage.users.expired_untold`); for each, the notice is queued in the
outbox and the end recorded as told, in one transaction: a crash leaves both or neither,
so the notice is neither lost nor queued twice. A plan renewed after it ended has a new
end, told in its turn; a plan renewed in time never ends and is never told. A user who
blocked the bot is not told (they would not get it).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiosqlite

from lunara import plans as plan_book
from lunara.storage import outbox, users
from lunara.storage.database import transaction
from lunara.storage.outbox import Outgoing, Priority

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 60.0
NOTICE_KEY = "plan-expired"


def expiry_message(plan_name: str, ended_at: float) -> str:
    """The notice of a plan's end (HTML): what ended, what holds now, how to renew."""
    plan = plan_book.plan_named(plan_name)
    title = plan.title if plan is not None else plan_name
    free = plan_book.PLANS[plan_book.PlanName.FREE]
    ended = datetime.fromtimestamp(ended_at, UTC)
    return (
        f"Your <b>{html.escape(title)}</b> plan ended on {ended:%Y-%m-%d %H:%M} UTC. You are "
        f"on the {free.title} plan now: at most {free.max_open_positions} open positions "
        f"and {free.max_symbols} symbols (auto mode enters only on the first "
        f"{free.max_symbols} of your /settings symbols); your open positions keep their "
        f"stops. Renew with /subscribe {html.escape(plan_name)}."
    )


async def tell_expired(db: aiosqlite.Connection, now: float) -> int:
    """Queue the notice of every plan ended by `now` and not yet told; how many."""
    told = 0
    for user in await users.expired_untold(db, now):
        ended_at = user.plan_expires_at
        if ended_at is None:  # pragma: no cover - the query selects ended plans only
            continue
        notice = Outgoing(
            user.telegram_id,
            expiry_message(user.plan, ended_at),
            priority=Priority.NOTICE,
            dedupe_key=f"{NOTICE_KEY}:{user.telegram_id}:{ended_at!r}",
        )
        async with transaction(db):
            if not await users.mark_expiry_told(db, user.telegram_id, ended_at):
                continue  # renewed or refunded meanwhile
            await outbox.enqueue(db, [notice])
        told += 1
    if told:
        logger.info("told %d user(s) their plan ended", told)
    return told


class PlanExpiryNotices:
    """The service that tells traders their plan ended (runs beside Telegram's)."""

    name = "plan-expiry"

    def __init__(
        self,
        db: aiosqlite.Connection,
        wake: Callable[[], None],
        *,
        every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.wake = wake  # the outbox's sender: something was queued
        self.every_s = every_s
        self.clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await tell_expired(self.db, self.clock()):
                    self.wake()
            except sqlite3.Error as error:
                logger.warning("could not look for ended plans (%s); trying again",
                               type(error).__name__)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
