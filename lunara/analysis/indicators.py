"""Batch indicators over numpy arrays (backtests), matching TA-Lib's definitions.

Every function returns an array as long as its input with NaN during the warm-up, the
same lookbacks and seeding as TA-Lib (EMA seeded with the SMA of its first `period`
values; MACD's fast EMA seeded at the slow EMA's first index; Wilder smoothing for RSI
and ATR seeded with a plain average; Bollinger bands over the population deviation).

The exponential recursions are computed in blocks: inside a block of `BLOCK` values
the recursion is a small matrix product (done by BLAS), and only the carry between
blocks is sequential — fast and as exact as the plain loop (no long powers that
underflow).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

BLOCK = 32


def _recurrence(values: FloatArray, decay: float, gain: float, start: float) -> FloatArray:
    """y[i] = decay * y[i-1] + gain * values[i], with y[-1] = start."""
    count = len(values)
    if count == 0:
        return np.empty(0)
    blocks = -(-count // BLOCK)
    padded = np.zeros(blocks * BLOCK)
    padded[:count] = values
    steps = np.arange(BLOCK)
    exponent = steps[:, None] - steps[None, :]
    kernel = np.where(exponent >= 0, decay ** np.maximum(exponent, 0), 0.0) * gain
    local = padded.reshape(blocks, BLOCK) @ kernel.T  # each block as if it started from 0
    carry_weights = decay ** (steps + 1)
    carry = start
    ends = local[:, -1]
    carries = np.empty(blocks)
    last_weight = carry_weights[-1]
    for index in range(blocks):  # blocks = n / BLOCK: the only Python loop
        carries[index] = carry
        carry = ends[index] + last_weight * carry
    result = local + carries[:, None] * carry_weights[None, :]
    return result.reshape(-1)[:count]


def ema(close: FloatArray, period: int) -> FloatArray:
    """Exponential moving average, seeded with the SMA of the first `period` values."""
    return _ema_from(close, period, period - 1)


def _ema_from(values: FloatArray, period: int, first: int) -> FloatArray:
    """EMA whose first value, at index `first`, is the SMA of the `period` values ending there."""
    out = np.full(len(values), np.nan)
    if first >= len(values) or first < period - 1:
        return out
    alpha = 2.0 / (period + 1)
    seed = float(np.mean(values[first - period + 1 : first + 1]))
    out[first] = seed
    out[first + 1 :] = _recurrence(values[first + 1 :], 1.0 - alpha, alpha, seed)
    return out


def _wilder(values: FloatArray, period: int, first: int) -> FloatArray:
    """Wilder smoothing: the plain mean of `period` values ending at `first`, then
    avg = (avg * (period - 1) + value) / period."""
    out = np.full(len(values), np.nan)
    if first >= len(values):
        return out
    seed = float(np.mean(values[first - period + 1 : first + 1]))
    out[first] = seed
    out[first + 1 :] = _recurrence(values[first + 1 :], (period - 1) / period, 1.0 / period, seed)
    return out


def rsi(close: FloatArray, period: int = 14) -> FloatArray:
    out = np.full(len(close), np.nan)
    if len(close) <= period:
        return out
    change = np.diff(close)
    gains = np.where(change > 0, change, 0.0)
    losses = np.where(change < 0, -change, 0.0)
    average_gain = _wilder(gains, period, period - 1)[period - 1 :]
    average_loss = _wilder(losses, period, period - 1)[period - 1 :]
    total = average_gain + average_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(total != 0, 100.0 * average_gain / total, 0.0)
    out[period:] = values
    return out


def macd(
    close: FloatArray, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MACD line, signal line and histogram, with TA-Lib's lookback (slow + signal - 2)."""
    count = len(close)
    line = np.full(count, np.nan)
    signal_line = np.full(count, np.nan)
    first = slow - 1
    lookback = first + signal - 1
    if count <= lookback:
        return line, signal_line, signal_line.copy()
    slow_ema = _ema_from(close, slow, first)
    fast_ema = _ema_from(close, fast, first)  # TA-Lib seeds the fast EMA at the slow start
    raw = fast_ema - slow_ema
    signal_line[first:] = _ema_from(raw[first:], signal, signal - 1)
    line[lookback:] = raw[lookback:]
    signal_line[:lookback] = np.nan
    histogram = line - signal_line
    return line, signal_line, histogram


def bbands(
    close: FloatArray, period: int = 20, deviations: float = 2.0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Upper, middle (SMA) and lower Bollinger bands over the population deviation."""
    count = len(close)
    upper = np.full(count, np.nan)
    middle = np.full(count, np.nan)
    lower = np.full(count, np.nan)
    if count < period:
        return upper, middle, lower
    windows = np.lib.stride_tricks.sliding_window_view(close, period)
    chunk = 65536
    for start in range(0, len(windows), chunk):
        block = windows[start : start + chunk]
        mean = block.mean(axis=1)
        deviation = np.sqrt(((block - mean[:, None]) ** 2).mean(axis=1))
        index = slice(period - 1 + start, period - 1 + start + len(block))
        middle[index] = mean
        upper[index] = mean + deviations * deviation
        lower[index] = mean - deviations * deviation
    return upper, middle, lower


def true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    """TR from the second candle on (the first has no previous close): NaN at index 0."""
    previous = close[:-1]
    ranges = np.maximum.reduce(
        [high[1:] - low[1:], np.abs(high[1:] - previous), np.abs(low[1:] - previous)]
    )
    return np.concatenate(([np.nan], ranges))


def atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    out = np.full(len(close), np.nan)
    if len(close) <= period:
        return out
    ranges = true_range(high, low, close)[1:]
    out[1:] = _wilder(ranges, period, period - 1)
    return out
