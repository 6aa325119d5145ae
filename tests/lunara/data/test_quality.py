"""Duplicates dropped, gaps found and never filled, resampling by live trading's rule."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.data.formats import COLUMNS
from lunara.data.quality import Gap, assess, clean, resample
from lunara.trading.market import CandleBuilder
from tests.lunara.data.files import JAN_2024, MINUTE, Row, minute_rows


def frame_of(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_duplicates_are_dropped_the_last_read_winning_and_the_rest_sorted() -> None:
    rows = minute_rows(JAN_2024, 4)
    newer = (rows[1][0], 1.0, 2.0, 0.5, 1.5, 9.0)
    cleaned, duplicates = clean(frame_of([rows[3], rows[0], rows[1], rows[2], newer, rows[0]]))
    assert duplicates == 2
    assert list(cleaned["open_time"]) == [row[0] for row in rows]
    assert tuple(cleaned.iloc[1]) == newer


def test_gaps_are_counted_with_the_largest_named_and_nothing_is_filled() -> None:
    rows = minute_rows(JAN_2024, 20)
    kept = rows[:5] + rows[7:10] + rows[15:]  # 2 missing after 04, 5 missing after 09
    quality = assess(frame_of(kept), rows=len(kept), duplicates=0)
    assert quality.interval_ms == MINUTE
    assert quality.interval == "1m"
    assert quality.gaps == 2
    assert quality.largest_gap == Gap(JAN_2024 + 9 * MINUTE, JAN_2024 + 15 * MINUTE, 5)


def test_a_series_without_gaps_says_so() -> None:
    quality = assess(frame_of(minute_rows(JAN_2024, 10)), rows=10, duplicates=0)
    assert (quality.gaps, quality.largest_gap) == (0, None)


def test_five_minute_candles_take_the_first_open_highest_high_lowest_low_last_close() -> None:
    rows = [
        (JAN_2024 + 0 * MINUTE, 10.0, 11.0, 9.0, 10.5, 1.0),
        (JAN_2024 + 1 * MINUTE, 10.5, 14.0, 10.0, 12.0, 2.0),
        (JAN_2024 + 4 * MINUTE, 12.0, 12.5, 8.0, 9.0, 3.0),
        (JAN_2024 + 5 * MINUTE, 9.0, 9.5, 8.5, 9.25, 4.0),
        # 10 to 14 missing: no candle is invented for them
        (JAN_2024 + 16 * MINUTE, 9.25, 10.0, 9.0, 9.75, 5.0),
    ]
    resampled = resample(frame_of(rows), 5 * MINUTE)
    assert [tuple(row) for row in resampled.itertuples(index=False)] == [
        (JAN_2024, 10.0, 14.0, 8.0, 9.0, 6.0),
        (JAN_2024 + 5 * MINUTE, 9.0, 9.5, 8.5, 9.25, 4.0),
        (JAN_2024 + 15 * MINUTE, 9.25, 10.0, 9.0, 9.75, 5.0),
    ]


@settings(max_examples=30, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 300), min_size=1, max_size=120, unique=True),
    interval=st.sampled_from([3, 5, 15, 60]),
)
def test_resampling_gives_the_candles_live_trading_builds_for_that_interval(
    minutes: list[int], interval: int
) -> None:
    """Every 1-minute candle's open, high, low and close fed as prices to the live
    CandleBuilder give the same candles as resampling (volume aside: live has none)."""
    minutes.sort()
    rows = [
        (JAN_2024 + m * MINUTE, 100.0 + m % 7, 101.0 + m % 5 + m % 7, 99.0 - m % 3, 100.5, 1.0)
        for m in minutes
    ]
    builder = CandleBuilder(interval * 60)
    built = []
    for open_time, opened, high, low, close, _ in rows:
        seconds = open_time / 1000
        for offset, price in ((0, opened), (10, high), (20, low), (50, close)):
            closed = builder.add("X", seconds + offset, price)
            if closed is not None:
                built.append(closed)
    resampled = resample(frame_of(rows), interval * MINUTE)
    expected = [(c.open_time, c.open, c.high, c.low, c.close) for c in built]
    got = [tuple(row)[:5] for row in resampled.itertuples(index=False)][: len(expected)]
    assert got == expected
    assert len(resampled) == len(expected) + 1  # the last bucket, still open live


@pytest.mark.parametrize("interval_minutes", [5, 60, 1440])
def test_resampled_buckets_start_on_multiples_of_their_length_from_the_epoch(
    interval_minutes: int,
) -> None:
    rows = minute_rows(JAN_2024 + 7 * MINUTE, 3000)
    resampled = resample(frame_of(rows), interval_minutes * MINUTE)
    assert (resampled["open_time"] % (interval_minutes * MINUTE) == 0).all()
    assert resampled["volume"].sum() == pytest.approx(sum(row[5] for row in rows))
