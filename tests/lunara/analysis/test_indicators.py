"""Batch indicators match TA-Lib (values and warm-up) to 1e-9 relative after the warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.analysis import indicators
from lunara.analysis.indicators import atr, bbands, ema, macd, rsi, true_range

RELATIVE = 1e-9
NEAR_ZERO = 1e-9  # absolute slack for values that cross zero (MACD, the lower band)


def random_walk(
    seed: int, count: int, start: float = 100.0, step: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = np.abs(start + np.cumsum(rng.normal(0, step, count))) + step
    high = close + rng.random(count) * 2 * step
    low = np.maximum(close - rng.random(count) * 2 * step, close * 0.01)
    return high, low, close


def assert_matches(ours: np.ndarray, reference: np.ndarray, absolute: float = 0.0) -> None:
    assert ours.shape == reference.shape
    assert np.array_equal(np.isnan(ours), np.isnan(reference)), "warm-up lengths differ"
    mask = ~np.isnan(reference)
    np.testing.assert_allclose(ours[mask], reference[mask], rtol=RELATIVE, atol=absolute)


def assert_all_indicators_match(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14
) -> None:
    assert_matches(rsi(close, period), talib.RSI(close, period))
    assert_matches(ema(close, period), talib.EMA(close, period))
    assert_matches(atr(high, low, close, period), talib.ATR(high, low, close, period))
    for ours, reference in zip(
        bbands(close, period, 2.0), talib.BBANDS(close, period, 2, 2), strict=True
    ):
        assert_matches(ours, reference, absolute=NEAR_ZERO)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_periods_match_talib(seed: int) -> None:
    high, low, close = random_walk(seed, 3000)
    assert_matches(rsi(close, 14), talib.RSI(close, 14))
    assert_matches(ema(close, 12), talib.EMA(close, 12))
    assert_matches(ema(close, 26), talib.EMA(close, 26))
    for ours, reference in zip(macd(close, 12, 26, 9), talib.MACD(close, 12, 26, 9), strict=True):
        assert_matches(ours, reference, absolute=NEAR_ZERO)
    for ours, reference in zip(bbands(close, 20, 2.0), talib.BBANDS(close, 20, 2, 2), strict=True):
        assert_matches(ours, reference, absolute=NEAR_ZERO)
    assert_matches(atr(high, low, close, 14), talib.ATR(high, low, close, 14))


def test_a_long_series_crossing_many_segments_matches_talib() -> None:
    high, low, close = random_walk(11, 300_000)
    assert_all_indicators_match(high, low, close)
    for ours, reference in zip(macd(close), talib.MACD(close, 12, 26, 9), strict=True):
        assert_matches(ours, reference, absolute=NEAR_ZERO)


@pytest.mark.parametrize("segment_blocks", [1, 3, 7])
def test_segment_boundaries_do_not_change_results(
    monkeypatch: pytest.MonkeyPatch, segment_blocks: int
) -> None:
    monkeypatch.setattr(indicators, "SEGMENT_BLOCKS", segment_blocks)
    high, low, close = random_walk(segment_blocks, 2500)
    assert_all_indicators_match(high, low, close, 20)
    for ours, reference in zip(macd(close), talib.MACD(close, 12, 26, 9), strict=True):
        assert_matches(ours, reference, absolute=NEAR_ZERO)


def test_high_prices_with_small_moves_keep_the_bands_exact() -> None:
    """Bitcoin-like closes: the variance must not cancel against price squared."""
    _, _, close = random_walk(5, 200_000, start=60_000.0, step=3.0)
    for ours, reference in zip(bbands(close, 20, 2.0), talib.BBANDS(close, 20, 2, 2), strict=True):
        assert_matches(ours, reference, absolute=NEAR_ZERO)
    windows = np.lib.stride_tricks.sliding_window_view(close[-1000:], 20)
    exact = windows.std(axis=1)  # two-pass population deviation
    upper, middle, _ = bbands(close, 20, 2.0)
    spread = (upper - middle)[-len(exact) :] / 2
    np.testing.assert_allclose(spread, exact, rtol=1e-7)


def test_a_flat_market_has_zero_rsi_and_flat_bands_like_talib() -> None:
    close = np.full(300, 42.0)
    assert_matches(rsi(close, 14), talib.RSI(close, 14))
    upper, middle, lower = bbands(close, 20, 2.0)
    assert np.nanmax(upper) == np.nanmin(lower) == 42.0 == np.nanmax(middle)
    assert_matches(atr(close + 1, close - 1, close, 14), talib.ATR(close + 1, close - 1, close, 14))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 700),
    period=st.integers(2, 60),
    deviations=st.sampled_from([1.0, 2.0, 2.5]),
)
def test_any_series_length_and_period_matches_talib(
    seed: int, count: int, period: int, deviations: float
) -> None:
    high, low, close = random_walk(seed, count)
    assert_matches(ema(close, period), talib.EMA(close, period))
    assert_matches(rsi(close, period), talib.RSI(close, period))
    assert_matches(atr(high, low, close, period), talib.ATR(high, low, close, period))
    for ours, reference in zip(
        bbands(close, period, deviations),
        talib.BBANDS(close, period, deviations, deviations),
        strict=True,
    ):
        assert_matches(ours, reference, absolute=NEAR_ZERO)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(0, 600),
    fast=st.integers(2, 30),
    extra=st.integers(1, 30),
    signal=st.integers(2, 30),
)
def test_macd_matches_talib_for_any_periods(
    seed: int, count: int, fast: int, extra: int, signal: int
) -> None:
    _, _, close = random_walk(seed, count)
    slow = fast + extra
    for ours, reference in zip(
        macd(close, fast, slow, signal), talib.MACD(close, fast, slow, signal), strict=True
    ):
        assert_matches(ours, reference, absolute=NEAR_ZERO)


def test_true_range_is_the_textbook_definition() -> None:
    high, low, close = random_walk(8, 500)
    previous = close[:-1]
    textbook = np.maximum.reduce(
        [high[1:] - low[1:], np.abs(high[1:] - previous), np.abs(low[1:] - previous)]
    )
    ranges = true_range(high, low, close)
    assert np.isnan(ranges[0])
    np.testing.assert_array_equal(ranges[1:], textbook)
    assert_matches(ranges, talib.TRANGE(high, low, close))


def test_inputs_are_not_modified() -> None:
    high, low, close = random_walk(4, 5000)
    copies = high.copy(), low.copy(), close.copy()
    rsi(close)
    ema(close, 12)
    macd(close)
    bbands(close)
    atr(high, low, close)
    for original, copy in zip((high, low, close), copies, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_lists_and_integer_prices_are_accepted() -> None:
    closes = [100 + (i % 9) for i in range(200)]
    reference = talib.EMA(np.asarray(closes, dtype=float), 10)
    assert_matches(ema(np.asarray(closes), 10), reference)
