"""The one error handler of the Telegram layer.

What each Bot API failure means for us: a failure to send a message is the outbox
sender's business (`lunara.telegram.outbox`: 403 marks the user who blocked the bot
inactive, 429 waits as told, timeouts are tried again); here, Forbidden from any other
call is logged and nobody is deactivated for it (in a group it says nothing about the
sender); RetryAfter waits as told; TimedOut/NetworkError are worth another try;
Conflict (another client polls our token) is counted, recorded for `lunara status` and
logged once per burst, never fatal. Anything else gets the user a short apology with a
reference id, the admins the reference and exception type, and the log the traceback —
never a secret (exception messages are not echoed to Telegram).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import aiosqlite
from telegram import Update
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError, RetryAfter, TelegramError

from blueprint.trust import replace_private
from lunara.dependencies import Watch
from lunara.storage.outbox import Outgoing
from lunara.telegram import formatting as fmt
from lunara.telegram.outbox import messages

logger = logging.getLogger("lunara.telegram")

CONFLICT_LOG_EVERY_S = 60.0
MAX_RETRY_AFTER_S = 60.0
STATE_FILE = "telegram-state.json"

Send = Callable[[int, str, int | None], Awaitable[None]]  # chat, text, reply to


def is_retryable(error: BaseException) -> bool:
    """Timeouts and network failures are worth another try; BadRequest never is."""
    # BadRequest is a NetworkError subclass in python-telegram-bot.
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


def mark_telegram(watch: Watch, error: TelegramError) -> None:
    """Telegram is down for us when a request could not reach it (timeouts, network);
    an answer that is an error (Conflict, RetryAfter, BadRequest) means it answered."""
    if is_retryable(error):
        watch.down(f"the Bot API did not answer ({type(error).__name__})")
    else:
        watch.ok()


def retry_after_seconds(error: RetryAfter) -> float:
    """The wait Telegram asked for, capped so one answer cannot stall us for long."""
    delay: float | timedelta = error.retry_after
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class TelegramState:
    """Conflict bookkeeping for operators (LUNARA_HOME/telegram-state.json)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conflicts = 0
        self.last_conflict_at: float | None = None
        self._last_logged = 0.0

    def record_conflict(self) -> bool:
        """Count one Conflict; True when this one should be logged (once per burst)."""
        now = time.time()
        self.conflicts += 1
        self.last_conflict_at = now
        document = {"conflicts": self.conflicts, "last_conflict_at": now}
        with contextlib.suppress(OSError):
            replace_private(self.path, json.dumps(document).encode())
        if now - self._last_logged >= CONFLICT_LOG_EVERY_S:
            self._last_logged = now
            return True
        return False


class ErrorHandler:
    """Maps every error python-telegram-bot hands us to what it means for Lunara."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        state: TelegramState,
        send: Send,
        admin_ids: Callable[[], list[int]],
    ) -> None:
        self.db = db
        self.state = state
        self.send = send
        self.admin_ids = admin_ids

    def _conflict(self) -> None:
        if self.state.record_conflict():
            logger.warning(
                "Telegram answered 409 Conflict: another client polls this token "
                "(not one of ours: ours hold the poller lease); retrying with backoff"
            )

    def on_polling_error(self, error: TelegramError) -> None:
        """Errors of the polling loop itself (the updater retries with backoff)."""
        if isinstance(error, Conflict):
            self._conflict()
            return
        logger.warning("polling Telegram failed: %s (retrying)", type(error).__name__)

    async def on_error(self, update: object, error: BaseException | None) -> None:
        if isinstance(error, Conflict):
            self._conflict()
            return
        if isinstance(error, RetryAfter):
            await asyncio.sleep(retry_after_seconds(error))
            return
        if error is not None and is_retryable(error):
            logger.warning("Telegram network problem: %s (retrying)", type(error).__name__)
            return
        for row in self.apologies(update, error):
            with contextlib.suppress(TelegramError):
                await self.send(row.chat_id, row.text or "", row.reply_to)

    def apologies(self, update: object, error: BaseException | None) -> list[Outgoing]:
        """What an unexpected error is answered with: the user an apology with a
        reference, each admin the reference and the exception's type; the log the
        traceback. Forbidden is answered with nothing (there is no one to tell)."""
        if isinstance(error, Forbidden):
            logger.info("Telegram refused a call for an update: %s", error.message)
            return []
        reference = secrets.token_hex(4)
        logger.error("unexpected error (ref %s)", reference, exc_info=error)
        chat = update.effective_chat if isinstance(update, Update) else None
        message = update.effective_message if isinstance(update, Update) else None
        rows = []
        if chat is not None:
            rows += messages(
                chat.id,
                f"Sorry, something went wrong on our side (reference {fmt.code(reference)}).",
                None if message is None else message.message_id,
            )
        for admin in self.admin_ids():
            rows += messages(
                admin, f"Error {fmt.code(reference)}: {fmt.escape(type(error).__name__)}"
            )
        return rows
