"""The Telegram side of the bot: the Application and its handlers, registered in one place.

Built with python-telegram-bot's builder (TELEGRAM_API_BASE_URL points it at a
self-hosted or test Bot API server). All commands go through one dispatcher, so the
guard (`lunara.telegram.guard`) runs before any handler code; replies go through the
one formatting module; errors reach the one error handler (`lunara.telegram.errors`).
Nothing is sent from here directly: every message is written to the outbox and sent,
paced, by its sender (`lunara.telegram.outbox`). The service polls and sends only while
it holds the poller lease (`lunara.telegram.lease`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiosqlite
from telegram import LabeledPrice, Message, ReplyParameters, Update, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ChatMemberHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)
from telegram.request import HTTPXRequest

from blueprint.audit import AuditLog
from blueprint.backoff import backoff_delay
from blueprint.manifest import Manifest
from blueprint.paths import HomePaths
from lunara import payments
from lunara import plans as plan_book
from lunara.config import Settings
from lunara.dependencies import Watch
from lunara.services import TradingService
from lunara.storage import handled, users
from lunara.storage import outbox as outbox_store
from lunara.storage.database import RecordNotFound
from lunara.storage.outbox import Outgoing, Priority
from lunara.telegram import formatting as fmt
from lunara.telegram.commands import COMMANDS, EXPECTED_ERRORS, CommandContext, Deps
from lunara.telegram.errors import (
    STATE_FILE,
    ErrorHandler,
    TelegramState,
    is_retryable,
    mark_telegram,
    retry_after_seconds,
)
from lunara.telegram.guard import Guard, RateLimiter, Verdict
from lunara.telegram.lease import PollLease
from lunara.telegram.outbox import TELEGRAM_LIMITS, Outbox, OutboxSender, SendLimits, messages
from lunara.telegram.parsing import UsageError, addressed_to, command_name, split_arguments

logger = logging.getLogger("lunara.telegram")

POLL_TIMEOUT_S = 10
CLIENT_TIMEOUT_S = 5.0
"""Connect, write and read timeout of every Bot API call (long polls add POLL_TIMEOUT_S)."""
SECRET_COMMANDS = frozenset({"setkeys"})
KEYS_IN_GROUP = (
    "I deleted your message: exchange keys posted in a group are seen by everyone in it. "
    "Revoke those keys on Binance now, make new ones and send them with /setkeys in our "
    "private chat."
)
HINT = "Send /help to see the commands."
"""The answer to a plain text in a private chat."""
BLANKED_TEXT = "…"
"""What the inbox keeps of a plain text's words."""
RETRY_UNANSWERED_S = 30.0
"""A command taken this long ago and still not answered is tried again."""
PRUNE_EVERY_S = 3600.0
"""How often answered commands and sent messages older than two days are forgotten."""
CRASH_REPORT_KEY = "crash-report"
START_RETRY_FIRST_S = 0.5
START_RETRY_MAX_S = 30.0
"""Waits between attempts to reach Telegram at start: doubling from the first to the most."""
FENCED_POLL_PAUSE_S = 0.5
"""How long the poller waits, instead of polling, while the instance lease is unconfirmed."""
CONNECTION_POOL = 256  # python-telegram-bot's own default for concurrent updates


class InboxBot(ExtBot[None]):
    """The Bot API client, writing every command, plain text and payment it fetches to the inbox
    (`lunara.storage.handled`) before python-telegram-bot confirms it to Telegram with the
    next getUpdates offset: an update Telegram will not deliver again is one we hold."""

    __slots__ = ("_may_poll", "_take", "_watch")

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
        self._watch = watch
        self._may_poll = may_poll

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        if self._may_poll is not None and not self._may_poll():
            # Fencing: this instance is not sure it still holds the instance lease (it was
            # paused, or lost it): no poll, which would cut the live instance's short.
            await asyncio.sleep(FENCED_POLL_PAUSE_S)
            return ()
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
        return updates


def _request(pool_size: int) -> HTTPXRequest:
    return HTTPXRequest(
        connection_pool_size=pool_size,
        connect_timeout=CLIENT_TIMEOUT_S,
        read_timeout=CLIENT_TIMEOUT_S,
        write_timeout=CLIENT_TIMEOUT_S,
    )


def command_of(update: Update, username: str) -> tuple[Message, User] | None:
    """The message and sender of a command the command handler answers, else None: a
    command addressed to another bot (`/buy@other_bot` in a group) is not ours."""
    message = update.effective_message
    sender = update.effective_user
    if message is None or sender is None or sender.is_bot or not message.text:
        return None
    if not filters.COMMAND.check_update(update) or not addressed_to(message.text, username):
        return None
    return message, sender


def plain_text_of(update: Update) -> tuple[Message, User] | None:
    """The message and sender of a plain text in a private chat (answered with `HINT`),
    else None; plain text in a group is not for the bot."""
    message = update.effective_message
    sender = update.effective_user
    if message is None or sender is None or sender.is_bot or not message.text:
        return None
    if message.chat.type != ChatType.PRIVATE or filters.COMMAND.check_update(update):
        return None
    return message, sender


def inbox_entry_of(update: Update, username: str) -> tuple[Message, User] | None:
    """The message and sender of an update the inbox holds until it is answered: a command,
    a plain text the bot answers, or the service message of a completed payment (Telegram
    sends it once; losing it would lose a plan the user paid for)."""
    entry = command_of(update, username) or plain_text_of(update)
    if entry is not None:
        return entry
    message = update.effective_message
    sender = update.effective_user
    if message is None or sender is None or message.successful_payment is None:
        return None
    return message, sender


def _stored_update(update: Update, message: Message) -> str | None:
    """What the inbox keeps to answer an update again: never the text of a secret command,
    nor the words of a plain text (its answer does not depend on them, and they may be
    anything a user pasted, an exchange key too): they are kept as `BLANKED_TEXT`."""
    if command_name(message.text or "") in SECRET_COMMANDS:
        return None
    if plain_text_of(update) is None:
        return update.to_json()
    # Only what the hint needs: no words, nor those of a message it replies to or quotes.
    blanked = Message(message.message_id, message.date, message.chat,
                      from_user=message.from_user, text=BLANKED_TEXT)  # fmt: skip
    return Update(update.update_id, message=blanked).to_json()


class TelegramBot:
    """The Application plus everything the handlers need; `service()` runs it."""

    def __init__(
        self,
        settings: Settings,
        paths: HomePaths,
        manifest: Manifest,
        audit: AuditLog,
        db: aiosqlite.Connection,
        trading: TradingService,
        *,
        redis: Any = None,
        send_limits: SendLimits = TELEGRAM_LIMITS,
        may_send: Callable[[], bool] | None = None,
        watch: Watch | None = None,
    ) -> None:
        token = settings.telegram_bot_token
        if token is None:
            raise ValueError("TELEGRAM_BOT_TOKEN is not set")
        self.settings = settings
        self.paths = paths
        self.db = db
        self.redis = redis
        self.guard = Guard(manifest, audit, RateLimiter(settings.rate_limit_per_minute))
        self.state = TelegramState(paths.root / STATE_FILE)
        self.outbox = Outbox(db)
        self.sender = OutboxSender(db, self.outbox, self, send_limits, may_send=may_send)
        self.errors = ErrorHandler(db, self.state, self.send, self.admin_ids)
        self.updates_handled = 0
        self.in_hand: set[tuple[int, int]] = set()  # (chat, message) being answered now
        self.stopping = False  # set once the bot is shutting down: start no new answers
        self.up = asyncio.Event()  # set once Telegram answered and the application started
        # Reachability for `lunara status`: every getUpdates and the start-up getMe mark it.
        self.watch = watch if watch is not None else Watch(configured=True)
        base = settings.telegram_api_base_url or "https://api.telegram.org"
        client = InboxBot(
            token.get_secret_value(),
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=_request(CONNECTION_POOL),
            get_updates_request=_request(1),
            take=self._take,
            watch=self.watch,
            may_poll=may_send,
        )
        self.application = Application.builder().bot(client).concurrent_updates(64).build()
        self._keyring: Any = None
        self.deps = Deps(
            settings=settings,
            paths=paths,
            db=db,
            trading=trading,
            guard=self.guard,
            keyring=self._load_keyring,
            broadcast=self.outbox.broadcast,
            delete_message=self._delete_message,
            refund=self._refund,
        )
        self._register()

    # -- wiring -------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.application
        app.add_handler(MessageHandler(filters.COMMAND, self._on_command))
        app.add_handler(MessageHandler(filters.SUCCESSFUL_PAYMENT, self._on_successful_payment))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._on_text))
        app.add_handler(PreCheckoutQueryHandler(self._on_pre_checkout))
        app.add_handler(
            ChatMemberHandler(self._on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER)
        )
        app.add_error_handler(self._on_error)

    def _load_keyring(self) -> Any:
        if self._keyring is None:
            from lunara.crypto import load_keyring

            self._keyring = load_keyring(self.settings)
        return self._keyring

    # -- sending ------------------------------------------------------------------------

    async def send(self, chat_id: int, text: str, reply_to: int | None = None) -> None:
        """Queue HTML text for `chat_id` (split under the limit); with `reply_to`, an
        answer threaded to that message, sent ahead of notifications."""
        await self.outbox.send(chat_id, text, reply_to)

    async def notify(self, user_id: int, text: str) -> None:
        """The Notifier the trading engine uses: queued once written, sent when Telegram
        allows (a user who blocked the bot is marked inactive by the sender)."""
        await self.outbox.send(user_id, text, priority=Priority.NOTICE)

    async def notify_admins(self, text: str) -> None:
        """Tell every admin something about the bot itself (e.g. a Binance IP ban)."""
        await self.outbox.put([row for admin in self.admin_ids() for row in messages(admin, text)])

    async def report_crash(self, text: str, exit_at: str) -> int:
        """Queue the report of the previous run's abnormal end for every admin, once per
        exit however often this is called; returns how many admins it is for."""
        admins = self.admin_ids()
        await self.outbox.put([
            row for admin in admins
            for row in messages(admin, text, dedupe_key=f"{CRASH_REPORT_KEY}:{exit_at}:{admin}")
        ])  # fmt: skip
        return len(admins)

    async def send_text(self, chat_id: int, text: str, reply_to: int | None) -> None:
        """Send one queued message (`lunara.telegram.outbox.Transport`)."""
        await self.application.bot.send_message(
            chat_id, text, parse_mode="HTML", reply_parameters=_reply_parameters(reply_to)
        )

    async def send_invoice(self, chat_id: int, plan: str, reply_to: int | None) -> None:
        """Send one queued invoice (`lunara.telegram.outbox.Transport`)."""
        chosen = plan_book.plan_named(plan)
        if chosen is None:
            raise LookupError(f"no plan named {plan!r}")
        await self.application.bot.send_invoice(
            reply_parameters=_reply_parameters(reply_to),
            chat_id=chat_id,
            title=f"Lunara {chosen.title}",
            description=f"{chosen.title} plan for 30 days",
            payload=payments.invoice_payload(chosen, chat_id),
            currency=payments.STARS,
            prices=[LabeledPrice(chosen.title, chosen.price_stars)],
            provider_token="",
        )

    async def _delete_message(self, chat_id: int, message_id: int) -> None:
        try:
            await self.application.bot.delete_message(chat_id, message_id)
        except TelegramError as error:
            logger.warning("could not delete a message carrying keys: %s", type(error).__name__)

    async def _refund(self, user_id: int, charge_id: str) -> None:
        await self.application.bot.refund_star_payment(user_id, charge_id)

    # -- handlers -----------------------------------------------------------------------

    async def _take(self, updates: Sequence[Update]) -> None:
        """Into the inbox, as fetched (InboxBot): the commands, plain texts and payments of a batch."""
        taken = []
        for update in updates:
            entry = inbox_entry_of(update, self.application.bot.username)
            if entry is not None:
                message, sender = entry
                taken.append((message.chat_id, message.message_id, sender.id,
                              _stored_update(update, message)))  # fmt: skip
        if taken:
            await handled.take(self.db, taken)

    async def _on_command(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        command = command_of(update, self.application.bot.username)
        if command is None:
            return
        message, sender = command
        text = message.text or ""
        self.updates_handled += 1
        await self._answer_once(
            update, message, sender, lambda: self._answer_command(message, sender.id, text)
        )

    async def _answer_once(
        self,
        update: Update,
        message: Message,
        sender: User,
        answer: Callable[[], Awaitable[list[Outgoing]]],
        *,
        retry_on: type[Exception] | tuple[type[Exception], ...] = (),
    ) -> None:
        """Work out the answer of an inbox entry unless it was answered already (a replay,
        or Telegram delivering it again) or the bot is stopping; then queue the answer and
        mark the entry answered in one transaction. One that failed on a network error (or
        a `retry_on` error) stays in the inbox and is tried again by the sweep; any other
        error is answered with an apology."""
        key = (message.chat_id, message.message_id)
        if key in self.in_hand:  # delivered again while a replay of it runs
            return
        payload = _stored_update(update, message)
        if self.stopping and payload is not None:
            # Fetched but not begun when the stop came: it stays in the inbox and is
            # answered on the next start, so a stop waits only for the answers under way.
            # (A secret command is not stored, so it cannot wait: it is answered now.)
            return
        self.in_hand.add(key)
        try:
            # Taken into the inbox when fetched; a replayed update may predate that.
            if not await handled.begin(self.db, *key, sender.id, payload):
                logger.info("message %d in chat %d was answered before a restart; skipping",
                            message.message_id, message.chat_id)  # fmt: skip
                return
            try:
                outgoing = await answer()
            except Exception as error:
                if is_retryable(error) or isinstance(error, retry_on):
                    raise  # the error handler says so; the sweep tries it again
                # Answered with an apology, never replayed.
                outgoing = self.errors.apologies(update, error)
            await self.outbox.answer(*key, outgoing)
        finally:
            self.in_hand.discard(key)

    async def _answer_command(self, message: Message, sender_id: int, text: str) -> list[Outgoing]:
        name = command_name(text)
        command = COMMANDS.get(name)
        reply_to = message.message_id
        private = message.chat.type == ChatType.PRIVATE
        if command is None:
            if not private:
                return []  # in a group it may be another bot's: not ours to answer
            return messages(
                message.chat_id, "I don't know that command. Send /help for the list.", reply_to
            )
        if not private and command.name in SECRET_COMMANDS:
            await self._delete_message(message.chat_id, message.message_id)
            return messages(message.chat_id, KEYS_IN_GROUP, reply_to)
        if not private and command.private_only:
            link = f"https://t.me/{self.application.bot.username}"
            return messages(
                message.chat_id,
                f"I answer {fmt.code('/' + command.name)} only in "
                f'<a href="{fmt.escape(link)}">our private chat</a>: send it there.',
                reply_to,
            )
        verdict = self.guard.check(sender_id, command)
        if verdict is Verdict.DENIED:
            return messages(
                message.chat_id, "Sorry, your role does not allow that command.", reply_to
            )
        if verdict is Verdict.RATE_LIMITED:
            return messages(
                message.chat_id,
                f"Slow down a little: at most {self.guard.limiter.limit} commands a minute.",
                reply_to,
            )
        context = CommandContext(
            user_id=sender_id,
            chat_id=message.chat_id,
            chat_type=message.chat.type,
            message_id=message.message_id,
            username=message.from_user.username if message.from_user else None,
            arguments=[],
            text=text,
            deps=self.deps,
            command=command,
        )
        try:
            context.arguments = split_arguments(text)
            await command.handler(context)
        except UsageError as error:
            await context.usage(str(error))
        except EXPECTED_ERRORS as error:
            await context.reply(fmt.escape(getattr(error, "message", None) or str(error)))
        outgoing = [row for reply in context.replies
                    for row in messages(message.chat_id, reply, reply_to)]  # fmt: skip
        outgoing += [
            Outgoing(message.chat_id, reply_to=reply_to, priority=Priority.ANSWER, invoice=plan)
            for plan in context.invoices
        ]
        return outgoing

    async def _on_text(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        plain = plain_text_of(update)
        if plain is None:
            return
        message, sender = plain
        self.updates_handled += 1
        await self._answer_once(update, message, sender, lambda: _hint(message))

    async def _on_my_chat_member(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """A user blocked the bot (`kicked`): inactive, so broadcasts and auto trades skip
        them; unblocked it (`member`): active again. The bot leaving or joining a group
        changes nobody."""
        change = update.my_chat_member
        if change is None or change.chat.type != ChatType.PRIVATE:
            return
        status = change.new_chat_member.status
        if status not in (ChatMemberStatus.BANNED, ChatMemberStatus.MEMBER):
            return
        active = status == ChatMemberStatus.MEMBER
        with contextlib.suppress(RecordNotFound):
            await users.set_active(self.db, change.chat.id, active)
            logger.info("user %d %s the bot; marked %s", change.chat.id,
                        "unblocked" if active else "blocked",
                        "active" if active else "inactive")  # fmt: skip

    async def _on_pre_checkout(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.pre_checkout_query
        if query is None:
            return
        decision = await payments.check_pre_checkout(
            self.db, query.from_user.id, query.invoice_payload, query.currency, query.total_amount
        )
        await query.answer(ok=decision.ok, error_message=decision.error)

    async def _on_successful_payment(
        self, update: Update, _context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        entry = inbox_entry_of(update, self.application.bot.username)
        if entry is None:
            return
        message, sender = entry
        await self._answer_once(
            update,
            message,
            sender,
            lambda: self._record_payment(message, sender),
            retry_on=sqlite3.Error,  # the payer cannot send it again: keep it, try again
        )

    async def _record_payment(self, message: Message, sender: User) -> list[Outgoing]:
        """Record the payment (once per charge id, so a replay is harmless), thank the payer."""
        paid = message.successful_payment
        assert paid is not None
        outcome = await payments.record_payment(
            self.db,
            sender.id,
            paid.invoice_payload,
            paid.telegram_payment_charge_id,
            paid.total_amount,
        )
        plan = plan_book.plan_named(outcome.payment.plan)
        return messages(
            message.chat_id,
            f"Thank you! Your {fmt.escape(plan.title if plan else outcome.payment.plan)} plan is active.",
            message.message_id,
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.errors.on_error(update, context.error)

    def admin_ids(self) -> list[int]:
        ids = []
        for principal in self.guard.manifest.principals:
            kind, _, identifier = principal.partition(":")
            if kind == "telegram" and identifier.isdigit():
                ids.append(int(identifier))
        return self.guard.admins(ids)

    # -- running ------------------------------------------------------------------------

    def service(self) -> TelegramService:
        return TelegramService(self)


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
                if not await lease.acquire(stop):
                    return
                # The one sender of the outbox, while the lease is ours.
                sending = asyncio.Event()
                sender = asyncio.create_task(bot.sender.run(sending))
                try:
                    if not replayed:
                        await self._replay_unfinished()
                        replayed = True
                    await self._poll(stop, lease)
                finally:
                    with contextlib.suppress(Exception):
                        if application.updater is not None and application.updater.running:
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
        self.bot.stopping = True
        with contextlib.suppress(Exception):
            if self.bot.application.running:
                await self.bot.application.stop()

    async def _replay_unfinished(self, taken_before: float | None = None) -> None:
        """Hand commands and payments taken but not answered (by a run that died or
        stopped before it began them, or whose answer could not be sent) to the handlers
        again."""
        application = self.bot.application
        pending = await handled.unfinished(self.bot.db, taken_before)
        replayed = 0
        for payload in pending:
            update = Update.de_json(json.loads(payload), application.bot)
            message = None if update is None else update.effective_message
            if message is None or (message.chat_id, message.message_id) in self.bot.in_hand:
                continue
            await application.update_queue.put(update)
            replayed += 1
        if replayed:
            logger.info("answering %d command(s) taken earlier but not answered", replayed)

    async def _poll(self, stop: asyncio.Event, lease: PollLease) -> None:
        application = self.bot.application
        assert application.updater is not None
        await application.updater.start_polling(
            timeout=POLL_TIMEOUT_S,
            allowed_updates=Update.ALL_TYPES,
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


async def _prune(db: aiosqlite.Connection) -> None:
    """Forget answered commands and finished messages older than two days."""
    await handled.prune(db)
    await outbox_store.prune(db)


async def _hint(message: Message) -> list[Outgoing]:
    return messages(message.chat_id, HINT, message.message_id)


def _reply_parameters(message_id: int | None) -> ReplyParameters | None:
    """Thread an answer to its command; still deliver it if the command was deleted."""
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)
