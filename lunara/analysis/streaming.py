"""Streaming indicators for the live path: O(1) time and memory per candle and symbol.

Each class keeps only the state its recurrence needs (plus a bounded window for the
Bollinger bands), and follows the same seeding as the batch functions and TA-Lib, so a
stream and a batch over the same candles agree.
"""

from __future__ import annotations

import math
from collections import deque


class _SeededSmoothing:
    """value = decay * value + gain * sample, seeded with the plain mean of the first
    `period` samples."""

    __slots__ = ("_count", "_decay", "_gain", "_seed_sum", "period", "value")

    def __init__(self, period: int, decay: float, gain: float) -> None:
        self.period = period
        self._decay = decay
        self._gain = gain
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
        self.value = self._decay * self.value + self._gain * sample
        return self.value


class StreamingEMA(_SeededSmoothing):
    """EMA seeded with the SMA of the first `period` values."""

    __slots__ = ()

    def __init__(self, period: int) -> None:
        alpha = 2.0 / (period + 1)
        super().__init__(period, 1.0 - alpha, alpha)


class StreamingWilder(_SeededSmoothing):
    """Wilder smoothing seeded with the plain mean of the first `period` values."""

    __slots__ = ()

    def __init__(self, period: int) -> None:
        super().__init__(period, (period - 1) / period, 1.0 / period)


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
    """Bands over a bounded window of closes in O(1) amortised per candle.

    Running sums of (close - reference) and its square give the mean and the variance;
    the reference is a recent close, so the squares stay small and the variance does
    not cancel catastrophically. Every `period` candles the sums are recomputed from the
    window (O(period) once per period), which also moves the reference along and wipes
    out any rounding drift.
    """

    __slots__ = (
        "_reference",
        "_since_recompute",
        "_sum",
        "_sum_squares",
        "_window",
        "deviations",
        "lower",
        "middle",
        "period",
        "upper",
    )

    def __init__(self, period: int, deviations: float) -> None:
        self.period = period
        self.deviations = deviations
        self._window: deque[float] = deque(maxlen=period)
        self._reference = 0.0
        self._sum = 0.0
        self._sum_squares = 0.0
        self._since_recompute = 0
        self.upper: float | None = None
        self.middle: float | None = None
        self.lower: float | None = None

    def update(self, close: float) -> None:
        window = self._window
        if len(window) == self.period:
            leaving = window[0] - self._reference
            self._sum -= leaving
            self._sum_squares -= leaving * leaving
        window.append(close)
        entering = close - self._reference
        self._sum += entering
        self._sum_squares += entering * entering
        self._since_recompute += 1
        if len(window) < self.period:
            return
        if self._since_recompute >= self.period:
            self._recompute()
        mean_offset = self._sum / self.period
        variance = max(self._sum_squares / self.period - mean_offset * mean_offset, 0.0)
        spread = self.deviations * math.sqrt(variance)
        self.middle = self._reference + mean_offset
        self.upper = self.middle + spread
        self.lower = self.middle - spread

    def _recompute(self) -> None:
        self._reference = reference = self._window[-1]
        offsets = [value - reference for value in self._window]
        self._sum = math.fsum(offsets)
        self._sum_squares = math.fsum(offset * offset for offset in offsets)
        self._since_recompute = 0


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
