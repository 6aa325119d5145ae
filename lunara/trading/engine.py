"""The trading engine: what the Telegram layer calls (``TradingService``) and what the
runtime runs (``EngineRunner``, a ``Service``).

The composition root (``lunara.app.open_trading``) builds it with the database, the
stop store, the market, the exchanges and the AI analyst it opened; the Telegram layer,
built afterwards with the engine as its ``TradingService``, hands its ``Notifier`` back
with ``engine.attach_notifier``.

On start the engine reconciles the stop store (Redis vs SQLite, newest wins), resolves
orders a crash left unsettled, and makes sure every open position has a stop. On the
stop signal it lets in-flight orders finish, checkpoints the stops and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aiosqlite

from lunara.accounts import plan_in_force, position_limit_reached
from lunara.ai.analyst import NOTE_OFF, Analyst, MarketSummary
from lunara.analysis.analyzer import InsufficientData, analyze_candles
from lunara.config import Mode, Settings
from lunara.instance import StaleEpoch
from lunara.services import (
    AnalysisView,
    AssetBalance,
    OrderResult,
    PositionView,
    TradingError,
    TradingPaused,
)
from lunara.storage import credentials, user_settings, users
from lunara.storage import positions as position_store
from lunara.trading.binance import BinanceExchange, BinanceGateway
from lunara.trading.exchange import (
    CredentialsRejected,
    Exchange,
    ExchangeBusy,
    ExchangeError,
    IpBanned,
    RateLimited,
)
from lunara.trading.executor import (
    AdminNotifier,
    CircuitBreaker,
    Executor,
    ExecutorConfig,
    Notifier,
    SettingsCache,
    SignalSource,
    StreamingSignals,
)
from lunara.trading.market import Market, interval_name
from lunara.trading.model import ExitReason
from lunara.trading.orders import OrderOutcomeUnknown, OrderPath, Settlement
from lunara.trading.paper import PaperExchange
from lunara.trading.stops import REDIS_OUTAGE, StopStore
from lunara.trading.symbols import MAX_SYMBOL_LENGTH, symbol_name
from lunara.trading.trailing import TrailingParams, initial_state

if TYPE_CHECKING:
    from lunara.crypto import KeyRing

logger = logging.getLogger(__name__)

SERVICE_NAME = "trading"
ANALYSIS_CANDLES = 200
# Shutdown: how long in-flight orders get to finish (stay under runtime.SHUTDOWN_GRACE_S).
ORDER_DRAIN_S = 5.0


INTERACTIVE_WAIT_S = 10.0
"""A trader's read (/balance) waits at most this long for Binance's request budget."""

MAX_CACHED_CLIENTS = 256
"""Traders whose Binance client (their keys, decrypted; the connections are shared) is kept
between orders; the least recently used go first."""


@dataclass(frozen=True)
class EngineConfig:
    """The settings the engine reads, in one place (built from ``Settings``)."""

    mode: Mode = Mode.PAPER
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
    tick_seconds: float = 5.0
    quote_asset: str = "USDT"
    paper_fee_rate: Decimal = Decimal("0.001")
    paper_slippage: Decimal = Decimal("0.0005")
    paper_start_balance: Decimal = Decimal("10000")
    max_concurrent_users: int = 32
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(
            mode=settings.mode,
            symbols=settings.symbols,
            tick_seconds=settings.tick_seconds,
            paper_fee_rate=settings.paper_fee_rate,
            paper_slippage=settings.paper_slippage,
            paper_start_balance=settings.paper_start_balance,
        )


class TradingEngine:
    """Implements ``lunara.services.TradingService``."""

    def __init__(
        self,
        *,
        db: aiosqlite.Connection,
        stops: StopStore,
        market: Market,
        config: EngineConfig,
        gateway: BinanceGateway | None = None,
        keyring: KeyRing | None = None,
        analyst: Analyst | None = None,
        signals: SignalSource | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        may_act: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._stops = stops
        self._market = market
        self._config = config
        self._gateway = gateway
        self._keyring = keyring
        self._analyst = analyst
        self._notifier = notifier
        self._clock = clock
        self._binance: OrderedDict[int, tuple[float, BinanceExchange]] = OrderedDict()
        self._symbols = config.symbols  # the configured ones Binance lists (see start)
        self._bans_reported = 0
        self.settings_cache = SettingsCache(db)
        self.signals: SignalSource = signals if signals is not None else StreamingSignals()
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s)
        self.orders = OrderPath(
            db, stops, default_stop_params=self._stop_params, clock=clock, may_act=may_act
        )
        self.executor = Executor(
            db=db,
            market=market,
            stops=stops,
            orders=self.orders,
            exchange_for=self.exchange_for,
            signals=self.signals,
            settings=self.settings_cache,
            breaker=self.breaker,
            config=ExecutorConfig(
                symbols=config.symbols,
                quote_asset=config.quote_asset,
                max_concurrent_users=config.max_concurrent_users,
                fee_rate=float(config.paper_fee_rate),
            ),
            notifier=lambda: self._notifier,
            clock=clock,
        )
        self.started = False

    def attach_notifier(self, notifier: Notifier | None) -> None:
        """The Telegram layer is built after the engine; it plugs its notifier in here."""
        self._notifier = notifier

    @property
    def stop_store(self) -> StopStore:
        return self._stops

    # Start-up

    async def start(self) -> None:
        """Reconcile stops, resolve unsettled orders, protect every open position."""
        await self._stops.reconcile()
        await self.settings_cache.refresh()  # before recovery: settled buys get their own stops
        await self.orders.recover(self.exchange_for)
        open_positions = await position_store.list_open(self._db)
        open_ids = {position.id for position in open_positions}
        tracked = {stop.position_id for stop in self._stops.tracked()}
        for position_id in sorted(tracked - open_ids):
            await self._stops.remove(position_id)
        now = self._clock()
        for position in open_positions:
            if position.id not in tracked:
                params = self.settings_cache.params_for(position.user_id)
                state = initial_state(float(position.entry_price), params, now)
                await self._stops.add(position.id, position.user_id, position.symbol, state)
        if self._gateway is not None:
            try:
                await self._gateway.load_exchange_info()
            except (ExchangeError, TradingError) as error:
                logger.warning("Binance limits not read (%s); the default budget applies", error)
            else:
                self._leave_out_unlisted(self._gateway.listed_now())
        await self._warm_up()
        self.started = True
        logger.info(
            "trading engine started: mode=%s market=%s, %d open positions",
            self._config.mode.value,
            self._market.name,
            len(open_positions),
        )

    def _leave_out_unlisted(self, listed: frozenset[str]) -> None:
        """A configured symbol Binance does not list (a typo in ``LUNARA_SYMBOLS``, a
        delisting) is left out and named in the log, rather than refusing to start: a
        bot that does not start runs no stop for anyone's open positions, and one bad
        name must not cost the others their trading. (``exchangeInfo`` unreadable at
        start: the list stays as configured; the tick leaves a bad symbol out then.)"""
        unlisted = [symbol for symbol in self._config.symbols if symbol not in listed]
        if not unlisted or not listed:  # none listed at all: a broken reply, not typos
            return
        self._symbols = tuple(symbol for symbol in self._config.symbols if symbol in listed)
        self.executor.use_symbols(self._symbols)
        logger.error(
            "LUNARA_SYMBOLS names %s, which Binance does not list; left out (fix the "
            "setting): the bot trades %s",
            ", ".join(unlisted),
            ", ".join(self._symbols) or "no symbol until it is fixed",
        )

    async def _warm_up(self) -> None:
        for symbol in self._symbols:
            try:
                candles = await self._market.history(symbol, ANALYSIS_CANDLES)
            except (ExchangeError, TradingError) as error:  # what a market's reads raise
                logger.warning("no warm-up history for %s: %s", symbol, error)
                continue
            self.signals.feed(symbol, candles)

    async def _stop_params(self, user_id: int) -> TrailingParams:
        return self.settings_cache.params_for(user_id)

    # Exchanges

    async def exchange_for(self, user_id: int) -> Exchange:
        if self._config.mode is Mode.PAPER:
            return PaperExchange(
                self._db,
                user_id,
                self._market.prices,
                fee_rate=self._config.paper_fee_rate,
                slippage=self._config.paper_slippage,
                start_balance=self._config.paper_start_balance,
                quote_asset=self._config.quote_asset,
            )
        if self._gateway is None or self._keyring is None:
            raise TradingError("live trading is not configured on this bot")
        info = await credentials.info(self._db, user_id, credentials.Exchange.BINANCE)
        if info is None:
            raise TradingError("add your Binance API key first (/setkeys)")
        cached = self._binance.get(user_id)
        if cached is not None and cached[0] == info.updated_at:
            self._binance.move_to_end(user_id)
            return cached[1]
        pair = await credentials.load(
            self._db, self._keyring, user_id, credentials.Exchange.BINANCE
        )
        if pair is None:
            raise TradingError("add your Binance API key first (/setkeys)")
        exchange = BinanceExchange(self._gateway, pair.api_key, pair.api_secret)
        self._binance[user_id] = (info.updated_at, exchange)
        self._binance.move_to_end(user_id)
        while len(self._binance) > MAX_CACHED_CLIENTS:
            self._binance.popitem(last=False)
        return exchange

    # TradingService

    async def _require_user(self, user_id: int) -> users.User:
        user = await users.get(self._db, user_id)
        if user is None:
            raise TradingError("send /start first so the bot knows you")
        if not user.active:
            raise TradingError("your account is deactivated; ask an admin")
        return user

    def _check_symbol(self, symbol: str) -> str:
        name = symbol_name(symbol)
        if not self._symbols:
            raise TradingError("this bot trades no symbol: ask an admin to fix LUNARA_SYMBOLS")
        if name not in self._symbols:
            raise TradingError(
                f"{name[:MAX_SYMBOL_LENGTH]} is not traded by this bot; choose one of "
                + ", ".join(self._symbols)
            )
        return name

    async def _check_listed(self, symbol: str) -> None:
        """On Binance, ``symbol`` must be one ``exchangeInfo`` lists (a configured symbol
        is checked at start, unless Binance could not be read then)."""
        with _exchange_trouble():
            _refuse_unlisted(await self._unlisted((symbol,)))

    async def check_symbols(self, symbols: Sequence[str]) -> None:
        """``TradingError`` naming every symbol the exchange does not list. Without Binance
        (the simulator, a replay) every well-formed symbol has a market."""
        try:
            with _exchange_trouble():
                unlisted = await self._unlisted(symbols)
        except TradingError as error:
            raise TradingError(
                f"I could not check the symbols with Binance, so nothing was changed: "
                f"{error.message}"
            ) from None
        _refuse_unlisted(unlisted)

    async def _unlisted(self, symbols: Sequence[str]) -> list[str]:
        if self._gateway is None or not symbols:
            return []
        listed = await self._gateway.listed_symbols()
        return [symbol for symbol in dict.fromkeys(symbols) if symbol not in listed]

    async def validate_keys(self, api_key: str, api_secret: str) -> None:
        """Live mode: a signed account request with the new pair, before anything is stored."""
        if self._config.mode is Mode.PAPER:
            return
        if self._gateway is None:
            raise TradingError("live trading is not configured on this bot")
        try:
            exchange = BinanceExchange(self._gateway, api_key, api_secret)
            await exchange.check_access((self._symbols or self._config.symbols)[0])
        except CredentialsRejected as error:
            raise TradingError(
                f"Binance refused these keys, so I did not save them: {error}"
            ) from None
        except ExchangeError:
            raise TradingError(
                "I could not reach Binance to check these keys, so I did not save them; "
                "send /setkeys again in a minute"
            ) from None

    async def balances(self, user_id: int) -> list[AssetBalance]:
        await self._require_user(user_id)
        with _exchange_trouble():
            exchange = await self.exchange_for(user_id)
            return await exchange.balances(max_wait_s=INTERACTIVE_WAIT_S)

    async def positions(self, user_id: int) -> list[PositionView]:
        await self._require_user(user_id)
        open_positions = await position_store.list_open(self._db, user_id)
        if not open_positions:
            return []
        prices: dict[str, Decimal] = {}
        with contextlib.suppress(Exception):
            prices = await self._market.prices(sorted({p.symbol for p in open_positions}))
        stops = {stop.position_id: stop.state for stop in self._stops.tracked()}
        views: list[PositionView] = []
        for position in open_positions:
            state = stops.get(position.id)
            views.append(
                PositionView(
                    position_id=position.id,
                    symbol=position.symbol,
                    quantity=position.quantity,
                    entry_price=position.entry_price,
                    current_price=prices.get(position.symbol),
                    stop_price=None if state is None else state.stop_price,
                    trailing_active=False if state is None else state.activated,
                    opened_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(position.opened_at)),
                )
            )
        return views

    async def buy(
        self, user_id: int, symbol: str, quote_amount: Decimal, request_key: str | None = None
    ) -> OrderResult:
        with _exchange_trouble():
            return await self._buy(user_id, symbol, quote_amount, request_key)

    async def sell(self, user_id: int, symbol: str) -> list[OrderResult]:
        with _exchange_trouble():
            return await self._sell(user_id, symbol)

    async def _buy(
        self, user_id: int, symbol: str, quote_amount: Decimal, request_key: str | None
    ) -> OrderResult:
        user = await self._require_user(user_id)
        name = self._check_symbol(symbol)
        await self._check_listed(name)
        if await user_settings.is_trading_paused(self._db):
            raise TradingPaused("trading is paused by an admin; try again later")
        if not self.breaker.allows(user_id):
            raise TradingError("trading on your account is paused after repeated key failures")
        limits = plan_in_force(user, self._clock())
        open_positions = await position_store.list_open(self._db, user_id)
        if position_limit_reached(limits, len(open_positions)):
            raise TradingError(
                f"your plan allows {limits.max_open_positions} open positions; close one first"
            )
        price = (await self._market.prices([name])).get(name)
        if price is None:
            raise TradingError(f"no market price for {name} right now")
        exchange = await self.exchange_for(user_id)
        await self.settings_cache.refresh()  # the stop gets the trader's settings as they are
        stop_params = self.settings_cache.params_for(user_id)
        settlement = await self.orders.enter(
            exchange, user_id, name, quote_amount, price, stop_params, request_key
        )
        return _result(settlement)

    async def _sell(self, user_id: int, symbol: str) -> list[OrderResult]:
        await self._require_user(user_id)
        name = symbol_name(symbol)
        held = [p for p in await position_store.list_open(self._db, user_id) if p.symbol == name]
        if not held:
            raise TradingError(f"you have no open {name[:MAX_SYMBOL_LENGTH]} position")
        price = (await self._market.prices([name])).get(name)
        if price is None:
            raise TradingError(f"no market price for {name} right now")
        exchange = await self.exchange_for(user_id)
        results: list[OrderResult] = []
        for position in held:
            settlement = await self.orders.exit(
                exchange, user_id, position, price, ExitReason.MANUAL.value
            )
            results.append(_result(settlement))
        return results

    async def analyze(self, user_id: int, symbol: str, with_ai: bool) -> AnalysisView:
        user = await self._require_user(user_id)
        name = self._check_symbol(symbol)
        await self._check_listed(name)
        with _exchange_trouble():
            candles = await self._market.history(name, ANALYSIS_CANDLES)
        if not candles:
            raise TradingError(f"no market history for {name} yet; try again in a minute")
        try:
            result = analyze_candles(candles, symbol=name)
        except InsufficientData:
            raise TradingError(
                f"not enough market history for {name} yet; try again later"
            ) from None
        ai_text: str | None = None
        ai_note: str | None = None
        if with_ai:
            if self._analyst is None or not self._analyst.enabled:
                ai_note = NOTE_OFF
            else:
                limits = plan_in_force(user, self._clock())
                commentary = await self._analyst.comment(
                    user_id,
                    limits.name.value,
                    MarketSummary(
                        symbol=name,
                        interval=interval_name(self._market.interval_s),
                        candle_open_time=result.candle_open_time,
                        price=result.price,
                        indicators=dict(result.indicators),
                        symptoms=[symptom.value for symptom in result.symptoms],
                    ),
                    limit=limits.ai_analyses_per_day,
                )
                ai_text, ai_note = commentary.text, commentary.note
        return AnalysisView(
            symbol=name,
            indicators=dict(result.indicators),
            symptoms=tuple(symptom.value for symptom in result.symptoms),
            ai_commentary=ai_text,
            ai_note=ai_note,
            extra={"price": result.price, "interval": interval_name(self._market.interval_s)},
        )

    async def set_paused(self, paused: bool, by: str) -> None:
        await user_settings.set_trading_paused(self._db, paused, by)
        logger.info("trading %s by %s", "paused" if paused else "resumed", by)

    async def is_paused(self) -> bool:
        return await user_settings.is_trading_paused(self._db)

    async def engine_status(self) -> dict[str, Any]:
        report = self.executor.last_report
        return {
            "mode": self._config.mode.value,
            "market": self._market.name,
            "paused": await self.is_paused(),
            "started": self.started,
            "ticks": self.executor.ticks,
            "last_tick_at": None if report is None else report.at,
            "last_tick_ms": None if report is None else round(report.duration_s * 1000, 2),
            "open_positions": len(self._stops.tracked()),
            "paused_users": self.breaker.paused_users(),
            "stop_store": type(self._stops).__name__,
            "ai_enabled": self._analyst is not None and self._analyst.enabled,
        } | self.binance_limits()

    def binance_limits(self) -> dict[str, Any]:
        """Binance's request weight as it counts it and any IP ban (for /botstatus and
        metrics); empty when the bot does not talk to Binance."""
        if self._gateway is None:
            return {}
        limiter = self._gateway.limiter
        banned_until = limiter.banned_until
        return {
            "binance_weight_used_1m": limiter.used_weight,
            "binance_weight_budget_1m": limiter.budget,
            "binance_banned_for_s": round(limiter.banned_for_s),
            "binance_banned_until": None
            if banned_until is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(banned_until)),
        }

    async def report_ban_if_new(self) -> bool:
        """Tell the admins once per Binance IP ban (418); True when a report went out."""
        if self._gateway is None:
            return False
        limiter = self._gateway.limiter
        if limiter.bans == self._bans_reported or limiter.banned_for_s <= 0:
            return False
        self._bans_reported = limiter.bans
        until = self.binance_limits()["binance_banned_until"]
        text = (
            f"Binance banned this bot's IP address until {until} (HTTP 418, too many "
            "requests). No Binance request is sent until then: orders, stops and /balance "
            "fail at once. Check for another program on this IP using the API."
        )
        if not isinstance(self._notifier, AdminNotifier):
            return False
        try:
            await self._notifier.notify_admins(text)
        # The boundary with the messaging layer: telling the admins failed, trading goes on.
        except Exception as error:  # noqa: BLE001
            logger.warning("could not tell the admins of the Binance ban: %s",
                           type(error).__name__)  # fmt: skip
            return False
        return True


@contextlib.contextmanager
def _exchange_trouble() -> Iterator[None]:
    """At the service boundary an exchange problem is a clear answer, not an apology."""
    try:
        yield
    except OrderOutcomeUnknown as error:
        raise TradingError(str(error)) from None
    except CredentialsRejected:
        raise TradingError(
            "Binance refused your API key; check it and send /setkeys again"
        ) from None
    except IpBanned as error:
        raise TradingError(
            "Binance has blocked this bot's server for "
            f"{_minutes(error.retry_after_s)}; the admins know. Try again after that"
        ) from None
    except (RateLimited, ExchangeBusy):
        raise TradingError("Binance asked us to slow down; try again in a minute") from None
    except ExchangeError:
        raise TradingError("Binance is not answering right now; try again in a minute") from None


def _refuse_unlisted(unlisted: Sequence[str]) -> None:
    if unlisted:
        names = ", ".join(symbol[:20] for symbol in unlisted)
        raise TradingError(
            f"Binance does not list {names}; check the spelling (base and quote asset "
            "together, e.g. BTCUSDT)"
        )


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _result(settlement: Settlement) -> OrderResult:
    return OrderResult(
        client_order_id=settlement.order.client_order_id,
        symbol=settlement.order.symbol,
        side=settlement.order.side.value,
        quantity=settlement.fill.quantity,
        price=settlement.price,
        fee=settlement.fee_in_quote,
        position_id=settlement.position.id,
    )


class EngineRunner:
    """The engine as a runtime ``Service``: start, tick until stopped, finish cleanly."""

    name = SERVICE_NAME

    def __init__(self, engine: TradingEngine, *, tick_seconds: float) -> None:
        self._engine = engine
        self._tick_seconds = tick_seconds
        self.ready = asyncio.Event()  # stops reconciled, orders resolved: trading

    async def run(self, stop: asyncio.Event) -> None:
        engine = self._engine
        if not engine.started:
            await engine.start()
        self.ready.set()
        executor = engine.executor
        next_tick = time.monotonic()
        redis_down = False
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_tick:
                    try:
                        await executor.tick()
                        redis_down = False
                    except StaleEpoch:
                        # The keeper ends this run; until then nothing moves on Redis.
                        logger.error("the instance lease is not this instance's: trailing "
                                     "stops are not moved")  # fmt: skip
                    except REDIS_OUTAGE as error:
                        if not redis_down:  # once per outage; stops resume when it answers
                            logger.warning("Redis unavailable (%s); trailing stops wait for it",
                                           type(error).__name__)  # fmt: skip
                        redis_down = True
                    except Exception:
                        logger.exception("tick failed; the next one runs on schedule")
                    await engine.report_ban_if_new()
                    next_tick = max(next_tick + self._tick_seconds, time.monotonic())
                    continue
                await executor.checkpoint_if_due()
                wait = min(next_tick - now, executor.seconds_until_checkpoint())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.01))
        finally:
            await self._drain()

    async def _drain(self) -> None:
        cut_short = await self._engine.executor.finish_in_flight(ORDER_DRAIN_S)
        if cut_short:
            logger.warning("%d trader(s) cut short at shutdown; their orders are resolved on "
                           "start", cut_short)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._engine.orders.until_idle(), ORDER_DRAIN_S)
        if self._engine.orders.busy:
            logger.warning("orders still in flight at shutdown; they will be resolved on start")
        checkpointed = await self._engine.executor.checkpoint_if_due(force=True)
        logger.info("trading engine stopped; %d trailing stops checkpointed", checkpointed)


__all__: Sequence[str] = (
    "EngineConfig",
    "EngineRunner",
    "TradingEngine",
)
