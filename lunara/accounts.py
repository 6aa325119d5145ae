"""Accounts: users, their settings and exchange keys, plans and payments.

The Telegram handlers call `AccountService` for all of these, never the storage, so a
rule about an account lives here once: the plan in force and its limits
(`plan_in_force`, `position_limit_reached`, `symbols_in_plan`, used by the trading
engine too), what a completed payment buys, how a refund runs. It takes the storage
connection and plain callables, never the Telegram layer.

Payments: the pre-checkout answer checks the invoice against the plan book (plan
exists, price and currency match, payer is the user and is active) before Telegram
takes the Stars. The same checks run again when the payment is recorded: the plan is
granted for what was paid, not for what the pre-checkout answer once allowed (a price
changed in between, a pre-checkout answered by another deployment, a forged update).
A refund is one Telegram call per charge however many admins (or retries) ask at
once: the calls for one charge queue, and the next finds it refunded.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import aiosqlite

from lunara import plans as plan_book
from lunara.payments import plan_paid_for
from lunara.storage import credentials, payments, user_settings, users
from lunara.storage.database import RecordNotFound

if TYPE_CHECKING:
    from lunara.crypto import KeyRing


# -- plans ------------------------------------------------------------------------------


def plan_in_force(user: users.User, now: float) -> plan_book.Plan:
    """The plan in force for ``user`` (a lapsed paid plan counts as free)."""
    return plan_book.effective_plan(user.plan, user.plan_expires_at, now)


def position_limit_reached(plan: plan_book.Plan, open_positions: int) -> bool:
    """Whether ``plan`` allows no position beyond the ``open_positions`` already open."""
    return open_positions >= plan.max_open_positions


def watched_symbols(
    chosen: Sequence[str], bot_symbols: Sequence[str], *, auto_mode: bool
) -> tuple[str, ...]:
    """The symbols that count against a plan's `max_symbols`: the trading pairs a trader
    has the bot watch for them. Those of their `/settings symbols` (watched and traded
    by auto mode); with `all` (none chosen) and auto mode on, every pair the bot trades
    (`LUNARA_SYMBOLS`); with `all` and auto mode off, none. A position bought with /buy
    counts against `max_open_positions` instead."""
    if chosen:
        return tuple(chosen)
    return tuple(bot_symbols) if auto_mode else ()


def symbols_in_plan(
    plan: plan_book.Plan, chosen: Sequence[str], bot_symbols: Sequence[str]
) -> tuple[str, ...]:
    """The symbols auto mode may enter on under ``plan``: the first `max_symbols` of the
    trader's, in their order. /settings refuses more (`SymbolLimitReached`); after a paid
    plan lapsed, or under `all` once the bot's list grew, auto mode enters on none of the
    rest (their open positions keep their stops)."""
    return watched_symbols(chosen, bot_symbols, auto_mode=True)[: plan.max_symbols]


class SymbolLimitReached(Exception):
    """Settings that would have the bot watch more symbols than the plan in force allows
    (nothing was saved). `every`: the count is the bot's whole list (`all` with auto mode)."""

    def __init__(self, plan: plan_book.Plan, wanted: int, *, every: bool) -> None:
        super().__init__(
            f"the {plan.name.value} plan allows {plan.max_symbols} symbols, not {wanted}"
        )
        self.plan = plan
        self.wanted = wanted
        self.every = every


# -- payments ---------------------------------------------------------------------------


class AlreadyRefunded(Exception):
    """Telegram refused a refund because the charge was refunded already (through
    Telegram's own support, say): raised by the `refund` the Telegram layer provides."""


class Refund(StrEnum):
    """What `/refund` did."""

    REFUNDED = "refunded"  # the Stars went back and the plan period was taken back
    ALREADY = "already"  # recorded as refunded before: nothing was done
    ALREADY_ON_TELEGRAM = "already_on_telegram"  # Telegram had refunded it; now recorded


@dataclass(frozen=True)
class CheckoutDecision:
    ok: bool
    error: str | None = None
    plan: plan_book.Plan | None = None


class PaymentMismatch(ValueError):
    """A completed payment that does not pay for the plan it names: not recorded."""


async def check_pre_checkout(
    db: aiosqlite.Connection, user_id: int, payload: str, currency: str, total_amount: int
) -> CheckoutDecision:
    plan = plan_paid_for(user_id, payload, currency, total_amount)
    if isinstance(plan, str):
        return CheckoutDecision(False, plan)
    user = await users.get(db, user_id)
    if user is None or not user.active:
        return CheckoutDecision(False, "Send /start first, then subscribe again.")
    return CheckoutDecision(True, plan=plan)


async def record_payment(
    db: aiosqlite.Connection,
    user_id: int,
    payload: str,
    charge_id: str,
    total_amount: int,
    *,
    currency: str,
) -> payments.PaymentOutcome:
    """Record a completed payment and grant its plan, once the payload, payer, amount and
    currency are checked against the plan book again; PaymentMismatch otherwise."""
    plan = plan_paid_for(user_id, payload, currency, total_amount)
    if isinstance(plan, str):
        raise PaymentMismatch(
            f"payment {charge_id} of {total_amount} {currency[:8]!r} by user {user_id} does "
            f"not pay for its invoice ({plan}); not recorded, refund it with /refund"
        )
    return await payments.record(
        db,
        charge_id,
        user_id,
        plan.name.value,
        total_amount,
        plan_book.PLAN_PERIOD_S,
        currency=currency,
    )


# One lock per charge being refunded, dropped as soon as no refund of it is under way.
_refunding: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def refund_payment(
    db: aiosqlite.Connection,
    refund: Callable[[int, str], Awaitable[None]],
    charge_id: str,
) -> tuple[Refund, payments.Payment]:
    """Give the Stars back through Telegram first, then take the plan period back. A
    charge refunded already is not refunded again: recorded so, it is left alone;
    refunded on Telegram's side only, it is recorded now.

    `refund(user id, charge id)` is the Telegram call, handed in by the Telegram layer
    (raising AlreadyRefunded when Telegram had refunded the charge), so accounts never
    imports that layer.

    Refunds of one charge run one at a time: the second finds the first's record and
    does not ask Telegram again (five admins sending /refund at once make one call).
    """
    lock = _refunding.get(charge_id)
    if lock is None:
        lock = _refunding[charge_id] = asyncio.Lock()
    async with lock:
        payment = await payments.get(db, charge_id)
        if payment is None:
            raise RecordNotFound(f"payment {charge_id} is not recorded")
        if payment.status is payments.PaymentStatus.REFUNDED:
            return Refund.ALREADY, payment
        result = Refund.REFUNDED
        try:
            await refund(payment.user_id, charge_id)
        except AlreadyRefunded:
            result = Refund.ALREADY_ON_TELEGRAM
        outcome = await payments.refund(db, charge_id)
        return result, outcome.payment


# -- the service ------------------------------------------------------------------------


class AccountService:
    """What a trader's and an admin's commands can ask about accounts."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        keyring: Callable[[], KeyRing],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._keyring = keyring  # loaded on first use (paper mode may never need it)
        self._clock = clock

    # users

    async def register(self, user_id: int, username: str | None) -> users.User:
        """The user, registered on first contact (the username kept current)."""
        return await users.register(self._db, user_id, username)

    async def start(self, user_id: int, username: str | None) -> users.User:
        """Register; a user back after blocking the bot is active again (notifications
        and broadcasts resume)."""
        user = await self.register(user_id, username)
        if not user.active:
            user = await users.set_active(self._db, user_id, True)
        return user

    async def set_active(self, user_id: int, active: bool) -> bool:
        """Mark a known user active or inactive; False (nothing done) for a stranger."""
        try:
            await users.set_active(self._db, user_id, active)
        except RecordNotFound:
            return False
        return True

    async def user(self, user_id: int) -> users.User | None:
        return await users.get(self._db, user_id)

    async def users_page(self, *, offset: int, limit: int) -> users.UserPage:
        return await users.list_page(self._db, offset=offset, limit=limit)

    # plans

    def plan_of(self, user: users.User) -> plan_book.Plan:
        """The plan in force for ``user`` now."""
        return plan_in_force(user, self._clock())

    def position_limit(self, user: users.User, open_positions: int) -> plan_book.Plan | None:
        """The plan in force if it allows no further position, else None."""
        plan = self.plan_of(user)
        return plan if position_limit_reached(plan, open_positions) else None

    # settings and keys

    async def settings(self, user_id: int) -> user_settings.UserSettings:
        return await user_settings.get(self._db, user_id)

    async def update_settings(
        self,
        user_id: int,
        changes: Mapping[str, str],
        check_symbols: Callable[[Sequence[str]], Awaitable[None]],
        bot_symbols: Sequence[str],
    ) -> user_settings.UserSettings:
        """Apply `changes` (name → raw value). InvalidValue for a bad value.

        A change of `symbols` or `auto_mode` that would have the bot watch more symbols
        (`watched_symbols`; `bot_symbols` is what `all` stands for) than the plan in force
        allows raises SymbolLimitReached. New symbols are then checked with
        `check_symbols` (the exchange): one it does not know would make it refuse every
        price request that carries it. Nothing is saved when either refuses."""
        chosen: tuple[str, ...] | None = None
        if "symbols" in changes:
            symbols = user_settings.parse_setting("symbols", changes["symbols"])
            if isinstance(symbols, tuple):
                chosen = symbols
        if "symbols" in changes or "auto_mode" in changes:
            await self._check_symbol_limit(user_id, chosen, changes.get("auto_mode"), bot_symbols)
        if chosen is not None:
            await check_symbols(chosen)
        return await user_settings.update(self._db, user_id, changes)

    async def _check_symbol_limit(
        self,
        user_id: int,
        chosen: tuple[str, ...] | None,
        auto_mode_text: str | None,
        bot_symbols: Sequence[str],
    ) -> None:
        """SymbolLimitReached if the settings after the change (`chosen` symbols, the
        `auto_mode` typed; None: as they are) watch more than the plan in force allows."""
        current = await user_settings.get(self._db, user_id)
        symbols = current.symbols if chosen is None else chosen
        auto_mode = current.auto_mode
        if auto_mode_text is not None:
            auto_mode = bool(user_settings.parse_setting("auto_mode", auto_mode_text))
        wanted = watched_symbols(symbols, bot_symbols, auto_mode=auto_mode)
        user = await users.get(self._db, user_id)
        plan = plan_book.PLANS[plan_book.PlanName.FREE] if user is None else self.plan_of(user)
        if len(wanted) > plan.max_symbols:
            raise SymbolLimitReached(plan, len(wanted), every=not symbols)

    async def store_keys(
        self, user_id: int, api_key: str, api_secret: str
    ) -> credentials.CredentialInfo:
        """Keep the user's Binance key pair, encrypted with the deployment's keyring."""
        return await credentials.store(
            self._db, self._keyring(), user_id, credentials.Exchange.BINANCE, api_key, api_secret
        )

    # payments

    async def check_pre_checkout(
        self, user_id: int, payload: str, currency: str, total_amount: int
    ) -> CheckoutDecision:
        return await check_pre_checkout(self._db, user_id, payload, currency, total_amount)

    async def record_payment(
        self, user_id: int, payload: str, charge_id: str, total_amount: int, *, currency: str
    ) -> payments.PaymentOutcome:
        return await record_payment(
            self._db, user_id, payload, charge_id, total_amount, currency=currency
        )

    async def refund_payment(
        self, refund: Callable[[int, str], Awaitable[None]], charge_id: str
    ) -> tuple[Refund, payments.Payment]:
        return await refund_payment(self._db, refund, charge_id)
