"""Streaming indicators for the live path: O(1) time and memory per candle and symbol.

Each class keeps only the state its recurrence needs (plus a bounded window for the
Bollinger bands), and follows the same seeding as the batch functions and TA-Lib, so a
stream and a batch over the same candles agree.
"""

from __future__ import annotations

import math
from collections import deque


class StreamingEMA:
    """EMA seeded with the SMA of the first `period` values."""

    __slots__ = ("_alpha", "_count", "_seed_sum", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self._alpha = 2.0 / (period + 1)
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    def update(self, price: float) -> float | None:
        self._count += 1
        if self.value is None:
            self._seed_sum += price
            if self._count == self.period:
                self.value = self._seed_sum / self.period
            return self.value
        self.value = (1.0 - self._alpha) * self.value + self._alpha * price
        return self.value


class StreamingWilder:
    """Wilder smoothing seeded with the plain mean of the first `period` values."""

    __slots__ = ("_count", "_seed_sum", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    def update(self, sample: float) -> float | None:
        self._count += 1
        if self.value is None:
            self._seed_sum += sample
            if self._count == self.period:
                self.value = self._seed_sum / self.period
            return self.value
        self.value = (self.period - 1) / self.period * self.value + (1.0 / self.period) * sample
        return self.value


class StreamingRSI:
    __slots__ = ("_gain", "_loss", "_previous", "value")

    def __init__(self, period: int) -> None:
        self._gain = StreamingWilder(period)
        self._loss = StreamingWilder(period)
        self._previous: float | None = None
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        if self._previous is not None:
            change = close - self._previous
            gain = self._gain.update(change if change > 0 else 0.0)
            loss = self._loss.update(-change if change < 0 else 0.0)
            if gain is not None and loss is not None:
                total = gain + loss
                self.value = 100.0 * gain / total if total != 0 else 0.0
        self._previous = close
        return self.value


class StreamingMACD:
    """MACD with TA-Lib's alignment: both EMAs start at the slow EMA's first index."""

    __slots__ = ("_count", "_fast", "_recent", "_signal", "_slow", "histogram", "line", "signal")

    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self._slow = StreamingEMA(slow)
        self._fast = StreamingEMA(fast)
        self._signal = StreamingEMA(signal)
        self._recent: deque[float] = deque(maxlen=fast)  # seeds the fast EMA at the slow start
        self._count = 0
        self.line: float | None = None
        self.signal: float | None = None
        self.histogram: float | None = None

    def update(self, close: float) -> None:
        self._count += 1
        slow = self._slow.update(close)
        if slow is None:
            self._recent.append(close)
            return
        if self._fast.value is None:
            self._recent.append(close)
            for price in self._recent:  # bounded: `fast` values, once
                self._fast.update(price)
        else:
            self._fast.update(close)
        fast = self._fast.value
        assert fast is not None
        raw = fast - slow
        signal = self._signal.update(raw)
        if signal is not None:
            self.line, self.signal, self.histogram = raw, signal, raw - signal


class StreamingBollinger:
    """Bands over a bounded window of closes (O(period), a constant, per candle)."""

    __slots__ = ("_window", "deviations", "lower", "middle", "upper")

    def __init__(self, period: int, deviations: float) -> None:
        self._window: deque[float] = deque(maxlen=period)
        self.deviations = deviations
        self.upper: float | None = None
        self.middle: float | None = None
        self.lower: float | None = None

    def update(self, close: float) -> None:
        self._window.append(close)
        if len(self._window) < (self._window.maxlen or 0):
            return
        count = len(self._window)
        mean = sum(self._window) / count
        deviation = math.sqrt(sum((value - mean) ** 2 for value in self._window) / count)
        self.middle = mean
        self.upper = mean + self.deviations * deviation
        self.lower = mean - self.deviations * deviation


class StreamingATR:
    __slots__ = ("_previous_close", "_smooth", "value")

    def __init__(self, period: int) -> None:
        self._smooth = StreamingWilder(period)
        self._previous_close: float | None = None
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        if self._previous_close is not None:
            previous = self._previous_close
            true_range = max(high - low, abs(high - previous), abs(low - previous))
            self.value = self._smooth.update(true_range)
        self._previous_close = close
        return self.value
