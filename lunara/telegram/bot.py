"""The Telegram side of the bot: the Application and its handlers, registered in one place.

Built with python-telegram-bot's builder (TELEGRAM_API_BASE_URL points it at a
self-hosted or test Bot API server). All commands go through one dispatcher, so the
guard (`lunara.telegram.guard`) runs before any handler code; replies go through the
one formatting module; errors reach the one error handler (`lunara.telegram.errors`).
Nothing is sent from here directly: every message is written to the outbox and sent,
paced, by its sender (`lunara.telegram.outbox`). The polling service
(`lunara.telegram.polling`) runs it, polling and sending only while it holds the poller
lease (`lunara.telegram.lease`). It asks Telegram only for the kinds
of update handled here (`lunara.telegram.updates`), and the inbox holds each one that
matters until it is answered, once (`lunara.telegram.inbox`); one user's updates run in
the order sent, different users' side by side (`lunara.telegram.ordering`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiosqlite
from telegram import ChatMemberUpdated, LabeledPrice, Message, ReplyParameters, Update, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)
from telegram.request import HTTPXRequest

from blueprint.audit import AuditLog
from blueprint.manifest import Manifest
from blueprint.paths import HomePaths
from lunara import payments
from lunara import plans as plan_book
from lunara.accounts import AccountService, AlreadyRefunded
from lunara.config import Settings
from lunara.dependencies import Watch
from lunara.services import TradingService
from lunara.storage.outbox import Outgoing, Priority
from lunara.telegram import formatting as fmt
from lunara.telegram import menus
from lunara.telegram.chats import follow_migration
from lunara.telegram.commands import COMMANDS, EXPECTED_ERRORS, CommandContext, Deps
from lunara.telegram.errors import STATE_FILE, ErrorHandler, TelegramState
from lunara.telegram.guard import Admission, Guard, RateLimiter, Verdict, late_by
from lunara.telegram.inbox import Inbox, InboxBot
from lunara.telegram.ordering import PerUserOrder
from lunara.telegram.outbox import TELEGRAM_LIMITS, Outbox, OutboxSender, SendLimits, messages
from lunara.telegram.parsing import UsageError, command_name, split_arguments
from lunara.telegram.updates import (
    SECRET_COMMANDS,
    command_of,
    edit_of,
    member_change_of,
    paid_of,
    plain_text_of,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from lunara.crypto import KeyRing

logger = logging.getLogger("lunara.telegram")

CLIENT_TIMEOUT_S = 5.0
"""Connect, write and read timeout of every Bot API call (long polls add the polling
service's `POLL_TIMEOUT_S`)."""
KEYS_IN_GROUP = (
    "I deleted your message: exchange keys posted in a group are seen by everyone in it. "
    "Revoke those keys on Binance now, make new ones and send them with /setkeys in our "
    "private chat."
)
EDITED_KEYS = (
    "I deleted your edited message: it carried exchange keys, and I do not act on edits. "
    "To be safe, revoke those keys on Binance, make new ones and send them with /setkeys "
    "as a new message."
)
EDIT_NOT_RUN = "I don't act on edited messages: send the command again as a new message."
HINT = "Send /help to see the commands."
"""The answer to a plain text in a private chat."""
CRASH_REPORT_KEY = "crash-report"
CHARGE_ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"
"""The Bot API's refusal to refund a charge refunded before."""
CONNECTION_POOL = 256  # python-telegram-bot's own default for concurrent updates
CONCURRENT_UPDATES = 64
"""Updates handled at once, across users (each user's own run one at a time, in order)."""


def _request(pool_size: int) -> HTTPXRequest:
    return HTTPXRequest(
        connection_pool_size=pool_size,
        connect_timeout=CLIENT_TIMEOUT_S,
        read_timeout=CLIENT_TIMEOUT_S,
        write_timeout=CLIENT_TIMEOUT_S,
    )


class TelegramBot:
    """The Application plus everything the handlers need; `lunara.telegram.polling` runs it."""

    def __init__(
        self,
        settings: Settings,
        paths: HomePaths,
        manifest: Manifest,
        audit: AuditLog,
        db: aiosqlite.Connection,
        trading: TradingService,
        *,
        redis: Redis | None = None,
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
        self.inbox = Inbox(db, self.outbox, self.errors.apologies, self._username)
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
            take=self.inbox.take,
            watch=self.watch,
            may_poll=may_send,
        )
        self.application = (
            Application.builder()
            .bot(client)
            .concurrent_updates(PerUserOrder(CONCURRENT_UPDATES))
            .build()
        )
        self._keyring: KeyRing | None = None
        self.accounts = AccountService(db, self._load_keyring)
        self.deps = Deps(
            settings=settings,
            paths=paths,
            accounts=self.accounts,
            trading=trading,
            guard=self.guard,
            broadcast=self.outbox.broadcast,
            delete_message=self._delete_message,
            refund=self._refund,
        )
        self._register()

    # -- wiring -------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.application
        # Each kind here is in `ALLOWED_UPDATES`, the kinds asked of Telegram.
        new = filters.UpdateType.MESSAGE
        app.add_handler(MessageHandler(new & filters.COMMAND, self._on_command))
        app.add_handler(
            MessageHandler(new & filters.SUCCESSFUL_PAYMENT, self._on_successful_payment)
        )
        app.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, self._on_text))
        app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self._on_edit))
        app.add_handler(CallbackQueryHandler(self._on_callback_query))
        app.add_handler(MessageHandler(new & filters.StatusUpdate.MIGRATE, self._on_migrate))
        app.add_handler(PreCheckoutQueryHandler(self._on_pre_checkout))
        app.add_handler(
            ChatMemberHandler(self._on_my_chat_member, ChatMemberHandler.MY_CHAT_MEMBER)
        )
        app.add_error_handler(self._on_error)

    def _username(self) -> str:
        """The bot's username (from getMe): commands addressed to others are not ours."""
        return self.application.bot.username

    def _load_keyring(self) -> KeyRing:
        if self._keyring is None:
            from lunara.keys import load_keyring

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

    async def send_text(
        self, chat_id: int, text: str, reply_to: int | None, thread_id: int | None = None
    ) -> None:
        """Send one queued message (`lunara.telegram.outbox.Transport`)."""
        await self.application.bot.send_message(
            chat_id,
            text,
            parse_mode="HTML",
            reply_parameters=_reply_parameters(reply_to),
            message_thread_id=thread_id,
        )

    async def send_invoice(
        self, chat_id: int, plan: str, reply_to: int | None, thread_id: int | None = None
    ) -> None:
        """Send one queued invoice (`lunara.telegram.outbox.Transport`)."""
        chosen = plan_book.plan_named(plan)
        if chosen is None:
            raise LookupError(f"no plan named {plan!r}")
        await self.application.bot.send_invoice(
            reply_parameters=_reply_parameters(reply_to),
            message_thread_id=thread_id,
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
        try:
            await self.application.bot.refund_star_payment(user_id, charge_id)
        except BadRequest as error:
            if CHARGE_ALREADY_REFUNDED in error.message.upper():
                raise AlreadyRefunded(charge_id) from None
            raise

    # -- handlers -----------------------------------------------------------------------

    async def _answer_once(
        self,
        update: Update,
        found: tuple[Message, User] | None,
        answer: Callable[[Message, int, float], Awaitable[list[Outgoing]]],
    ) -> None:
        """Answer a person's message through the inbox, once however often it comes:
        `found` is the message and its sender, None when it is not one for us."""
        entry = self.inbox.entry_of(update)
        if found is None or entry is None:
            return
        message, sender = found
        self.updates_handled += 1
        await self.inbox.answer_once(
            update, entry, lambda taken_at: answer(message, sender.id, taken_at)
        )

    async def _on_command(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._answer_once(update, command_of(update, self._username()), self._answer_command)

    def _slow_down(self, message: Message) -> list[Outgoing]:
        return messages(
            message.chat_id,
            f"Slow down a little: I answer at most {self.guard.limiter.limit} messages a "
            "minute. I did not act on this one, nor will I on what you send before the "
            "minute is over.",
            message.message_id,
        )

    async def _refused_by_rate(
        self, message: Message, sender_id: int, name: str | None
    ) -> list[Outgoing] | None:
        """Count a message against its sender's rate limit: None if it may be answered,
        else what to answer instead (a slow-down once per window, then nothing). A refused
        message carrying keys is deleted all the same."""
        admission = self.guard.admit(sender_id, COMMANDS.get(name or ""))
        if admission is Admission.ALLOWED:
            return None
        if name in SECRET_COMMANDS:
            await self._delete_message(message.chat_id, message.message_id)
        return self._slow_down(message) if admission is Admission.SLOW_DOWN else []

    async def _answer_command(
        self, message: Message, sender_id: int, taken_at: float
    ) -> list[Outgoing]:
        text = message.text or ""
        name = command_name(text)
        command = COMMANDS.get(name)
        reply_to = message.message_id
        private = message.chat.type == ChatType.PRIVATE
        if command is None and not private:
            return []  # in a group it may be another bot's: not ours to answer
        refused = await self._refused_by_rate(message, sender_id, name)
        if refused is not None:
            return refused
        if command is None:
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
        if self.guard.check(sender_id, command) is Verdict.DENIED:
            return messages(
                message.chat_id, "Sorry, your role does not allow that command.", reply_to
            )
        late = late_by(message.date.timestamp(), taken_at, self.settings.command_max_age_s)
        if late is not None and command.acts_on(text):
            return messages(message.chat_id, _too_late(command.name, late), reply_to)
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
        await self._answer_once(update, plain_text_of(update), self._hint)

    async def _hint(self, message: Message, sender_id: int, _taken_at: float) -> list[Outgoing]:
        refused = await self._refused_by_rate(message, sender_id, None)
        if refused is not None:
            return refused
        return messages(message.chat_id, HINT, message.message_id)

    async def _on_edit(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        await self._answer_once(update, edit_of(update, self._username()), self._answer_edit)

    async def _answer_edit(
        self, message: Message, sender_id: int, _taken_at: float
    ) -> list[Outgoing]:
        """An edit is never run (the command as first sent was answered, or not, already;
        running the edit too would trade twice): the user is told to send it again. One
        that now carries keys is deleted and the keys are to be revoked."""
        name = command_name(message.text or "")
        private = message.chat.type == ChatType.PRIVATE
        if name not in COMMANDS and not private:
            return []  # in a group it may be another bot's: not ours to answer
        refused = await self._refused_by_rate(message, sender_id, name)
        if refused is not None:
            return refused
        if name in SECRET_COMMANDS:
            await self._delete_message(message.chat_id, message.message_id)
            text = EDITED_KEYS if private else KEYS_IN_GROUP
            return messages(message.chat_id, text, message.message_id)
        return messages(message.chat_id, EDIT_NOT_RUN, message.message_id)

    async def _on_callback_query(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Answered at once, or the user's client shows a spinner on the button: the bot
        sends no buttons yet, so a press can only come from an old or forged message."""
        query = update.callback_query
        if query is None:
            return
        try:
            await query.answer()
        except BadRequest as error:  # "query is too old": the spinner is long gone
            logger.info("could not answer a button press: %s", error.message)

    async def _on_my_chat_member(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Through the inbox like a command, so a block or unblock fetched just before a
        crash is still applied, once, and in the order the user did them."""
        change = member_change_of(update)
        entry = self.inbox.entry_of(update)
        if change is None or entry is None:
            return
        await self.inbox.answer_once(
            update, entry, lambda _taken_at: self._member_change(change), retry_on=sqlite3.Error
        )

    async def _member_change(self, change: ChatMemberUpdated) -> list[Outgoing]:
        """A user blocked the bot (`kicked`): inactive, so broadcasts and auto trades skip
        them; unblocked it (`member`): active again. Nothing is answered."""
        active = change.new_chat_member.status == ChatMemberStatus.MEMBER
        if await self.accounts.set_active(change.chat.id, active):
            logger.info("user %d %s the bot; marked %s", change.chat.id,
                        "unblocked" if active else "blocked",
                        "active" if active else "inactive")  # fmt: skip
        return []

    async def _on_migrate(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await follow_migration(self.db, update.effective_message)

    async def _on_pre_checkout(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.pre_checkout_query
        if query is None:
            return
        decision = await self.accounts.check_pre_checkout(
            query.from_user.id, query.invoice_payload, query.currency, query.total_amount
        )
        await query.answer(ok=decision.ok, error_message=decision.error)

    async def _on_successful_payment(
        self, update: Update, _context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        paid = paid_of(update)
        entry = self.inbox.entry_of(update)
        if paid is None or entry is None:
            return
        message, sender = paid
        await self.inbox.answer_once(
            update,
            entry,
            lambda _taken_at: self._record_payment(message, sender.id),
            retry_on=sqlite3.Error,  # the payer cannot send it again: keep it, try again
        )

    async def _record_payment(self, message: Message, sender_id: int) -> list[Outgoing]:
        """Record the payment (once per charge id, so a replay is harmless), thank the payer."""
        paid = message.successful_payment
        assert paid is not None
        outcome = await self.accounts.record_payment(
            sender_id,
            paid.invoice_payload,
            paid.telegram_payment_charge_id,
            paid.total_amount,
            currency=paid.currency,
        )
        plan = plan_book.plan_named(outcome.payment.plan)
        return messages(
            message.chat_id,
            f"Thank you! Your {fmt.escape(plan.title if plan else outcome.payment.plan)} plan is active.",
            message.message_id,
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.errors.on_error(update, context.error)

    async def publish_menus(self) -> int:
        """The command menus of each audience (`lunara.telegram.menus`)."""
        chosen = menus.menus(COMMANDS.values(), self.admin_ids(), self.guard.may)
        return await menus.publish(self.application.bot, chosen)

    def admin_ids(self) -> list[int]:
        ids = []
        for principal in self.guard.manifest.principals:
            kind, _, identifier = principal.partition(":")
            if kind == "telegram" and identifier.isdigit():
                ids.append(int(identifier))
        return self.guard.admins(ids)


def _too_late(name: str, late_s: float) -> str:
    return (
        f"Your {fmt.code('/' + name)} was sent {_duration(late_s)} ago and reached me only "
        "now (Telegram could not deliver it sooner), so I did not act on it: the market has "
        "moved since. If you still want it, send it again."
    )


def _duration(seconds: float) -> str:
    """`90` → "1 minute", `7300` → "2 hours": how long ago, roughly, in words."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = int(seconds)
    return f"{count} second{'s' if count != 1 else ''}"


def _reply_parameters(message_id: int | None) -> ReplyParameters | None:
    """Thread an answer to its command; still deliver it if the command was deleted."""
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)
