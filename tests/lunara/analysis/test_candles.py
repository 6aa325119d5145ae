"""Candles: the bounded window and the kline CSV of `replay:FILE`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunara.analysis import CandleFileError, CandleWindow, read_klines_csv
from lunara.analysis.candles import Candle

HEADER = "open_time,open,high,low,close,volume\n"


def candle(open_time: int, close: float = 100.0) -> Candle:
    return Candle(open_time, close, close + 1, close - 1, close, 1.0)


def test_reads_klines_in_order(tmp_path: Path) -> None:
    path = tmp_path / "klines.csv"
    path.write_text(
        HEADER + "1700000000000,100,101,99,100.5,12\n\n1700000060000,100.5,102,100,101.5,8\n"
    )
    assert read_klines_csv(path) == [
        Candle(1700000000000, 100.0, 101.0, 99.0, 100.5, 12.0),
        Candle(1700000060000, 100.5, 102.0, 100.0, 101.5, 8.0),
    ]


def test_a_header_only_file_has_no_candles(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(HEADER)
    assert read_klines_csv(path) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "line 1: the header must be"),
        ("time,o,h,l,c,v\n", "line 1"),
        (HEADER + "1,100,101,99,abc,1\n", "line 2: not a number"),
        (HEADER + "1,100,101,99\n", "line 2: expected 6 fields, got 4"),
        (HEADER + "1,100,99,98,100,1\n", "line 2: high/low"),
        (HEADER + "1,100,101,99,100,-1\n", "line 2: prices and volume must be finite"),
        (HEADER + "1,100,101,99,nan,1\n", "line 2: prices and volume must be finite"),
        (HEADER + "2,1,1,1,1,1\n1,1,1,1,1,1\n", "line 3: open_time must increase"),
        (HEADER + "1,1,1,1,1,1\n\n1,1,1,1,1,1\n", "line 4: open_time must increase"),
    ],
)
def test_a_bad_row_is_refused_naming_its_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(CandleFileError, match=message):
        read_klines_csv(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1,1,1,1,1,1\n\xff\xfe,1,1,1,1,1\n", "line 3: not UTF-8 text"),
        (
            b'1,"' + b"1" * (128 * 1024 + 1) + b'",1,1,1,1\n',
            "line 2: field larger than field limit",
        ),
        (b"9" * 30 + b",1,1,1,1,1\n", "line 2: open_time is not a time"),
        (b"-5,1,1,1,1,1\n", "line 2: open_time is not a time"),
    ],
    ids=["not-utf8", "128KiB-field", "open-time-too-far", "open-time-negative"],
)
def test_odd_bytes_and_sizes_are_refused_naming_their_line(
    tmp_path: Path, body: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(HEADER.encode() + body)
    with pytest.raises(CandleFileError, match=message):
        read_klines_csv(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CandleFileError, match="cannot open"):
        read_klines_csv(tmp_path / "absent.csv")


def test_the_window_keeps_the_newest_candles_only() -> None:
    window = CandleWindow(3)
    assert window.extend(candle(t) for t in range(10)) == 10
    assert [c.open_time for c in window] == [7, 8, 9]
    assert len(window) == window.size == 3
    assert window.newest == candle(9)


def test_the_window_skips_repeated_and_late_candles() -> None:
    window = CandleWindow(5)
    window.extend([candle(1), candle(2)])
    assert not window.add(candle(2, close=200.0))
    assert not window.add(candle(1))
    assert window.add(candle(3))
    assert [c.open_time for c in window.candles()] == [1, 2, 3]


def test_the_window_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CandleWindow(0)


@given(st.lists(st.integers(0, 50)), st.integers(1, 8))
def test_the_window_is_bounded_and_strictly_increasing(times: list[int], size: int) -> None:
    window = CandleWindow(size)
    window.extend(candle(t) for t in times)
    held = [c.open_time for c in window]
    assert len(held) <= size
    assert held == sorted(set(held))
