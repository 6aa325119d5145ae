"""Where prices and candles come from: a seeded simulator, Binance, or a recorded file.

The executor asks once per tick for every symbol it needs (``tick``): one request for
all of them on Binance (``GET /api/v3/ticker/price?symbols=[...]``), never one per
symbol or per trader. The analyzers' candles on Binance are Binance's own closed
klines (the same ``/analyze`` and a backtest read): one small request per symbol per
closed minute. The simulator builds its candles from its own walk (``CandleBuilder``).

``SimMarket`` (the default) needs no network: a geometric random walk per symbol,
seeded by ``(seed, symbol)``, so the same seed gives the same prices on every machine
and adding a symbol does not change the others. Its clock is the tick counter, not
the wall clock, which keeps it deterministic.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from lunara.analysis.candles import Candle, CandleWindow, read_klines_csv
from lunara.services import TradingError
from lunara.trading.binance import BinanceGateway, ErrorCode, Weight
from lunara.trading.exchange import ExchangeError, OrderRefused

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60
HISTORY_LIMIT = 500
MAX_KLINES = 1000  # Binance's most klines per request
MAX_CANDLE_SYMBOLS = 128  # symbols whose candles BinanceMarket keeps (memory stays bounded)
KLINE_SETTLE_S = 2.0  # a kline counts as closed this long after its end (clock skew)
SIM_ORIGIN_S = 1_700_000_000  # synthetic start time of the simulated market
SIM_STEP_VOLATILITY = 0.0015  # standard deviation of one tick's log return
SIM_WARMUP_CANDLES = 200

# Plausible starting prices so paper balances and filters behave like the real market.
SIM_START_PRICES: dict[str, float] = {
    "BTCUSDT": 60_000.0,
    "ETHUSDT": 3_000.0,
    "BNBUSDT": 600.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 0.6,
}

INTERVAL_NAMES: dict[int, str] = {60: "1m", 180: "3m", 300: "5m", 900: "15m", 3600: "1h"}


def interval_name(seconds: int) -> str:
    return INTERVAL_NAMES.get(seconds, f"{seconds}s")


def to_price(value: float) -> Decimal:
    """A float price as a Decimal with ten significant digits (no binary tail)."""
    return Decimal(format(value, ".10g"))


@dataclass(frozen=True)
class MarketTick:
    """One tick: the time (market time, seconds), every price found, new closed candles."""

    at: float
    prices: dict[str, Decimal]
    closed: dict[str, list[Candle]] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()
    """Symbols the exchange refused as unknown (they have no price in ``prices``)."""


class Market(Protocol):
    """A source of prices and candles; ``requests_sent`` counts requests to a server."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> int: ...

    @property
    def requests_sent(self) -> int: ...

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        """Current prices of ``symbols`` in one request; unknown symbols are left out."""
        ...

    async def tick(self, symbols: Sequence[str], now: float) -> MarketTick:
        """Advance to ``now`` (the simulator and replay use their own clock)."""
        ...

    async def history(self, symbol: str, limit: int) -> list[Candle]:
        """Closed candles, oldest first, at most ``limit``."""
        ...


class CandleBuilder:
    """Aggregates observed prices into fixed-interval candles; pure, no I/O."""

    def __init__(self, interval_s: int, keep: int = HISTORY_LIMIT) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_ms = interval_s * 1000
        self._keep = keep
        self._open: dict[str, list[float]] = {}  # symbol -> [open_time_ms, o, h, l, c]
        self._closed: dict[str, deque[Candle]] = {}

    def add(self, symbol: str, at_s: float, price: float) -> Candle | None:
        """Record a price; returns the candle that this price closed, if any."""
        bucket = int(at_s * 1000) // self._interval_ms * self._interval_ms
        current = self._open.get(symbol)
        if current is None:
            self._open[symbol] = [bucket, price, price, price, price]
            return None
        if bucket <= current[0]:
            current[2] = max(current[2], price)
            current[3] = min(current[3], price)
            current[4] = price
            return None
        closed = self._finish(symbol, current)
        self._open[symbol] = [bucket, price, price, price, price]
        return closed

    def _finish(self, symbol: str, current: list[float]) -> Candle:
        open_time = int(current[0])
        candle = Candle(
            open_time=open_time,
            open=current[1],
            high=current[2],
            low=current[3],
            close=current[4],
            volume=0.0,
        )
        self.remember(symbol, [candle])
        return candle

    def remember(self, symbol: str, candles: Sequence[Candle]) -> None:
        kept = self._closed.get(symbol)
        if kept is None:
            kept = self._closed[symbol] = deque(maxlen=self._keep)
        kept.extend(candles)

    def closed(self, symbol: str) -> list[Candle]:
        return list(self._closed.get(symbol, ()))


class _Walk:
    """One symbol's random walk; its RNG is seeded by (seed, symbol) alone."""

    def __init__(self, seed: int, symbol: str, start: float, volatility: float) -> None:
        self._rng = random.Random(f"{seed}:{symbol}")
        self.price = start
        self._volatility = volatility

    def step(self) -> float:
        self.price *= math.exp(self._rng.gauss(0.0, self._volatility))
        return self.price


def _sim_start_price(symbol: str) -> float:
    known = SIM_START_PRICES.get(symbol)
    if known is not None:
        return known
    rng = random.Random(symbol)
    return float(10 ** rng.randint(-1, 3))


class SimMarket:
    """Offline, seeded, deterministic; one tick advances every walk by one step."""

    name = "sim"
    requests_sent = 0  # offline: it never asks a server

    def __init__(
        self,
        seed: int = 0,
        *,
        tick_s: float = 5.0,
        interval_s: int = DEFAULT_INTERVAL_S,
        volatility: float = SIM_STEP_VOLATILITY,
        warmup_candles: int = SIM_WARMUP_CANDLES,
    ) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self._seed = seed
        self._tick_s = tick_s
        self.interval_s = interval_s
        self._volatility = volatility
        self._warmup = warmup_candles
        self._step = 0
        self._walks: dict[str, _Walk] = {}
        self._builder = CandleBuilder(interval_s)

    @property
    def now(self) -> float:
        return SIM_ORIGIN_S + self._step * self._tick_s

    def _walk(self, symbol: str) -> _Walk:
        walk = self._walks.get(symbol)
        if walk is None:
            walk = self._walks[symbol] = _Walk(
                self._seed, symbol, _sim_start_price(symbol), self._volatility
            )
            self._warm_up(symbol, walk)
        return walk

    def _warm_up(self, symbol: str, walk: _Walk) -> None:
        """History before the first tick, from the same walk, so indicators start warm."""
        interval_ms = self.interval_s * 1000
        first_open = (int(self.now * 1000) // interval_ms - self._warmup) * interval_ms
        candles = _walk_candles(walk, self._warmup, first_open, self.interval_s, self._tick_s)
        self._builder.remember(symbol, candles)

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        return {symbol: to_price(self._walk(symbol).price) for symbol in symbols}

    async def tick(self, symbols: Sequence[str], now: float) -> MarketTick:
        self._step += 1
        at = self.now
        prices: dict[str, Decimal] = {}
        closed: dict[str, list[Candle]] = {}
        for symbol in symbols:
            walk = self._walk(symbol)
            price = walk.step()
            prices[symbol] = to_price(price)
            candle = self._builder.add(symbol, at, price)
            if candle is not None:
                closed[symbol] = [candle]
        return MarketTick(at, prices, closed)

    async def history(self, symbol: str, limit: int) -> list[Candle]:
        self._walk(symbol)
        return self._builder.closed(symbol)[-limit:]


class BinanceMarket:
    """Binance's own market data: one batched ``ticker/price`` request per tick for the
    prices, and Binance's closed 1-minute klines for the candles.

    Prices: one unknown symbol makes Binance refuse the whole batch (HTTP 400, -1121
    "Invalid symbol."). A refused batch is split in halves until the bad symbol stands
    alone, so every other symbol still gets its price (and every stop on it runs); the
    bad one is remembered and left out of later batches, so the split costs a few
    requests once, not every tick. It is tried again only after a fresh ``exchangeInfo``
    read lists it (``unknown`` says which symbols are out, for the executor to report).

    Candles are the klines ``/analyze`` and the backtests read, wicks and volume
    included: at a symbol's first use its history (``history_limit`` closed candles),
    then at most one ``klines`` request per symbol per closed candle, from just after
    the last one held (``startTime``). Binance sends the candle still being built last;
    it is dropped here: a candle counts as closed ``KLINE_SETTLE_S`` after its end by our
    clock, which also absorbs a clock a little ahead of Binance's.
    """

    name = "binance"

    def __init__(
        self,
        gateway: BinanceGateway,
        *,
        interval_s: int = DEFAULT_INTERVAL_S,
        history_limit: int = HISTORY_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= history_limit <= MAX_KLINES:
            raise ValueError(f"history_limit must be from 1 to {MAX_KLINES}")
        self._gateway = gateway
        self.interval_s = interval_s
        self._history_limit = history_limit
        self._clock = clock
        self._candles: OrderedDict[str, CandleWindow] = OrderedDict()  # least recent first
        self._asked_for: dict[str, int] = {}  # symbol -> the cut-off its klines were read for
        self._delivered: dict[str, int] = {}  # symbol -> open time of the last candle ticked out
        self._kline_trouble: set[str] = set()  # symbols whose last klines read failed (logged)
        self._unknown: set[str] = set()
        self._unknown_logged: set[str] = set()
        self._listing_version = gateway.listing_version

    @property
    def requests_sent(self) -> int:
        return self._gateway.requests_sent

    @property
    def unknown(self) -> frozenset[str]:
        """Symbols Binance refused as unknown; they get no price until it lists them."""
        return frozenset(self._unknown)

    # Prices

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        self._forget_relisted()
        wanted = sorted(set(symbols) - self._unknown)
        if not wanted:
            return {}
        return await self._prices_splitting(wanted)

    async def _prices_splitting(self, batch: list[str]) -> dict[str, Decimal]:
        """One request for ``batch``; on -1121 the halves are asked on their own."""
        try:
            return await self._ticker(batch)
        except OrderRefused as error:
            if error.code != ErrorCode.INVALID_SYMBOL:
                raise
        if len(batch) == 1:
            self._mark_unknown(batch[0])
            return {}
        middle = len(batch) // 2
        first = await self._prices_splitting(batch[:middle])
        return first | await self._prices_splitting(batch[middle:])

    async def _ticker(self, batch: list[str]) -> dict[str, Decimal]:
        client = self._gateway.public
        reply = await self._gateway.call(
            client,
            Weight.PRICES,
            client.get_symbol_ticker,
            symbols=json.dumps(batch, separators=(",", ":")),
        )
        entries = reply if isinstance(reply, list) else [reply]
        found: dict[str, Decimal] = {}
        for entry in entries:
            try:
                found[str(entry["symbol"])] = Decimal(str(entry["price"]))
            except (KeyError, ArithmeticError, TypeError):
                logger.warning("ignoring an unreadable ticker entry from Binance")
        return {symbol: price for symbol, price in found.items() if symbol in batch}

    def _mark_unknown(self, symbol: str) -> None:
        self._unknown.add(symbol)
        self._candles.pop(symbol, None)
        if symbol not in self._unknown_logged:  # once, also across re-checks
            self._unknown_logged.add(symbol)
            logger.warning(
                "Binance does not know the symbol %s (-1121 Invalid symbol): it gets no "
                "price, candles or stops until Binance lists it; every other symbol goes on",
                symbol[:20],
            )

    def _forget_relisted(self) -> None:
        """After a fresh ``exchangeInfo`` read, symbols it lists are asked for again."""
        version = self._gateway.listing_version
        if version == self._listing_version:
            return
        self._listing_version = version
        relisted = self._unknown & self._gateway.listed_now()
        for symbol in sorted(relisted):
            logger.info("Binance lists %s again; its prices are asked for again", symbol)
        self._unknown -= relisted
        self._unknown_logged -= relisted

    async def _recheck_unknown_if_due(self) -> None:
        """While symbols are out, ``exchangeInfo`` is read once per the gateway's rules
        lifetime (an hour), so a symbol Binance lists again comes back."""
        if not self._unknown:
            return
        try:
            await self._gateway.listed_symbols()
        except (ExchangeError, TradingError) as error:
            logger.debug("exchangeInfo not read for the symbol re-check: %s", error)

    # The tick

    async def tick(self, symbols: Sequence[str], now: float) -> MarketTick:
        await self._recheck_unknown_if_due()
        prices = await self.prices(symbols)
        # Side by side (within the gateway's concurrency bound): at a minute's close every
        # symbol in use reads its new kline, and the stops wait for this tick to return.
        in_use = sorted(prices)
        fresh = await asyncio.gather(*(self._new_closed(symbol, now) for symbol in in_use))
        closed = {symbol: candles for symbol, candles in zip(in_use, fresh, strict=True) if candles}
        return MarketTick(now, prices, closed, unknown=frozenset(self._unknown))

    async def _new_closed(self, symbol: str, now: float) -> list[Candle]:
        """The closed candles of ``symbol`` not yet ticked out (at first use, its history)."""
        window = await self._refreshed(symbol, now)
        if window is None:
            return []
        after = self._delivered.get(symbol)
        fresh = [c for c in window if after is None or c.open_time > after]
        if fresh:
            self._delivered[symbol] = fresh[-1].open_time
        return fresh

    async def history(self, symbol: str, limit: int) -> list[Candle]:
        window = await self._refreshed(symbol, self._clock(), strict=True)
        return [] if window is None else window.candles()[-limit:]

    # Klines

    def _cutoff_ms(self, now: float) -> int:
        """Candles opening before this have closed (by ``KLINE_SETTLE_S`` at least)."""
        interval_ms = self.interval_s * 1000
        return int((now - KLINE_SETTLE_S) * 1000) // interval_ms * interval_ms

    async def _refreshed(
        self, symbol: str, now: float, *, strict: bool = False
    ) -> CandleWindow | None:
        """``symbol``'s candles brought up to ``now``: one klines request at most per
        closed candle. A failed read is logged and tried again at the next close
        (``strict``: raised, for ``/analyze``, when nothing is held yet)."""
        if symbol in self._unknown:
            return None
        cutoff = self._cutoff_ms(now)
        window = self._candles.get(symbol)
        newest = None if window is None else window.newest
        interval_ms = self.interval_s * 1000
        due = newest is None or newest.open_time + interval_ms < cutoff
        if not due or self._asked_for.get(symbol) == cutoff:
            return window
        self._asked_for[symbol] = cutoff
        gap = None if newest is None else (cutoff - newest.open_time) // interval_ms - 1
        try:
            if newest is None or gap is None or gap > self._history_limit:
                # One more than kept: Binance's last one is still open.
                rows = await self._klines(symbol, limit=min(self._history_limit + 1, MAX_KLINES))
                window = self._candles[symbol] = CandleWindow(self._history_limit)
            else:
                rows = await self._klines(
                    symbol, limit=MAX_KLINES, startTime=newest.open_time + interval_ms
                )
        except (ExchangeError, TradingError) as error:
            if strict and window is None:
                raise
            if symbol not in self._kline_trouble:
                self._kline_trouble.add(symbol)
                logger.warning("klines for %s not read (%s); tried again at the next close",
                               symbol, error)  # fmt: skip
            return window
        self._kline_trouble.discard(symbol)
        assert window is not None
        window.extend(_closed_candles(rows, cutoff, int(now * 1000)))
        self._keep_recent(symbol)
        return window

    def _keep_recent(self, symbol: str) -> None:
        """The least recently used symbol's candles go when too many are held; if it comes
        back, its history is read again (and ticked out again: analyzers skip repeats)."""
        self._candles.move_to_end(symbol)
        while len(self._candles) > MAX_CANDLE_SYMBOLS:
            gone, _ = self._candles.popitem(last=False)
            self._asked_for.pop(gone, None)
            self._delivered.pop(gone, None)

    async def _klines(self, symbol: str, **params: Any) -> list[Sequence[object]]:
        client = self._gateway.public
        rows = await self._gateway.call(
            client,
            Weight.KLINES,
            client.get_klines,
            symbol=symbol,
            interval=interval_name(self.interval_s),
            **params,
        )
        return list(rows or ())


def _closed_candles(rows: Sequence[Sequence[object]], cutoff_ms: int, now_ms: int) -> list[Candle]:
    """Klines rows → the closed candles among them, oldest first. Binance sends the candle
    still being built last (its close time lies ahead): it never leaves here."""
    candles: list[Candle] = []
    for row in rows:
        try:
            candle = _kline(row)
            close_time = int(str(row[6]))
        except (IndexError, ValueError):
            logger.warning("ignoring an unreadable kline from Binance")
            continue
        if candle.open_time < cutoff_ms and close_time < now_ms:
            candles.append(candle)
    return sorted(candles, key=lambda candle: candle.open_time)


def _kline(row: Sequence[object]) -> Candle:
    return Candle(
        open_time=int(str(row[0])),
        open=float(str(row[1])),
        high=float(str(row[2])),
        low=float(str(row[3])),
        close=float(str(row[4])),
        volume=float(str(row[5])),
    )


class ReplayMarket:
    """Recorded klines played back one candle per tick; the last close holds at the end.

    Every symbol follows the file's series (a recording is one market); the price at any
    moment is the close of the last candle delivered.
    """

    name = "replay"
    requests_sent = 0  # it reads its file, never a server

    def __init__(self, path: Path, *, interval_s: int | None = None) -> None:
        try:
            candles = read_klines_csv(path)
        except (OSError, ValueError) as error:
            raise TradingError(f"cannot replay {path}: {error}") from None
        if not candles:
            raise TradingError(f"cannot replay {path}: it holds no candles")
        self._candles = candles
        step_ms = candles[1].open_time - candles[0].open_time if len(candles) > 1 else 60_000
        self.interval_s = interval_s or max(1, step_ms // 1000)
        self._delivered = 0
        self._ended_logged = False

    def _price(self) -> Decimal:
        if self._delivered == 0:
            return to_price(self._candles[0].open)
        return to_price(self._candles[self._delivered - 1].close)

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        price = self._price()
        return {symbol: price for symbol in symbols}

    async def tick(self, symbols: Sequence[str], now: float) -> MarketTick:
        closed: dict[str, list[Candle]] = {}
        if self._delivered < len(self._candles):
            candle = self._candles[self._delivered]
            self._delivered += 1
            closed = {symbol: [candle] for symbol in symbols}
        elif not self._ended_logged:
            logger.info("replay reached the end of its file; the last price holds")
            self._ended_logged = True
        last = self._candles[max(self._delivered - 1, 0)]
        price = self._price()
        return MarketTick(
            (last.open_time + self.interval_s * 1000) / 1000,
            {symbol: price for symbol in symbols},
            closed,
        )

    async def history(self, symbol: str, limit: int) -> list[Candle]:
        return self._candles[max(0, self._delivered - limit) : self._delivered]


def simulated_candles(
    symbol: str,
    count: int,
    *,
    seed: int = 0,
    interval_s: int = DEFAULT_INTERVAL_S,
    tick_s: float = 5.0,
    volatility: float = SIM_STEP_VOLATILITY,
) -> list[Candle]:
    """`count` candles of the sim market's seeded walk for `symbol` (backtests)."""
    walk = _Walk(seed, symbol, _sim_start_price(symbol), volatility)
    interval_ms = interval_s * 1000
    first_open = int(SIM_ORIGIN_S * 1000) // interval_ms * interval_ms
    return _walk_candles(walk, count, first_open, interval_s, tick_s)


def _walk_candles(
    walk: _Walk, count: int, first_open_ms: int, interval_s: int, tick_s: float
) -> list[Candle]:
    """`count` consecutive candles of `walk`, one walk step per tick."""
    steps_per_candle = max(1, round(interval_s / tick_s))
    interval_ms = interval_s * 1000
    candles: list[Candle] = []
    for index in range(count):
        open_price = walk.price
        path = [walk.step() for _ in range(steps_per_candle)]
        candles.append(
            Candle(
                open_time=first_open_ms + index * interval_ms,
                open=open_price,
                high=max(open_price, *path),
                low=min(open_price, *path),
                close=path[-1],
                volume=0.0,
            )
        )
    return candles
