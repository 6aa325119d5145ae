"""Streaming indicators equal TA-Lib and the batch functions at every candle, in O(1) state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.analysis import (
    AnalyzerParams,
    AnalyzerRegistry,
    InsufficientData,
    StreamingAnalyzer,
    analyze_candles,
    batch_series,
)
from lunara.analysis.candles import Candle
from lunara.analysis.streaming import StreamingBollinger

from .test_indicators import random_walk

RELATIVE = 1e-9
NEAR_ZERO = 1e-9


def candles_of(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> list[Candle]:
    return [
        Candle(i * 60_000, float(close[i]), float(high[i]), float(low[i]), float(close[i]), 1.0)
        for i in range(len(close))
    ]


def talib_series(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, params: AnalyzerParams
) -> dict[str, np.ndarray]:
    line, signal, histogram = talib.MACD(
        close, params.ema_fast, params.ema_slow, params.macd_signal
    )
    upper, middle, lower = talib.BBANDS(
        close, params.bb_period, params.bb_deviations, params.bb_deviations
    )
    return {
        "rsi": talib.RSI(close, params.rsi_period),
        "ema_fast": talib.EMA(close, params.ema_fast),
        "ema_slow": talib.EMA(close, params.ema_slow),
        "macd": line,
        "macd_signal": signal,
        "macd_hist": histogram,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "atr": talib.ATR(high, low, close, params.atr_period),
    }


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(1, 300),
    rsi_period=st.integers(2, 30),
    fast=st.integers(2, 20),
    extra=st.integers(1, 20),
    signal=st.integers(2, 15),
    bb_period=st.integers(2, 40),
    atr_period=st.integers(2, 30),
)
def test_streaming_equals_talib_and_batch_at_every_candle(
    seed: int,
    count: int,
    rsi_period: int,
    fast: int,
    extra: int,
    signal: int,
    bb_period: int,
    atr_period: int,
) -> None:
    params = AnalyzerParams(
        rsi_period=rsi_period,
        ema_fast=fast,
        ema_slow=fast + extra,
        macd_signal=signal,
        bb_period=bb_period,
        atr_period=atr_period,
    )
    high, low, close = random_walk(seed, count)
    reference = talib_series(high, low, close, params)
    batch = batch_series(high, low, close, params)
    stream = StreamingAnalyzer("BTCUSDT", params)
    for index, candle in enumerate(candles_of(high, low, close)):
        result = stream.update(candle)
        if index + 1 < params.warmup:
            assert result is None
            continue
        assert result is not None
        for name, value in result.indicators.items():
            assert not math.isnan(reference[name][index]), name
            assert value == pytest.approx(reference[name][index], rel=RELATIVE, abs=NEAR_ZERO), name
            assert value == pytest.approx(batch[name][index], rel=RELATIVE, abs=NEAR_ZERO), name
    if count >= params.warmup:
        final = analyze_candles(candles_of(high, low, close), params, "BTCUSDT")
        assert stream.latest is not None
        assert final.symptoms == stream.latest.symptoms
        assert final.indicators == pytest.approx(
            stream.latest.indicators, rel=RELATIVE, abs=NEAR_ZERO
        )
        assert final.candles_used == stream.latest.candles_used == count


def test_a_long_stream_at_high_prices_keeps_exact_bands() -> None:
    """No drift from the running sums: 100k quiet candles at a Bitcoin-like price."""
    _, _, close = random_walk(9, 100_000, start=60_000.0, step=2.0)
    bands = StreamingBollinger(20, 2.0)
    upper, _, lower = talib.BBANDS(close, 20, 2, 2)
    for index, value in enumerate(close.tolist()):
        bands.update(value)
        if index >= 19 and index % 997 == 0:
            window = close[index - 19 : index + 1]
            assert bands.middle == pytest.approx(window.mean(), rel=1e-12)
            assert bands.upper is not None
            assert bands.lower is not None
            spread = (bands.upper - bands.lower) / 4
            assert spread == pytest.approx(window.std(), rel=1e-7)
            assert bands.upper == pytest.approx(upper[index], rel=RELATIVE)
            assert bands.lower == pytest.approx(lower[index], rel=RELATIVE)


def test_streaming_state_stays_bounded() -> None:
    high, low, close = random_walk(5, 5000)
    stream = StreamingAnalyzer("ETHUSDT")
    for candle in candles_of(high, low, close):
        stream.update(candle)
    assert len(stream._bands._window) == stream.params.bb_period
    assert len(stream._macd._recent) <= stream.params.ema_fast


def test_a_candle_fed_twice_or_late_is_skipped() -> None:
    high, low, close = random_walk(6, 80)
    candles = candles_of(high, low, close)
    once = StreamingAnalyzer("BTCUSDT")
    overlapping = StreamingAnalyzer("BTCUSDT")
    for candle in candles:
        once.update(candle)
    for candle in candles[:60] + candles[50:]:  # a history, then a live feed that overlaps
        overlapping.update(candle)
    assert overlapping.count == once.count == 80
    assert overlapping.latest == once.latest


def test_not_yet_warm_says_how_many_candles_are_needed() -> None:
    high, low, close = random_walk(7, 10)
    stream = StreamingAnalyzer("BTCUSDT")
    for candle in candles_of(high, low, close):
        assert stream.update(candle) is None
    with pytest.raises(InsufficientData, match="34 candles are needed, 10 given") as raised:
        stream.require()
    assert (raised.value.needed, raised.value.given) == (34, 10)


def test_the_registry_keeps_at_most_max_symbols_and_drops_the_least_recently_fed() -> None:
    high, low, close = random_walk(8, 40)
    candles = candles_of(high, low, close)
    registry = AnalyzerRegistry(max_symbols=2)
    assert registry.feed("BTCUSDT", candles) is not None
    registry.feed("ETHUSDT", candles[:5])
    registry.feed("BTCUSDT", [])  # touched: now the most recent
    registry.feed("SOLUSDT", candles)
    assert registry.symbols() == ["BTCUSDT", "SOLUSDT"]
    assert len(registry) == 2
    assert "ETHUSDT" not in registry
    assert registry.require("BTCUSDT").symbol == "BTCUSDT"
    with pytest.raises(InsufficientData, match="0 given"):
        registry.require("ETHUSDT")


def test_the_registry_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AnalyzerRegistry(max_symbols=0)
