"""The bot's commands: small handlers that parse, call a service and format.

Handlers know nothing of python-telegram-bot: they get a `CommandContext` (who, where,
the arguments, a `reply`) and the services in `Deps`. Registration — name, permission,
usage — is the `COMMANDS` table at the bottom, the one place a command is declared.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from blueprint.manifest import Permission
from blueprint.paths import HomePaths
from lunara import plans as plan_book
from lunara.accounts import AccountService, Refund, SymbolLimitReached
from lunara.config import Settings
from lunara.services import TradingError, TradingService
from lunara.storage.database import InvalidValue, StorageError
from lunara.storage.outbox import BroadcastStart
from lunara.storage.users import User
from lunara.telegram import formatting as fmt
from lunara.telegram.guard import Acts, Command, Guard
from lunara.telegram.parsing import (
    UsageError,
    parse_amount,
    parse_pairs,
    parse_symbol,
    parse_user_id,
)

USAGE_KIND_AI = "ai.analysis"


@dataclass
class Deps:
    """Everything the handlers use; built once by `lunara.telegram.bot`."""

    settings: Settings
    paths: HomePaths
    accounts: AccountService
    trading: TradingService
    guard: Guard
    # Queue a message for every active user: (chat, command message, text) -> its start.
    broadcast: Callable[[int, int, str], Awaitable[BroadcastStart]]
    delete_message: Callable[[int, int], Awaitable[None]]
    refund: Callable[[int, str], Awaitable[None]]
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)


@dataclass
class CommandContext:
    user_id: int
    chat_id: int
    chat_type: str
    message_id: int
    username: str | None
    arguments: list[str]
    text: str
    deps: Deps
    command: Command[CommandContext]
    replies: list[str] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)  # plans whose invoice answers it

    async def reply(self, text: str) -> None:
        self.replies.append(text)

    async def invoice(self, plan: plan_book.Plan) -> None:
        self.invoices.append(plan.name.value)

    async def reply_lines(self, *lines: str | None) -> None:
        """Reply with one line a part; a None part is left out."""
        await self.reply(fmt.lines(*lines))

    async def usage(self, reason: str | None = None) -> None:
        await self.reply_lines(
            fmt.escape(reason) if reason else None, f"Usage: {fmt.code(self.command.usage)}"
        )


def expect_arguments(ctx: CommandContext, count: int) -> None:
    """A wrong number of arguments is a usage error (answered with the usage line)."""
    if len(ctx.arguments) != count:
        raise UsageError(f"this command takes {count} argument{'s' if count != 1 else ''}")


async def _user(ctx: CommandContext) -> User:
    return await ctx.deps.accounts.register(ctx.user_id, ctx.username)


async def _reply_table(
    ctx: CommandContext,
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    empty: str,
) -> None:
    """A titled table of the rows, or the `empty` sentence when there are none."""
    if not rows:
        await ctx.reply(empty)
        return
    await ctx.reply_lines(f"<b>{fmt.escape(title)}</b>", fmt.table([header, *rows]))


# -- everyone ---------------------------------------------------------------------------


async def start(ctx: CommandContext) -> None:
    user = await ctx.deps.accounts.start(ctx.user_id, ctx.username)
    await ctx.reply_lines(
        f"Welcome to Lunara, {fmt.escape(user.username or ctx.user_id)}.",
        f"Mode: {fmt.bold(ctx.deps.settings.mode.value)} trading.",
        "Send /help to see what you can do.",
    )


async def help_command(ctx: CommandContext) -> None:
    available = [c for c in COMMANDS.values() if ctx.deps.guard.may(ctx.user_id, c.permission)]
    rows = [f"{fmt.code(c.usage)} — {fmt.escape(c.description)}" for c in available]
    await ctx.reply_lines("<b>Commands you can use</b>", *rows)


async def status(ctx: CommandContext) -> None:
    user = await _user(ctx)
    plan = ctx.deps.accounts.plan_of(user)
    expires = (
        datetime.fromtimestamp(user.plan_expires_at, UTC).strftime("%Y-%m-%d")
        if user.plan_expires_at and plan.name is not plan_book.PlanName.FREE
        else "-"
    )
    paused = await ctx.deps.trading.is_paused()
    await ctx.reply_lines(
        f"Plan: {fmt.bold(plan.title)} (until {fmt.escape(expires)})",
        f"Mode: {fmt.escape(ctx.deps.settings.mode.value)}",
        f"Trading: {'paused by an admin' if paused else 'active'}",
    )


async def balance(ctx: CommandContext) -> None:
    await _user(ctx)
    balances = await ctx.deps.trading.balances(ctx.user_id)
    rows = [(b.asset, f"{b.free.normalize():f}", f"{b.locked.normalize():f}") for b in balances]
    await _reply_table(ctx, "Balances", ("asset", "free", "locked"), rows, "No balances yet.")


async def positions(ctx: CommandContext) -> None:
    await _user(ctx)
    open_positions = await ctx.deps.trading.positions(ctx.user_id)
    rows = [
        (
            p.symbol,
            f"{p.quantity}",
            f"{p.entry_price}",
            "-" if p.current_price is None else f"{p.current_price}",
            "-" if p.stop_price is None else f"{p.stop_price:.8g}",
            "-" if p.profit_ratio is None else f"{p.profit_ratio * 100:+.2f}%",
        )
        for p in open_positions
    ]
    header = ("symbol", "qty", "entry", "now", "stop", "p/l")
    await _reply_table(ctx, "Open positions", header, rows, "No open positions.")


async def buy(ctx: CommandContext) -> None:
    expect_arguments(ctx, 2)
    symbol = parse_symbol(ctx.arguments[0])
    amount = parse_amount(ctx.arguments[1])
    user = await _user(ctx)
    open_positions = len(await ctx.deps.trading.positions(ctx.user_id))
    plan = ctx.deps.accounts.position_limit(user, open_positions)
    if plan is not None:
        await ctx.reply(
            f"Your {fmt.escape(plan.title)} plan allows {plan.max_open_positions} open "
            "positions. Close one, or see /plans."
        )
        return
    # Keyed by the message: a command delivered again after a crash buys once.
    request_key = f"tg:{ctx.chat_id}:{ctx.message_id}"
    result = await ctx.deps.trading.buy(ctx.user_id, symbol, amount, request_key)
    await ctx.reply(
        f"Bought {fmt.escape(result.quantity)} {fmt.escape(symbol)} at "
        f"{fmt.escape(result.price)} (fee {fmt.escape(result.fee)})."
    )


async def sell(ctx: CommandContext) -> None:
    expect_arguments(ctx, 1)
    symbol = parse_symbol(ctx.arguments[0])
    await _user(ctx)
    results = await ctx.deps.trading.sell(ctx.user_id, symbol)
    if not results:
        await ctx.reply(f"No open {fmt.escape(symbol)} position.")
        return
    await ctx.reply_lines(
        *(
            f"Sold {fmt.escape(r.quantity)} {fmt.escape(r.symbol)} at {fmt.escape(r.price)}."
            for r in results
        )
    )


async def analyze(ctx: CommandContext) -> None:
    expect_arguments(ctx, 1)
    symbol = parse_symbol(ctx.arguments[0])
    await _user(ctx)
    view = await ctx.deps.trading.analyze(ctx.user_id, symbol, with_ai=True)
    rows = [
        (name, "-" if value is None else f"{value:.6g}") for name, value in view.indicators.items()
    ]
    symptoms = ", ".join(view.symptoms) or "none"
    commentary = (
        fmt.lines("<b>AI commentary</b>", fmt.escape(view.ai_commentary))
        if view.ai_commentary
        else (f"<i>{fmt.escape(view.ai_note)}</i>" if view.ai_note else None)
    )
    await ctx.reply_lines(
        f"<b>{fmt.escape(view.symbol)}</b>",
        fmt.table(rows),
        f"Symptoms: {fmt.escape(symptoms)}",
        commentary,
    )


async def settings_command(ctx: CommandContext) -> None:
    await _user(ctx)
    try:
        if ctx.arguments:
            changes = parse_pairs(ctx.arguments)
            current = await ctx.deps.accounts.update_settings(
                ctx.user_id, changes, ctx.deps.trading.check_symbols, ctx.deps.settings.symbols
            )
        else:
            current = await ctx.deps.accounts.settings(ctx.user_id)
    except SymbolLimitReached as limit:
        await ctx.reply(_symbol_limit_text(limit, ctx.deps.settings.symbols))
        return
    except UsageError as error:
        await ctx.usage(str(error))
        return
    except InvalidValue as error:
        await ctx.usage(error.message)
        return
    rows = [
        ("stake_usdt", str(current.stake_usdt)),
        ("symbols", ",".join(current.symbols) or "all"),
        ("stoploss", f"{current.stoploss:g}"),
        ("trailing_stop", "on" if current.trailing_stop else "off (plain stop)"),
        ("trailing_stop_positive", f"{current.trailing_stop_positive}"),
        ("trailing_stop_positive_offset", f"{current.trailing_stop_positive_offset:g}"),
        (
            "trailing_only_offset_is_reached",
            "on" if current.trailing_only_offset_is_reached else "off",
        ),
        ("auto_mode", "on" if current.auto_mode else "off"),
    ]
    await ctx.reply_lines("<b>Your settings</b>", fmt.table(rows))


def _symbol_limit_text(limit: SymbolLimitReached, bot_symbols: tuple[str, ...]) -> str:
    plan = limit.plan
    asked = (
        f"auto mode on all symbols would watch the bot's {limit.wanted}"
        if limit.every
        else f"that would be {limit.wanted}"
    )
    example = ",".join(bot_symbols[: plan.max_symbols])
    return (
        f"Your {fmt.escape(plan.title)} plan allows {plan.max_symbols} symbols; "
        f"{fmt.escape(asked)}. Nothing was changed. Name at most {plan.max_symbols} with "
        f"{fmt.code(f'/settings symbols={example}')}, or see /plans."
    )


async def setkeys(ctx: CommandContext) -> None:
    if ctx.chat_type != "private":
        await ctx.reply("For your safety, send /setkeys only in a private chat with me.")
        return
    # The message carries a secret: delete it whatever happens next.
    await ctx.deps.delete_message(ctx.chat_id, ctx.message_id)
    if len(ctx.arguments) != 2 or any(len(a) < 16 or len(a) > 128 for a in ctx.arguments):
        await ctx.usage("I deleted your message; send the key and the secret again")
        return
    await _user(ctx)
    api_key, api_secret = ctx.arguments
    await ctx.deps.trading.validate_keys(api_key, api_secret)
    info = await ctx.deps.accounts.store_keys(ctx.user_id, api_key, api_secret)
    await ctx.reply(
        f"Keys saved, encrypted (key ending {fmt.escape(info.key_fingerprint)}). "
        "I deleted the message that carried them."
    )


async def plans(ctx: CommandContext) -> None:
    rows = [
        (
            p.title,
            "free" if p.price_stars == 0 else f"{p.price_stars} stars/30d",
            f"{p.max_symbols} symbols",
            f"{p.max_open_positions} positions",
            f"{p.ai_analyses_per_day} AI/day",
        )
        for p in plan_book.PLANS.values()
    ]
    await ctx.reply_lines("<b>Plans</b>", fmt.table(rows), "Subscribe with /subscribe PLAN")


async def subscribe(ctx: CommandContext) -> None:
    plan = plan_book.plan_named(ctx.arguments[0]) if len(ctx.arguments) == 1 else None
    if plan is None or plan.price_stars == 0:
        await ctx.usage("choose a paid plan: " + ", ".join(
            p.name.value for p in plan_book.PLANS.values() if p.price_stars
        ))  # fmt: skip
        return
    await _user(ctx)
    await ctx.invoice(plan)


# -- admins ------------------------------------------------------------------------------


async def users_command(ctx: CommandContext) -> None:
    page = await ctx.deps.accounts.users_page(offset=0, limit=50)
    rows = [
        (u.telegram_id, u.username or "-", u.plan, "yes" if u.active else "no") for u in page.users
    ]
    await ctx.reply_lines(
        f"<b>Users</b> ({page.total})",
        fmt.table([("id", "username", "plan", "active"), *rows]),
    )


async def user_command(ctx: CommandContext) -> None:
    expect_arguments(ctx, 1)
    user_id = parse_user_id(ctx.arguments[0])
    user = await ctx.deps.accounts.user(user_id)
    if user is None:
        await ctx.reply(f"No user {user_id}.")
        return
    open_positions = await ctx.deps.trading.positions(user_id)
    role = ctx.deps.guard.manifest.role_of(ctx.deps.guard.principal(user_id)) or "none"
    await ctx.reply_lines(
        f"<b>User {user.telegram_id}</b> {fmt.escape(user.username or '')}",
        f"Role: {fmt.escape(role)}; plan: {fmt.escape(user.plan)}; active: {user.active}",
        f"Open positions: {len(open_positions)}",
    )


async def broadcast(ctx: CommandContext) -> None:
    message = ctx.text.split(maxsplit=1)[1].strip() if len(ctx.text.split(maxsplit=1)) > 1 else ""
    if not message:
        await ctx.usage()
        return
    text = fmt.escape(message)
    if len(fmt.split_message(text)) > 1:
        await ctx.usage("a broadcast must fit in one message")
        return
    started = await ctx.deps.broadcast(ctx.chat_id, ctx.message_id, text)
    if not started.recipients:
        await ctx.reply("No active user to send it to.")
        return
    await ctx.reply(
        f"Broadcasting to {started.recipients} users, at the pace Telegram allows; "
        "I will send you a summary when every one of them has been tried."
    )


async def pause(ctx: CommandContext) -> None:
    await ctx.deps.trading.set_paused(True, ctx.deps.guard.principal(ctx.user_id))
    await ctx.reply("Trading is paused for everyone. /resume to continue.")


async def resume(ctx: CommandContext) -> None:
    await ctx.deps.trading.set_paused(False, ctx.deps.guard.principal(ctx.user_id))
    await ctx.reply("Trading resumed.")


async def botstatus(ctx: CommandContext) -> None:
    from blueprint.ledger import LedgerView

    document = LedgerView(ctx.deps.paths, ctx.deps.guard.manifest.name).read().document
    last = document.last_exit
    engine = await ctx.deps.trading.engine_status()
    await ctx.reply_lines(
        f"State: {fmt.bold(document.state.value)}; restarts: {document.restarts}",
        f"Started: {fmt.escape(document.started_at or '-')} by {fmt.escape(document.started_by or '-')}",
        f"Last exit: {fmt.escape(last.reason) if last else '-'}",
        f"Engine: {fmt.escape(', '.join(f'{k}={v}' for k, v in engine.items()))}",
    )


async def refund(ctx: CommandContext) -> None:
    if len(ctx.arguments) != 1 or len(ctx.arguments[0]) > 128:
        await ctx.usage()
        return
    charge = fmt.code(ctx.arguments[0])
    result, payment = await ctx.deps.accounts.refund_payment(ctx.deps.refund, ctx.arguments[0])
    when = datetime.fromtimestamp(payment.refunded_at or ctx.deps.clock(), UTC)
    stars = f"{payment.amount_stars} Stars to user {payment.user_id}"
    if result is Refund.ALREADY:
        await ctx.reply(
            f"Payment {charge} was already refunded on {when:%Y-%m-%d %H:%M} UTC "
            f"({stars}): nothing was done."
        )
    elif result is Refund.ALREADY_ON_TELEGRAM:
        await ctx.reply(
            f"Telegram says payment {charge} was already refunded ({stars}); it is now "
            "recorded as refunded and its plan period taken back. Nothing was paid twice."
        )
    else:
        await ctx.reply(f"Refunded {charge}: {stars}; the plan period it bought is taken back.")


PAYSUPPORT_TEXT = (
    "Help with a payment: contact the operator of this bot. Tell them when you paid, "
    "how many Stars, and what went wrong; the receipt in this chat shows the first two. "
    "Telegram's own support cannot help with purchases made in bots."
)
"""What /paysupport answers unless LUNARA_PAYSUPPORT_TEXT says otherwise."""


def terms_text() -> str:
    """What /terms answers unless LUNARA_TERMS_TEXT says otherwise."""
    days = plan_book.PLAN_PERIOD_S // (24 * 3600)
    return (
        f"Plans are paid in Telegram Stars and last {days} days from the payment; one not "
        "paid again falls back to the free plan. A refund gives the Stars back and ends "
        "the period it bought; ask with /paysupport. Lunara is trading software, not "
        "financial advice: trading crypto can lose money, and paper mode trades none."
    )


async def paysupport(ctx: CommandContext) -> None:
    await ctx.reply(fmt.escape(ctx.deps.settings.paysupport_text or PAYSUPPORT_TEXT))


async def terms(ctx: CommandContext) -> None:
    await ctx.reply(fmt.escape(ctx.deps.settings.terms_text or terms_text()))


def _command(*args: Any, **kwargs: Any) -> tuple[str, Command[CommandContext]]:
    command = Command(*args, **kwargs)
    return command.name, command


COMMANDS: dict[str, Command[CommandContext]] = dict(
    [
        _command("start", Permission.TG_START, "/start", "register and say hello", start),
        _command("help", Permission.TG_HELP, "/help", "the commands you can use", help_command),
        _command(
            "status",
            Permission.TG_STATUS,
            "/status",
            "your plan and the bot's state",
            status,
            private_only=True,
        ),
        _command(
            "balance",
            Permission.TG_BALANCE,
            "/balance",
            "your balances",
            balance,
            private_only=True,
        ),
        _command(
            "positions",
            Permission.TG_POSITIONS,
            "/positions",
            "your open positions",
            positions,
            private_only=True,
        ),
        _command(
            "buy",
            Permission.TG_BUY,
            "/buy SYMBOL AMOUNT_USDT",
            "open a position",
            buy,
            acts=Acts.ALWAYS,
        ),
        _command(
            "sell",
            Permission.TG_SELL,
            "/sell SYMBOL",
            "close your position",
            sell,
            acts=Acts.ALWAYS,
        ),
        _command(
            "analyze",
            Permission.TG_ANALYZE,
            "/analyze SYMBOL",
            "indicators and commentary",
            analyze,
        ),
        _command(
            "settings",
            Permission.TG_SETTINGS,
            "/settings [key=value ...]",
            "your trading settings",
            settings_command,
            private_only=True,
            acts=Acts.WITH_ARGUMENTS,
        ),
        _command(
            "setkeys",
            Permission.TG_SETKEYS,
            "/setkeys API_KEY API_SECRET",
            "store your exchange keys",
            setkeys,
            private_only=True,
        ),
        _command("plans", Permission.TG_PLANS, "/plans", "plans and prices", plans),
        _command(
            "subscribe",
            Permission.TG_SUBSCRIBE,
            "/subscribe PLAN",
            "pay for a plan with Stars",
            subscribe,
            private_only=True,
        ),
        _command(
            "paysupport",
            Permission.TG_PAYSUPPORT,
            "/paysupport",
            "help with a payment",
            paysupport,
        ),
        _command("terms", Permission.TG_TERMS, "/terms", "the terms of the plans", terms),
        _command("users", Permission.TG_USERS, "/users", "list users", users_command),
        _command("user", Permission.TG_USER, "/user ID", "one user's details", user_command),
        _command(
            "broadcast",
            Permission.TG_BROADCAST,
            "/broadcast TEXT",
            "message every active user",
            broadcast,
        ),
        _command(
            "pause",
            Permission.TG_PAUSE,
            "/pause",
            "pause trading for everyone",
            pause,
            acts=Acts.ALWAYS,
        ),
        _command(
            "resume", Permission.TG_RESUME, "/resume", "resume trading", resume, acts=Acts.ALWAYS
        ),
        _command(
            "botstatus", Permission.TG_BOTSTATUS, "/botstatus", "the supervisor's view", botstatus
        ),
        _command(
            "refund", Permission.TG_REFUND, "/refund CHARGE_ID", "refund a Stars payment", refund
        ),
    ]
)

EXPECTED_ERRORS = (TradingError, StorageError, UsageError)
