"""From candles to an `Analysis`: indicator values plus symptoms, streaming or batch.

`StreamingAnalyzer` is the live path (one per symbol, O(1) per closed candle);
`analyze_candles` runs the batch indicators over a history (the `/analyze` command,
`lunara analyze`, backtests). Both give the same numbers.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lunara.analysis.indicators import atr, bbands, ema, macd, rsi
from lunara.analysis.params import AnalyzerParams
from lunara.analysis.streaming import (
    StreamingATR,
    StreamingBollinger,
    StreamingEMA,
    StreamingMACD,
    StreamingRSI,
)
from lunara.analysis.symptoms import Symptom

INDICATOR_NAMES = (
    "rsi",
    "ema_fast",
    "ema_slow",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "atr",
)


class CandleLike(Protocol):
    @property
    def open_time(self) -> int: ...
    @property
    def high(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def close(self) -> float: ...


class InsufficientData(ValueError):
    """Not enough candles yet; says how many are needed."""

    def __init__(self, needed: int, given: int) -> None:
        super().__init__(f"insufficient data: {needed} candles are needed, {given} given")
        self.needed = needed
        self.given = given


@dataclass(frozen=True)
class Analysis:
    """Indicator values and symptoms at one closed candle.

    `candle_open_time` and `previous_macd_hist` say which candle this is and what the
    MACD cross was judged against; `to_json` gives the documented public keys only.
    """

    symbol: str
    candle_open_time: int
    close: float
    rsi: float
    ema_fast: float
    ema_slow: float
    macd: float
    macd_signal: float
    macd_hist: float
    bb_upper: float
    bb_middle: float
    bb_lower: float
    atr: float
    previous_macd_hist: float | None
    symptoms: tuple[Symptom, ...]
    candles_used: int

    @property
    def price(self) -> float:
        return self.close

    @property
    def indicators(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in INDICATOR_NAMES}

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "close": self.close,
            **self.indicators,
            "symptoms": [symptom.value for symptom in self.symptoms],
            "candles_used": self.candles_used,
        }


def diagnose(
    params: AnalyzerParams,
    close: float,
    values: dict[str, float],
    previous_hist: float | None,
) -> tuple[Symptom, ...]:
    """Pure: the symptoms of one set of indicator values."""
    found: list[Symptom] = []
    if values["rsi"] <= params.rsi_oversold:
        found.append(Symptom.RSI_OVERSOLD)
    elif values["rsi"] >= params.rsi_overbought:
        found.append(Symptom.RSI_OVERBOUGHT)
    if previous_hist is not None:
        if previous_hist <= 0 < values["macd_hist"]:
            found.append(Symptom.MACD_BULLISH_CROSS)
        elif previous_hist >= 0 > values["macd_hist"]:
            found.append(Symptom.MACD_BEARISH_CROSS)
    if close > values["bb_upper"]:
        found.append(Symptom.PRICE_ABOVE_UPPER_BAND)
    elif close < values["bb_lower"]:
        found.append(Symptom.PRICE_BELOW_LOWER_BAND)
    if values["ema_fast"] > values["ema_slow"]:
        found.append(Symptom.EMA_BULLISH_TREND)
    elif values["ema_fast"] < values["ema_slow"]:
        found.append(Symptom.EMA_BEARISH_TREND)
    if close > 0 and values["atr"] / close > params.high_volatility_atr_ratio:
        found.append(Symptom.HIGH_VOLATILITY)
    return tuple(found)


def entry_signal(analysis: Analysis) -> bool:
    """The entry rule of auto mode and backtests: a bullish MACD cross in a bullish EMA
    trend, or an oversold RSI with the price below the lower band (a stretched dip)."""
    symptoms = set(analysis.symptoms)
    trend_cross = {Symptom.MACD_BULLISH_CROSS, Symptom.EMA_BULLISH_TREND} <= symptoms
    dip = {Symptom.RSI_OVERSOLD, Symptom.PRICE_BELOW_LOWER_BAND} <= symptoms
    return trend_cross or dip


def _build(
    symbol: str,
    params: AnalyzerParams,
    candle: CandleLike,
    values: dict[str, float],
    previous_hist: float | None,
    used: int,
) -> Analysis:
    return Analysis(
        symbol=symbol,
        candle_open_time=int(candle.open_time),
        close=float(candle.close),
        previous_macd_hist=previous_hist,
        symptoms=diagnose(params, float(candle.close), values, previous_hist),
        candles_used=used,
        **values,
    )


def analyze_candles(
    candles: Sequence[CandleLike], params: AnalyzerParams | None = None, symbol: str = ""
) -> Analysis:
    """The analysis at the last candle of `candles` (batch indicators)."""
    params = params or AnalyzerParams()
    if len(candles) < params.warmup:
        raise InsufficientData(params.warmup, len(candles))
    high = np.fromiter((c.high for c in candles), float, len(candles))
    low = np.fromiter((c.low for c in candles), float, len(candles))
    close = np.fromiter((c.close for c in candles), float, len(candles))
    series = batch_series(high, low, close, params)
    values = {name: float(series[name][-1]) for name in INDICATOR_NAMES}
    previous = float(series["macd_hist"][-2])
    previous_hist = None if math.isnan(previous) else previous
    return _build(symbol, params, candles[-1], values, previous_hist, len(candles))


def batch_series(
    high: np.ndarray[Any, np.dtype[np.float64]],
    low: np.ndarray[Any, np.dtype[np.float64]],
    close: np.ndarray[Any, np.dtype[np.float64]],
    params: AnalyzerParams,
) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
    """Every indicator over whole arrays (NaN during warm-up), for backtests."""
    line, signal, histogram = macd(close, params.ema_fast, params.ema_slow, params.macd_signal)
    upper, middle, lower = bbands(close, params.bb_period, params.bb_deviations)
    return {
        "rsi": rsi(close, params.rsi_period),
        "ema_fast": ema(close, params.ema_fast),
        "ema_slow": ema(close, params.ema_slow),
        "macd": line,
        "macd_signal": signal,
        "macd_hist": histogram,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr": atr(high, low, close, params.atr_period),
    }


class StreamingAnalyzer:
    """Indicators of one symbol, updated in O(1) time and memory by each closed candle.

    Feeds may overlap (a warm-up history, then live candles): a candle that does not
    open after the last one fed is skipped, so nothing is counted twice.
    """

    def __init__(self, symbol: str, params: AnalyzerParams | None = None) -> None:
        self.symbol = symbol
        self.params = params = params or AnalyzerParams()
        self._rsi = StreamingRSI(params.rsi_period)
        self._fast = StreamingEMA(params.ema_fast)
        self._slow = StreamingEMA(params.ema_slow)
        self._macd = StreamingMACD(params.ema_fast, params.ema_slow, params.macd_signal)
        self._bands = StreamingBollinger(params.bb_period, params.bb_deviations)
        self._atr = StreamingATR(params.atr_period)
        self._previous_hist: float | None = None
        self.last_open_time: int | None = None
        self.count = 0
        self.latest: Analysis | None = None

    def update(self, candle: CandleLike) -> Analysis | None:
        """Feed one closed candle; the analysis once every indicator is warm, else None."""
        open_time = int(candle.open_time)
        if self.last_open_time is not None and open_time <= self.last_open_time:
            return self.latest
        self.last_open_time = open_time
        self.count += 1
        close = float(candle.close)
        self._rsi.update(close)
        self._fast.update(close)
        self._slow.update(close)
        self._macd.update(close)
        self._bands.update(close)
        self._atr.update(float(candle.high), float(candle.low), close)
        previous_hist = self._previous_hist
        self._previous_hist = self._macd.histogram
        if self.count < self.params.warmup:
            return None
        values = {
            "rsi": self._rsi.value,
            "ema_fast": self._fast.value,
            "ema_slow": self._slow.value,
            "macd": self._macd.line,
            "macd_signal": self._macd.signal,
            "macd_hist": self._macd.histogram,
            "bb_upper": self._bands.upper,
            "bb_middle": self._bands.middle,
            "bb_lower": self._bands.lower,
            "atr": self._atr.value,
        }
        ready = {name: float(value) for name, value in values.items() if value is not None}
        self.latest = _build(self.symbol, self.params, candle, ready, previous_hist, self.count)
        return self.latest

    def require(self) -> Analysis:
        """The latest analysis, or InsufficientData saying how many candles are missing."""
        if self.latest is None:
            raise InsufficientData(self.params.warmup, self.count)
        return self.latest


class AnalyzerRegistry:
    """One StreamingAnalyzer per symbol, for one set of parameters, at most `max_symbols`.

    Memory stays bounded however many symbols are asked for: feeding a new symbol when
    full drops the symbol fed least recently (its state is rebuilt from a fresh history
    if it comes back, and says so with InsufficientData until warm).
    """

    def __init__(self, params: AnalyzerParams | None = None, max_symbols: int = 64) -> None:
        if max_symbols < 1:
            raise ValueError(f"max_symbols must be at least 1 (got {max_symbols})")
        self.params = params or AnalyzerParams()
        self.max_symbols = max_symbols
        self._analyzers: OrderedDict[str, StreamingAnalyzer] = OrderedDict()

    def feed(self, symbol: str, candles: Iterable[CandleLike]) -> Analysis | None:
        """Feed closed candles of `symbol` in order; its latest analysis (None if not warm)."""
        analyzer = self._analyzers.get(symbol)
        if analyzer is None:
            analyzer = self._analyzers[symbol] = StreamingAnalyzer(symbol, self.params)
            while len(self._analyzers) > self.max_symbols:
                self._analyzers.popitem(last=False)
        else:
            self._analyzers.move_to_end(symbol)
        for candle in candles:
            analyzer.update(candle)
        return analyzer.latest

    def latest(self, symbol: str) -> Analysis | None:
        analyzer = self._analyzers.get(symbol)
        return None if analyzer is None else analyzer.latest

    def require(self, symbol: str) -> Analysis:
        """The latest analysis of `symbol`, or InsufficientData (none fed counts as 0)."""
        analyzer = self._analyzers.get(symbol)
        if analyzer is None:
            raise InsufficientData(self.params.warmup, 0)
        return analyzer.require()

    def symbols(self) -> list[str]:
        """Symbols held, least recently fed first."""
        return list(self._analyzers)

    def __len__(self) -> int:
        return len(self._analyzers)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._analyzers
