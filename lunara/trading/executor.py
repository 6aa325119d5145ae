"""The tick loop: one pass over the whole market per tick, whatever the number of traders.

Each tick:

1. one batched market call for every symbol any position or auto-trader needs;
2. the candles that closed feed the streaming analyzers (one per symbol, not per trader);
3. every open position's trailing stop advances in *one* stop-store call
   (``advance_all``: one Redis round trip for thousands of positions);
4. triggered stops exit through the same order path as ``/sell``; auto-mode traders
   enter on the analyzers' entry signals within their stake, symbols and plan limits;
   traders are worked on concurrently up to a bound, each inside a guard so that one
   trader's failure never stops another, and a tick waits for their work at most
   ``wait_for_traders_s``: a trader whose order hangs (a stalled request, an unknown
   outcome waiting out Binance's recvWindow) goes on in the background and is left out of
   later ticks until done, while everyone else's stops keep running on time; a circuit
   breaker pauses a trader whose
   exchange keys keep failing (and tells them through the ``Notifier``); an exit the
   exchange refused is tried again on a doubling, capped schedule for as long as the
   stop asks for it: the trader is told why once, and the admins when it persists;
5. the stop store is checkpointed to SQLite at least every ``CHECKPOINT_INTERVAL_S``.

An admin pause (the ``trading_paused`` bot flag) stops new entries; exits keep running,
because a stop that does not sell is the one thing worse than a paused bot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast, runtime_checkable

import aiosqlite

from lunara.accounts import plan_in_force, position_limit_reached, symbols_in_plan
from lunara.analysis.analyzer import Analysis, AnalyzerRegistry, CandleLike, entry_signal
from lunara.crypto import KeyMismatch
from lunara.services import TradingError
from lunara.storage import positions as position_store
from lunara.storage import user_settings, users
from lunara.storage.user_settings import UserSettings
from lunara.trading.exchange import CredentialsRejected, Exchange, ExchangeError
from lunara.trading.market import Market, MarketTick
from lunara.trading.model import ExitReason, PositionStatus
from lunara.trading.orders import OrderPath, PositionLeftAsDust, Settlement
from lunara.trading.stops import CHECKPOINT_INTERVAL_S, StopStore, TriggeredStop
from lunara.trading.trailing import InvalidTrailingParams, TrailingParams

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT_USERS = 32
DEFAULT_WAIT_FOR_TRADERS_S = 5.0
RECOVERY_INTERVAL_S = 30.0
EXIT_RETRY_FIRST_S = 10.0
"""The wait before a refused exit is tried again; it doubles with each refusal..."""
EXIT_RETRY_MAX_S = 300.0
"""...up to this, and stays there: an exit the stop asks for is never given up."""
EXIT_REFUSED_ADMINS_AFTER_S = 900.0
"""An exit still refused this long after its first refusal is reported to the admins."""

Clock = Callable[[], float]
ExchangeFor = Callable[[int], Awaitable[Exchange]]


class Notifier(Protocol):
    """How the engine tells a trader something (the Telegram layer provides it)."""

    async def notify(self, user_id: int, text: str) -> None: ...


@runtime_checkable
class AdminNotifier(Protocol):
    """A notifier that can also reach the bot's admins (the Telegram layer's)."""

    async def notify_admins(self, text: str) -> None: ...


class SignalSource(Protocol):
    """Entry signals per symbol, fed with closed candles."""

    def feed(self, symbol: str, candles: Sequence[object]) -> None: ...

    def entry_signal(self, symbol: str) -> bool: ...


class StreamingSignals:
    """One streaming analyzer per symbol; a signal counts once, on the candle that made it."""

    def __init__(self) -> None:
        self._analyzers = AnalyzerRegistry()  # bounded: one analyzer per traded symbol
        self._consumed: dict[str, int] = {}

    def feed(self, symbol: str, candles: Sequence[object]) -> None:
        self._analyzers.feed(symbol, (cast(CandleLike, candle) for candle in candles))

    def latest(self, symbol: str) -> Analysis | None:
        return self._analyzers.latest(symbol)

    def entry_signal(self, symbol: str) -> bool:
        analysis = self.latest(symbol)
        if analysis is None or self._consumed.get(symbol) == analysis.candle_open_time:
            return False
        self._consumed[symbol] = analysis.candle_open_time
        return entry_signal(analysis)


def trailing_params(settings: UserSettings) -> TrailingParams:
    """A trader's settings as stop parameters (``trailing_stop`` off: a plain stop, as in
    freqtrade); settings that contradict fall back to the default stop loss rather than
    leaving a position unprotected."""
    try:
        return TrailingParams(
            stoploss=settings.stoploss,
            trailing_stop=settings.trailing_stop,
            trailing_stop_positive=settings.trailing_stop_positive,
            trailing_stop_positive_offset=settings.trailing_stop_positive_offset,
            trailing_only_offset_is_reached=settings.trailing_only_offset_is_reached,
        )
    except InvalidTrailingParams as error:
        logger.warning(
            "user %d: trailing settings refused (%s); plain stop", settings.user_id, error
        )
        defaults = UserSettings(user_id=settings.user_id)
        return TrailingParams(stoploss=defaults.stoploss, trailing_stop=True)


class CircuitBreaker:
    """Pauses a trader after ``threshold`` consecutive key failures, for a cool-down that
    doubles on each relapse (capped); one success closes it again."""

    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 900.0,
        max_cooldown_s: float = 6 * 3600.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._failures: dict[int, int] = {}
        self._open_until: dict[int, float] = {}
        self._trips: dict[int, int] = {}

    def allows(self, user_id: int) -> bool:
        until = self._open_until.get(user_id)
        return until is None or self._clock() >= until

    def is_open(self, user_id: int) -> bool:
        return not self.allows(user_id)

    def paused_users(self) -> list[int]:
        return sorted(user for user in self._open_until if self.is_open(user))

    def record_success(self, user_id: int) -> None:
        self._failures.pop(user_id, None)
        self._open_until.pop(user_id, None)
        self._trips.pop(user_id, None)

    def record_failure(self, user_id: int) -> float | None:
        """Count a failure; returns the pause length when this failure opened the breaker."""
        count = self._failures.get(user_id, 0) + 1
        self._failures[user_id] = count
        if count < self._threshold:
            return None
        trips = self._trips.get(user_id, 0)
        pause: float = min(self._cooldown_s * (2**trips), self._max_cooldown_s)
        self._trips[user_id] = trips + 1
        self._failures[user_id] = self._threshold - 1  # half-open: one more failure re-trips
        self._open_until[user_id] = self._clock() + pause
        return pause


@dataclass
class RefusedExit:
    """One position's exit that keeps being refused, and what was said about it."""

    first_at: float
    next_at: float
    reason: str
    attempts: int = 1
    admins_told: bool = False


class ExitRetries:
    """When an exit the exchange refused may be tried again.

    A stop that says sell keeps saying it every tick; sending the same refused order
    every tick would spend the request budget of every trader on one that cannot sell.
    So each refusal doubles the wait (``first_s``, twice that, ... up to ``max_s``), and
    the exit is tried again whenever the stop asks once the wait is over, for as long as
    it asks. A success, or a position no longer open, forgets it.
    """

    def __init__(
        self,
        first_s: float = EXIT_RETRY_FIRST_S,
        max_s: float = EXIT_RETRY_MAX_S,
        clock: Clock = time.monotonic,
    ) -> None:
        if first_s <= 0 or max_s < first_s:
            raise ValueError("the first wait must be positive and at most the longest")
        self._first_s = first_s
        self._max_s = max_s
        self._clock = clock
        self._refused: dict[int, RefusedExit] = {}

    def __len__(self) -> int:
        return len(self._refused)

    def due(self, position_id: int) -> bool:
        refused = self._refused.get(position_id)
        return refused is None or self._clock() >= refused.next_at

    def refused(self, position_id: int, reason: str) -> RefusedExit:
        """Count a refusal; the record's ``attempts`` is 1 on the first."""
        now = self._clock()
        record = self._refused.get(position_id)
        if record is None:
            record = self._refused[position_id] = RefusedExit(
                first_at=now, next_at=now + self._first_s, reason=reason
            )
            return record
        record.attempts += 1
        record.reason = reason
        wait = min(self._first_s * 2 ** (record.attempts - 1), self._max_s)
        record.next_at = now + wait
        return record

    def wait_after(self, record: RefusedExit) -> float:
        return max(0.0, record.next_at - self._clock())

    def persisting_for(self, record: RefusedExit) -> float:
        return self._clock() - record.first_at

    def forget(self, position_id: int) -> None:
        self._refused.pop(position_id, None)

    def keep_only(self, position_ids: set[int]) -> None:
        """Forget positions that no longer have a stop (sold by hand, closed elsewhere)."""
        for position_id in [known for known in self._refused if known not in position_ids]:
            del self._refused[position_id]


class ParamsByUser(dict[int, TrailingParams]):
    """Each trader's stop parameters; a trader without a settings row gets the defaults."""

    def __missing__(self, user_id: int) -> TrailingParams:
        params = self[user_id] = trailing_params(UserSettings(user_id=user_id))
        return params


@dataclass
class SettingsCache:
    """Every trader's settings in memory, refreshed by one query per tick for what changed."""

    db: aiosqlite.Connection
    by_user: dict[int, UserSettings] = field(default_factory=dict)
    params: ParamsByUser = field(default_factory=ParamsByUser)
    _seen_until: float = float("-inf")

    async def refresh(self) -> None:
        async with self.db.execute(
            "SELECT user_id, updated_at FROM user_settings WHERE updated_at >= ?",
            (self._seen_until,),
        ) as cursor:
            rows = await cursor.fetchall()
        for row in rows:
            user_id = int(row[0])
            settings = await user_settings.get(self.db, user_id)
            self.by_user[user_id] = settings
            self.params[user_id] = trailing_params(settings)
            self._seen_until = max(self._seen_until, float(row[1]))

    def settings(self, user_id: int) -> UserSettings:
        return self.by_user.get(user_id) or UserSettings(user_id=user_id)

    def params_for(self, user_id: int) -> TrailingParams:
        return self.params[user_id]

    def auto_traders(self) -> list[UserSettings]:
        return [settings for settings in self.by_user.values() if settings.auto_mode]


@dataclass
class TickReport:
    at: float
    duration_s: float = 0.0
    symbols: int = 0
    positions: int = 0
    exits: int = 0
    entries: int = 0
    failures: int = 0
    still_working: int = 0  # traders whose work outlived the tick's wait (carried on)
    skipped_busy: int = 0  # traders left out: their work from an earlier tick goes on
    store_round_trips: int = 0
    market_requests: int = 0
    paused: bool = False


@dataclass(frozen=True)
class ExecutorConfig:
    symbols: tuple[str, ...]
    quote_asset: str = "USDT"
    max_concurrent_users: int = DEFAULT_MAX_CONCURRENT_USERS
    checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S
    fee_rate: float = 0.001
    """Paid on each side; the trailing offset is compared with the profit after both fees."""
    wait_for_traders_s: float = DEFAULT_WAIT_FOR_TRADERS_S
    """How long a tick waits for the traders' orders before the next tick may start."""


class Executor:
    """Runs ticks; the engine owns it and the runtime drives ``run``."""

    def __init__(
        self,
        *,
        db: aiosqlite.Connection,
        market: Market,
        stops: StopStore,
        orders: OrderPath,
        exchange_for: ExchangeFor,
        signals: SignalSource | None,
        settings: SettingsCache,
        breaker: CircuitBreaker,
        config: ExecutorConfig,
        notifier: Callable[[], Notifier | None] = lambda: None,
        clock: Clock = time.time,
        exit_retries: ExitRetries | None = None,
    ) -> None:
        self._db = db
        self._market = market
        self._stops = stops
        self._orders = orders
        self._exchange_for = exchange_for
        self._signals = signals
        self._settings = settings
        self._breaker = breaker
        self._config = config
        self._notifier = notifier
        self._clock = clock
        self._slots = asyncio.Semaphore(config.max_concurrent_users)
        self._last_checkpoint = time.monotonic()
        self._last_recovery = time.monotonic()
        self.last_report: TickReport | None = None
        self.ticks = 0
        self._unknown_seen: frozenset[str] = frozenset()
        self._unknown_told: set[tuple[int, str]] = set()  # (trader, symbol) told once
        self.exit_retries = exit_retries if exit_retries is not None else ExitRetries()
        self._in_flight: dict[int, asyncio.Task[None]] = {}  # trader -> work still going

    def use_symbols(self, symbols: tuple[str, ...]) -> None:
        """The bot's symbols for auto-traders without their own list (the engine leaves
        out the configured ones the exchange does not list)."""
        self._config = dataclasses.replace(self._config, symbols=symbols)

    # The tick

    async def tick(self) -> TickReport:
        started = time.perf_counter()
        now = self._clock()
        report = TickReport(at=now)
        round_trips_before = self._stops.round_trips
        requests_before = self._market.requests_sent
        await self._settings.refresh()
        report.paused = await user_settings.is_trading_paused(self._db)
        symbols = self._symbols_needed(self._stops.symbols())
        report.symbols = len(symbols)
        market = await self._market.tick(symbols, now)
        await self._tell_about_unknown(market.unknown)
        self._feed_signals(market)
        float_prices = {symbol: float(price) for symbol, price in market.prices.items()}
        advanced = await self._stops.advance_all(
            float_prices, self._settings.params, now, fee_rate=self._config.fee_rate
        )
        report.positions = advanced.positions
        if len(self.exit_retries):
            self.exit_retries.keep_only({stop.position_id for stop in self._stops.tracked()})
        exits = self._exits_by_user(advanced.triggered)
        entries = {} if report.paused else await self._entries_by_user(market)
        working: list[asyncio.Task[None]] = []
        for user_id in sorted(exits.keys() | entries.keys()):
            earlier = self._in_flight.get(user_id)
            if earlier is not None and not earlier.done():
                report.skipped_busy += 1  # its stop still asks next tick, if it still should
                continue
            task = asyncio.create_task(
                self._guarded(
                    user_id, exits.get(user_id, []), entries.get(user_id, []), market, report
                ),
                name=f"trader-{user_id}",
            )
            self._in_flight[user_id] = task
            task.add_done_callback(functools.partial(self._forget_done, user_id))
            working.append(task)
        if working:
            _, pending = await asyncio.wait(working, timeout=self._config.wait_for_traders_s)
            report.still_working = len(pending)
            if pending:
                logger.warning(
                    "%d trader(s) still waiting on the exchange after %.1f s; their orders go "
                    "on while the next tick runs",
                    len(pending),
                    self._config.wait_for_traders_s,
                )
        await self.checkpoint_if_due()
        await self._recover_if_due()
        report.store_round_trips = self._stops.round_trips - round_trips_before
        report.market_requests = self._market.requests_sent - requests_before
        report.duration_s = time.perf_counter() - started
        self.last_report = report
        self.ticks += 1
        return report

    def _forget_done(self, user_id: int, task: asyncio.Task[None]) -> None:
        if self._in_flight.get(user_id) is task:
            del self._in_flight[user_id]

    async def finish_in_flight(self, timeout_s: float) -> int:
        """Wait for the traders' work still going on (at shutdown); what outlives the wait
        is cancelled and left to the next start's order recovery. Returns how many."""
        running = [task for task in self._in_flight.values() if not task.done()]
        if not running:
            return 0
        _, pending = await asyncio.wait(running, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        return len(pending)

    def _symbols_needed(self, tracked_symbols: set[str]) -> list[str]:
        needed = tracked_symbols
        for settings in self._settings.auto_traders():
            needed.update(settings.symbols or self._config.symbols)
        return sorted(needed)

    async def _tell_about_unknown(self, unknown: frozenset[str]) -> None:
        """A symbol the exchange refused as unknown has no price, and so no stop and no
        entry, while every other symbol goes on (the market logged it once). Told once
        to each trader who asked for it in their settings, and to each trader holding a
        position on it (the positions are scanned only when the set of unknown symbols
        changes)."""
        if not unknown:
            return
        for settings in list(self._settings.by_user.values()):
            for symbol in sorted(unknown.intersection(settings.symbols)):
                await self._tell_once(
                    settings.user_id,
                    symbol,
                    f"{symbol} in your /settings symbols is not a symbol Binance knows, so "
                    "the bot cannot watch or trade it; your other symbols go on. Change the "
                    "list with /settings symbols=...",
                )
        if unknown == self._unknown_seen:
            return
        self._unknown_seen = unknown
        for stop in self._stops.tracked():
            if stop.symbol in unknown:
                await self._tell_once(
                    stop.user_id,
                    stop.symbol,
                    f"Binance does not know {stop.symbol}, so it sends no price for it and "
                    f"the stop of your {stop.symbol} position cannot run; check that "
                    "position on Binance yourself.",
                )

    async def _tell_once(self, user_id: int, symbol: str, text: str) -> None:
        if (user_id, symbol) in self._unknown_told:
            return
        self._unknown_told.add((user_id, symbol))
        await self.notify(user_id, text)

    def _feed_signals(self, market: MarketTick) -> None:
        if self._signals is None:
            return
        for symbol, candles in market.closed.items():
            try:
                self._signals.feed(symbol, candles)
            except Exception:
                logger.exception("analyzer for %s failed on a candle; skipped", symbol)

    @staticmethod
    def _exits_by_user(triggered: Sequence[TriggeredStop]) -> dict[int, list[TriggeredStop]]:
        exits: dict[int, list[TriggeredStop]] = {}
        for stop in triggered:
            exits.setdefault(stop.user_id, []).append(stop)
        return exits

    async def _entries_by_user(self, market: MarketTick) -> dict[int, list[str]]:
        if self._signals is None:
            return {}
        signalled = {symbol for symbol in market.prices if self._safe_signal(symbol)}
        if not signalled:
            return {}
        entries: dict[int, list[str]] = {}
        for settings in self._settings.auto_traders():
            wanted = set(settings.symbols or self._config.symbols) & signalled
            if wanted:
                entries[settings.user_id] = sorted(wanted)
        return entries

    def _safe_signal(self, symbol: str) -> bool:
        assert self._signals is not None
        try:
            return self._signals.entry_signal(symbol)
        except Exception:
            logger.exception("entry signal for %s failed; no entry", symbol)
            return False

    # Per-trader work, guarded

    async def _guarded(
        self,
        user_id: int,
        exits: list[TriggeredStop],
        entries: list[str],
        market: MarketTick,
        report: TickReport,
    ) -> None:
        if not self._breaker.allows(user_id):
            return
        async with self._slots:
            try:
                for update in exits:
                    await self._exit_guarded(user_id, update, market, report)
                for symbol in entries:
                    if await self._enter(user_id, symbol, market):
                        report.entries += 1
            except (CredentialsRejected, KeyMismatch) as error:
                report.failures += 1
                await self._key_failure(user_id, error)
                return
            except TradingError as error:
                report.failures += 1
                logger.info("user %d: order refused: %s", user_id, error.message)
                return
            except ExchangeError as error:
                report.failures += 1
                logger.warning("user %d: exchange problem: %s", user_id, error)
                return
            except Exception:
                report.failures += 1
                logger.exception(
                    "user %d: unexpected failure in the tick; other traders continue", user_id
                )
                await self._key_failure(user_id, None)
                return
        self._breaker.record_success(user_id)

    async def _exit_guarded(
        self, user_id: int, update: TriggeredStop, market: MarketTick, report: TickReport
    ) -> None:
        """One exit, its refusal kept to itself: another position of the same trader
        still exits. Key failures go on to the trader's guard (the circuit breaker)."""
        position_id = update.position_id
        if not self.exit_retries.due(position_id):
            return
        try:
            settlement = await self._exit(user_id, update, market)
        except PositionLeftAsDust as dust:
            self.exit_retries.forget(position_id)
            report.exits += 1
            # The trader's notice was queued with the close (lunara.trading.notices).
            logger.info("user %d: position %d closed as dust: %s", user_id, position_id,
                        dust.message)  # fmt: skip
            return
        except (CredentialsRejected, KeyMismatch):
            raise
        except (TradingError, ExchangeError) as error:
            report.failures += 1
            reason = error.message if isinstance(error, TradingError) else str(error)
            await self._exit_refused(user_id, update, reason)
            return
        self.exit_retries.forget(position_id)
        if settlement is not None:
            report.exits += 1

    async def _exit_refused(self, user_id: int, update: TriggeredStop, reason: str) -> None:
        """Wait longer before the next try; tell the trader on the first refusal, and the
        admins once it has lasted ``EXIT_REFUSED_ADMINS_AFTER_S``."""
        record = self.exit_retries.refused(update.position_id, reason)
        wait = self.exit_retries.wait_after(record)
        position = await position_store.get(self._db, update.position_id)
        symbol = position.symbol if position is not None else "?"
        logger.warning(
            "user %d: exit of position %d refused (attempt %d, next in %.0f s): %s",
            user_id,
            update.position_id,
            record.attempts,
            wait,
            reason,
        )
        if record.attempts == 1:
            await self.notify(
                user_id,
                f"Your stop on position {update.position_id} ({symbol}) asked to sell, "
                f"but the sell did not go through: {reason}. The bot tries again in "
                f"{wait:.0f} s, then less often (at least every "
                f"{EXIT_RETRY_MAX_S / 60:.0f} minutes) for as long as the stop asks to sell.",
            )
        persisting = self.exit_retries.persisting_for(record)
        if record.admins_told or persisting < EXIT_REFUSED_ADMINS_AFTER_S:
            return
        notifier = self._notifier()
        if not isinstance(notifier, AdminNotifier):
            return
        record.admins_told = True
        try:
            await notifier.notify_admins(
                f"The exit of position {update.position_id} ({symbol}, user {user_id}) "
                f"has been refused for {persisting / 60:.0f} minutes, {record.attempts} "
                f"attempts: {reason}. The bot keeps trying while the stop asks to sell."
            )
        # The boundary with the messaging layer: a failed notice never stops an exit.
        except Exception as error:  # noqa: BLE001
            logger.warning("could not tell the admins of a refused exit: %s",
                           type(error).__name__)  # fmt: skip

    async def _key_failure(self, user_id: int, error: Exception | None) -> None:
        pause = self._breaker.record_failure(user_id)
        if pause is None:
            return
        reason = (
            "your exchange API key keeps being refused"
            if error is not None
            else "your orders keep failing"
        )
        logger.warning("user %d: paused for %.0f s: %s", user_id, pause, reason)
        await self.notify(
            user_id,
            f"Trading on your account is paused for {pause / 60:.0f} minutes: {reason}. "
            "Check your keys and send them again with /setkeys; open positions stay recorded.",
        )

    async def notify(self, user_id: int, text: str) -> None:
        notifier = self._notifier()
        if notifier is None:
            return
        try:
            await notifier.notify(user_id, text)
        # The boundary with the messaging layer: a failed notice never stops a trade.
        except Exception as error:  # noqa: BLE001
            logger.warning("could not notify user %d: %s", user_id, type(error).__name__)

    async def _exit(
        self, user_id: int, update: TriggeredStop, market: MarketTick
    ) -> Settlement | None:
        position = await position_store.get(self._db, update.position_id)
        if position is None or position.status is not PositionStatus.OPEN:
            await self._stops.remove(update.position_id)
            return None
        price = market.prices.get(position.symbol)
        if price is None:
            return None
        # `activated`: the stop moved above where it was placed (freqtrade's
        # is_stop_loss_trailing); a stop still at its initial level is a plain stop loss.
        reason = (
            ExitReason.TRAILING_STOP if update.state.activated else ExitReason.STOP_LOSS
        ).value
        exchange = await self._exchange_for(user_id)
        # Its notice is queued with the settlement (lunara.trading.notices).
        return await self._orders.exit(exchange, user_id, position, price, reason)

    async def _enter(self, user_id: int, symbol: str, market: MarketTick) -> bool:
        price = market.prices.get(symbol)
        if price is None:
            return False
        user = await users.get(self._db, user_id)
        if user is None or not user.active:
            return False
        open_positions = await position_store.list_open(self._db, user_id)
        if any(position.symbol == symbol for position in open_positions):
            return False
        plan = plan_in_force(user, self._clock())
        settings = self._settings.settings(user_id)
        if position_limit_reached(plan, len(open_positions)) or symbol not in symbols_in_plan(
            plan, settings.symbols, self._config.symbols
        ):
            return False
        exchange = await self._exchange_for(user_id)
        stop_params = self._settings.params_for(user_id)
        settlement = await self._orders.enter(
            exchange, user_id, symbol, settings.stake_usdt, price, stop_params
        )
        await self.notify(
            user_id,
            f"Auto mode bought {settlement.fill.quantity.normalize()} {symbol} "
            f"at {settlement.price:.8g} on an entry signal.",
        )
        return True

    # Persistence and recovery

    async def checkpoint_if_due(self, *, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self._config.checkpoint_interval_s:
            return 0
        self._last_checkpoint = now
        return await self._stops.checkpoint()

    def seconds_until_checkpoint(self) -> float:
        elapsed = time.monotonic() - self._last_checkpoint
        return max(0.0, self._config.checkpoint_interval_s - elapsed)

    async def _recover_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_recovery < RECOVERY_INTERVAL_S:
            return
        self._last_recovery = now
        if await self._orders.has_unsettled():
            await self._orders.recover(self._exchange_for, skip_busy=True)
