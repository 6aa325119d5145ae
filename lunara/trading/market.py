"""Where prices and candles come from: a seeded simulator, Binance, or a recorded file.

The executor asks once per tick for every symbol it needs (``tick``): one request for
all of them on Binance (``GET /api/v3/ticker/price?symbols=[...]``), never one per
symbol or per trader. Candles for the analyzers are built from those same prices
(``CandleBuilder``), so watching more symbols costs no extra requests; only the warm-up
history at start and an explicit ``/analyze`` read klines.

``SimMarket`` (the default) needs no network: a geometric random walk per symbol,
seeded by ``(seed, symbol)``, so the same seed gives the same prices on every machine
and adding a symbol does not change the others. Its clock is the tick counter, not
the wall clock, which keeps it deterministic.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from lunara.analysis.candles import Candle, read_klines_csv
from lunara.services import TradingError
from lunara.trading.binance import BinanceGateway, Weight

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60
HISTORY_LIMIT = 500
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
    """One tick: the time (market time, seconds), every asked-for price, new closed candles."""

    at: float
    prices: dict[str, Decimal]
    closed: dict[str, list[Candle]] = field(default_factory=dict)


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
        self._interval_s = interval_s
        self._volatility = volatility
        self._warmup = warmup_candles
        self._step = 0
        self._walks: dict[str, _Walk] = {}
        self._builder = CandleBuilder(interval_s)

    @property
    def name(self) -> str:
        return "sim"

    @property
    def interval_s(self) -> int:
        return self._interval_s

    @property
    def requests_sent(self) -> int:
        return 0

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
        interval_ms = self._interval_s * 1000
        first_open = (int(self.now * 1000) // interval_ms - self._warmup) * interval_ms
        candles = _walk_candles(walk, self._warmup, first_open, self._interval_s, self._tick_s)
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
    """Public Binance prices, batched: one ``ticker/price`` request per tick."""

    def __init__(self, gateway: BinanceGateway, *, interval_s: int = DEFAULT_INTERVAL_S) -> None:
        self._gateway = gateway
        self._interval_s = interval_s
        self._builder = CandleBuilder(interval_s)
        self._loaded: set[str] = set()

    @property
    def name(self) -> str:
        return "binance"

    @property
    def interval_s(self) -> int:
        return self._interval_s

    @property
    def requests_sent(self) -> int:
        return self._gateway.requests_sent

    async def prices(self, symbols: Sequence[str]) -> dict[str, Decimal]:
        wanted = sorted(set(symbols))
        if not wanted:
            return {}
        client = self._gateway.public
        reply = await self._gateway.call(
            client,
            Weight.PRICES,
            client.get_symbol_ticker,
            symbols=json.dumps(wanted, separators=(",", ":")),
        )
        entries = reply if isinstance(reply, list) else [reply]
        found: dict[str, Decimal] = {}
        for entry in entries:
            try:
                found[str(entry["symbol"])] = Decimal(str(entry["price"]))
            except (KeyError, ArithmeticError, TypeError):
                logger.warning("ignoring an unreadable ticker entry from Binance")
        return {symbol: price for symbol, price in found.items() if symbol in wanted}

    async def tick(self, symbols: Sequence[str], now: float) -> MarketTick:
        prices = await self.prices(symbols)
        closed: dict[str, list[Candle]] = {}
        for symbol, price in prices.items():
            candle = self._builder.add(symbol, now, float(price))
            if candle is not None:
                closed[symbol] = [candle]
        return MarketTick(now, prices, closed)

    async def history(self, symbol: str, limit: int) -> list[Candle]:
        if symbol not in self._loaded:
            client = self._gateway.public
            rows = await self._gateway.call(
                client,
                Weight.KLINES,
                client.get_klines,
                symbol=symbol,
                interval=interval_name(self._interval_s),
                limit=min(max(limit, 1), 1000),
            )
            candles = [_kline(row) for row in rows]
            # The last kline is still open: only closed ones feed the analyzers.
            self._builder.remember(symbol, candles[:-1])
            self._loaded.add(symbol)
        return self._builder.closed(symbol)[-limit:]


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

    def __init__(self, path: Path, *, interval_s: int | None = None) -> None:
        try:
            candles = read_klines_csv(path)
        except (OSError, ValueError) as error:
            raise TradingError(f"cannot replay {path}: {error}") from None
        if not candles:
            raise TradingError(f"cannot replay {path}: it holds no candles")
        self._candles = candles
        step_ms = candles[1].open_time - candles[0].open_time if len(candles) > 1 else 60_000
        self._interval_s = interval_s or max(1, step_ms // 1000)
        self._delivered = 0
        self._ended_logged = False

    @property
    def name(self) -> str:
        return "replay"

    @property
    def interval_s(self) -> int:
        return self._interval_s

    @property
    def requests_sent(self) -> int:
        return 0

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
            (last.open_time + self._interval_s * 1000) / 1000,
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
