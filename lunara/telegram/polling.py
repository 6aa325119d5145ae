"""The polling service: the Telegram side's part of the runtime.

It starts the Application once the Bot API answers (waiting out an outage at start),
polls and runs the outbox's sender only while it holds the poller lease
(`lunara.telegram.lease`), hands the inbox's unanswered updates to the handlers again,
prunes what is answered and sent, and stops cleanly. What the bot answers, and how, is
`lunara.telegram.bot`'s; this module only runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiosqlite
from telegram.error import NetworkError, RetryAfter

from blueprint.backoff import backoff_delay
from lunara.storage import handled
from lunara.storage import outbox as outbox_store
from lunara.telegram.bot import TelegramBot
from lunara.telegram.errors import is_retryable, mark_telegram, retry_after_seconds
from lunara.telegram.inbox import InboxBot
from lunara.telegram.lease import PollLease
from lunara.telegram.updates import ALLOWED_UPDATES

logger = logging.getLogger("lunara.telegram")

POLL_TIMEOUT_S = 10
RETRY_UNANSWERED_S = 30.0
"""A command taken this long ago and still not answered is tried again."""
PRUNE_EVERY_S = 3600.0
"""How often answered commands and sent messages older than two days are forgotten."""
START_RETRY_FIRST_S = 0.5
START_RETRY_MAX_S = 30.0
"""Waits between attempts to reach Telegram at start: doubling from the first to the most."""


class TelegramService:
    """The runtime Service: hold the poller lease, poll, stop cleanly."""

    name = "telegram"

    def __init__(self, bot: TelegramBot) -> None:
        self.bot = bot
        self.ready = bot.up  # up once the Bot API answered (getMe) and the app started

    async def run(self, stop: asyncio.Event) -> None:
        bot = self.bot
        token = bot.settings.telegram_bot_token
        assert token is not None
        application = bot.application
        await _prune(bot.db)
        if not await self._initialize(stop):
            with contextlib.suppress(Exception):
                await application.bot.shutdown()  # the HTTP clients the first try opened
            return
        await application.start()
        bot.up.set()
        replayed = False
        try:
            while not stop.is_set():
                lease = PollLease(token.get_secret_value(), bot.paths.root, bot.redis)
                logger.info("waiting for the Telegram poller lease (one poller per token)")
                # Until it is held, `lunara status` shows Telegram down with the reason: the
                # Bot API may answer, but no command is fetched.
                if not await lease.acquire(stop, waiting=bot.watch.wait):
                    return
                bot.watch.resume()
                # The one sender of the outbox, while the lease is ours.
                sending = asyncio.Event()
                sender = asyncio.create_task(bot.sender.run(sending))
                try:
                    if not replayed:
                        await self._replay_unfinished()
                        replayed = True
                        await bot.publish_menus()
                    await self._poll(stop, lease)
                finally:
                    with contextlib.suppress(Exception):
                        if application.updater is not None and application.updater.running:
                            _set_closing(application.bot, True)
                            await application.updater.stop()
                    try:
                        if stop.is_set():
                            # Finish the answers under way while the lease is still ours:
                            # the next holder replays what the inbox holds unanswered.
                            await self._stop_application()
                    finally:
                        sending.set()  # the sends under way finish; the queue waits
                        try:
                            await sender
                        finally:
                            await lease.release()
                if lease.lost.is_set() and not stop.is_set():
                    logger.error("another instance took the poller lease; waiting to get it back")
        finally:
            await self._stop_application()
            with contextlib.suppress(Exception):
                await application.shutdown()

    async def _initialize(self, stop: asyncio.Event) -> bool:
        """Set the application up (its first call, getMe, reaches Telegram), waiting out a
        Telegram outage or timeout with growing pauses; False if stopped meanwhile."""
        failures = 0
        while not stop.is_set():
            try:
                await self.bot.application.initialize()
                self.bot.watch.ok()
                return True
            except (RetryAfter, NetworkError) as error:
                mark_telegram(self.bot.watch, error)
                if isinstance(error, RetryAfter):
                    wait = retry_after_seconds(error)
                elif is_retryable(error):
                    failures += 1
                    wait = backoff_delay(failures, START_RETRY_FIRST_S, START_RETRY_MAX_S)
                else:
                    raise
                logger.warning(
                    "Telegram is not reachable (%s: %s); trying again in %.1f s",
                    type(error).__name__, error, wait,
                )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        return False

    async def _stop_application(self) -> None:
        """Answer no new update, finish those under way (python-telegram-bot waits for them)."""
        self.bot.inbox.stopping = True
        with contextlib.suppress(Exception):
            if self.bot.application.running:
                await self.bot.application.stop()

    async def _replay_unfinished(self, taken_before: float | None = None) -> None:
        """Hand inbox entries taken but not answered (by a run that died or stopped before
        it began them, or whose answer could not be sent) to the handlers again, in the
        order Telegram numbered them (each user's in the order sent)."""
        application = self.bot.application
        unanswered = await self.bot.inbox.unanswered(application.bot, taken_before)
        for update in unanswered:
            await application.update_queue.put(update)
        if unanswered:
            logger.info("answering %d update(s) taken earlier but not answered", len(unanswered))

    async def _poll(self, stop: asyncio.Event, lease: PollLease) -> None:
        application = self.bot.application
        assert application.updater is not None
        _set_closing(application.bot, False)
        await application.updater.start_polling(
            timeout=POLL_TIMEOUT_S,
            allowed_updates=list(ALLOWED_UPDATES),
            error_callback=self.bot.errors.on_polling_error,
        )
        logger.info("Telegram polling as @%s", application.bot.username)
        stopper = asyncio.create_task(stop.wait())
        lost = asyncio.create_task(lease.lost.wait())
        pruned_at = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait(
                    {stopper, lost}, timeout=RETRY_UNANSWERED_S, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return
                await self._replay_unfinished(time.time() - RETRY_UNANSWERED_S)
                if time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    await _prune(self.bot.db)
        finally:
            stopper.cancel()
            lost.cancel()


def _set_closing(client: object, closing: bool) -> None:
    """Tell the Bot API client that polling is (or is no longer) being stopped."""
    if isinstance(client, InboxBot):
        client.polling_stops(closing)


async def _prune(db: aiosqlite.Connection) -> None:
    """Forget answered commands and finished messages older than two days."""
    await handled.prune(db)
    await outbox_store.prune(db)
