"""What a series of candles is worth: duplicates dropped, gaps found (never filled), and
1-minute candles resampled to a longer timeframe.

Resampling follows the rule live trading uses to build candles (``CandleBuilder``): a
candle of length L holds the candles whose open time t falls in [k*L, (k+1)*L) counted
from the epoch, with the first open, the highest high, the lowest low, the last close and
the summed volume. A bucket without candles gives no candle: a gap stays a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lunara.data.timeframes import timeframe_name


@dataclass(frozen=True)
class Gap:
    after_ms: int
    """Open time of the last candle before the gap."""
    before_ms: int
    """Open time of the first candle after it."""
    missing: int
    """Candles of the series' interval that are not there."""


@dataclass(frozen=True)
class Quality:
    rows: int
    """Candles read, duplicates included."""
    duplicates: int
    interval_ms: int | None
    """The series' candle length: the most common step between open times."""
    gaps: int
    largest_gap: Gap | None

    @property
    def interval(self) -> str | None:
        return None if self.interval_ms is None else timeframe_name(self.interval_ms)


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Sorted by open time with one candle per open time (the last one read wins, so a
    newer file overrides an older one); how many duplicates were dropped."""
    ordered = frame.sort_values("open_time", kind="stable")
    kept = ordered.drop_duplicates("open_time", keep="last")
    return kept.reset_index(drop=True), len(ordered) - len(kept)


def interval_of(open_times: np.ndarray) -> int | None:
    """The most common step between consecutive open times (None for fewer than 2)."""
    if len(open_times) < 2:
        return None
    steps = np.diff(open_times)
    values, counts = np.unique(steps[steps > 0], return_counts=True)
    if len(values) == 0:
        return None
    return int(values[np.argmax(counts)])


def gaps_of(open_times: np.ndarray, interval_ms: int | None) -> tuple[int, Gap | None]:
    """How many gaps (steps longer than the interval) and the largest of them."""
    if interval_ms is None or len(open_times) < 2:
        return 0, None
    steps = np.diff(open_times)
    longer = steps > interval_ms
    count = int(longer.sum())
    if count == 0:
        return 0, None
    index = int(np.argmax(steps))
    after, before = int(open_times[index]), int(open_times[index + 1])
    return count, Gap(after, before, (before - after) // interval_ms - 1)


def assess(frame: pd.DataFrame, rows: int, duplicates: int) -> Quality:
    """The quality report of a clean (sorted, deduplicated) series."""
    times = frame["open_time"].to_numpy()
    interval = interval_of(times)
    count, largest = gaps_of(times, interval)
    return Quality(rows, duplicates, interval, count, largest)


def resample(frame: pd.DataFrame, interval_ms: int) -> pd.DataFrame:
    """Candles of ``interval_ms`` from a clean series of shorter ones (see the module)."""
    buckets = frame["open_time"].to_numpy() // interval_ms * interval_ms
    grouped = frame.groupby(buckets, sort=True)
    result = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    result.insert(0, "open_time", result.index.to_numpy(dtype="int64"))
    return result.reset_index(drop=True)
