"""Indicator parity: batch and streaming values match TA-Lib after the warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.analysis import AnalyzerParams, StreamingAnalyzer, analyze_candles, batch_series
from lunara.analysis.candles import Candle
from lunara.analysis.indicators import atr, bbands, ema, macd, rsi

RELATIVE = 1e-9


def random_walk(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, count))
    close = np.abs(close) + 1.0
    high = close + rng.random(count) * 2
    low = np.maximum(close - rng.random(count) * 2, 0.01)
    return high, low, close


def assert_matches(ours: np.ndarray, reference: np.ndarray, absolute: float = 0.0) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(reference)), "warm-up lengths differ"
    mask = ~np.isnan(reference)
    np.testing.assert_allclose(ours[mask], reference[mask], rtol=RELATIVE, atol=absolute)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_indicators_match_talib(seed: int) -> None:
    high, low, close = random_walk(seed, 3000)
    assert_matches(rsi(close, 14), talib.RSI(close, 14))
    assert_matches(ema(close, 12), talib.EMA(close, 12))
    assert_matches(ema(close, 26), talib.EMA(close, 26))
    for ours, reference in zip(macd(close, 12, 26, 9), talib.MACD(close, 12, 26, 9), strict=True):
        assert_matches(ours, reference, absolute=1e-9)
    for ours, reference in zip(
        bbands(close, 20, 2.0), talib.BBANDS(close, 20, 2, 2, 0), strict=True
    ):
        assert_matches(ours, reference)
    assert_matches(atr(high, low, close, 14), talib.ATR(high, low, close, 14))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(1, 400),
    period=st.integers(2, 40),
)
def test_any_series_length_and_period_matches_talib(seed: int, count: int, period: int) -> None:
    high, low, close = random_walk(seed, count)
    assert_matches(ema(close, period), talib.EMA(close, period))
    assert_matches(rsi(close, period), talib.RSI(close, period))
    assert_matches(atr(high, low, close, period), talib.ATR(high, low, close, period))
    for ours, reference in zip(
        bbands(close, period, 2.0), talib.BBANDS(close, period, 2, 2, 0), strict=True
    ):
        assert_matches(ours, reference)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(40, 300))
def test_streaming_equals_batch_at_every_candle(seed: int, count: int) -> None:
    high, low, close = random_walk(seed, count)
    candles = [
        Candle(i * 60_000, float(close[i]), float(high[i]), float(low[i]), float(close[i]), 1.0)
        for i in range(count)
    ]
    params = AnalyzerParams()
    series = batch_series(high, low, close, params)
    stream = StreamingAnalyzer("BTCUSDT", params)
    for index, candle in enumerate(candles):
        result = stream.update(candle)
        if result is None:
            assert index + 1 < params.warmup
            continue
        for name, value in result.indicators.items():
            expected = series[name][index]
            assert value == pytest.approx(expected, rel=RELATIVE, abs=1e-9), name
    batch = analyze_candles(candles, params, "BTCUSDT")
    assert stream.latest is not None
    assert batch.symptoms == stream.latest.symptoms


def test_streaming_state_is_bounded() -> None:
    high, low, close = random_walk(5, 5000)
    stream = StreamingAnalyzer("ETHUSDT")
    for i in range(len(close)):
        stream.update(Candle(i, close[i], high[i], low[i], close[i], 1.0))
    assert len(stream._bands._window) == stream.params.bb_period
    assert len(stream._macd._recent) <= stream.params.ema_fast
