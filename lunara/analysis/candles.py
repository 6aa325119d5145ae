"""Candles: the unit the analyzer consumes, and the CSV format of `replay:FILE`."""

from __future__ import annotations

import csv
import io
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CSV_HEADER = ("open_time", "open", "high", "low", "close", "volume")
LAST_OPEN_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, as datetime allows


class CandleFileError(ValueError):
    """A replay file that cannot be read as klines; the message names the line."""


@dataclass(frozen=True, slots=True)
class Candle:
    open_time: int  # milliseconds since the epoch, as Binance gives it
    open: float
    high: float
    low: float
    close: float
    volume: float


class CandleWindow:
    """The last `size` closed candles of one symbol, oldest first: memory stays bounded.

    A candle that does not open after the newest one held is not added (feeds overlap:
    a history fetched at start, then live candles), so the window never holds a candle
    twice or out of order.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a candle window holds at least 1 candle (got {size})")
        self._candles: deque[Candle] = deque(maxlen=size)

    @property
    def size(self) -> int:
        return self._candles.maxlen or 0

    def add(self, candle: Candle) -> bool:
        """Keep `candle` if it is newer than the newest held; whether it was kept."""
        if self._candles and candle.open_time <= self._candles[-1].open_time:
            return False
        self._candles.append(candle)
        return True

    def extend(self, candles: Iterable[Candle]) -> int:
        """Add candles in order; how many were kept."""
        return sum(self.add(candle) for candle in candles)

    @property
    def newest(self) -> Candle | None:
        return self._candles[-1] if self._candles else None

    def candles(self) -> list[Candle]:
        return list(self._candles)

    def __len__(self) -> int:
        return len(self._candles)

    def __iter__(self) -> Iterator[Candle]:
        return iter(self._candles)


def read_klines_csv(path: Path) -> list[Candle]:
    """Klines from a CSV with header open_time,open,high,low,close,volume (ascending)."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise CandleFileError(f"{path}: cannot open ({error.strerror or error})") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        raise CandleFileError(f"{path}: line {line}: not UTF-8 text ({error.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or tuple(cell.strip().lower() for cell in header) != CSV_HEADER:
            raise CandleFileError(f"{path}: line 1: the header must be {','.join(CSV_HEADER)}")
        candles: list[Candle] = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            previous = candles[-1] if candles else None
            candles.append(_parse_row(path, reader.line_num, row, previous))
    except csv.Error as error:  # a field past csv's size limit, a NUL byte
        raise CandleFileError(f"{path}: line {reader.line_num}: {error}") from None
    return candles


def _parse_row(path: Path, line: int, row: list[str], previous: Candle | None) -> Candle:
    if len(row) != len(CSV_HEADER):
        raise CandleFileError(f"{path}: line {line}: expected 6 fields, got {len(row)}")
    try:
        open_time = int(row[0])
        prices = [float(cell) for cell in row[1:]]
    except ValueError:
        raise CandleFileError(f"{path}: line {line}: not a number") from None
    if not 0 <= open_time <= LAST_OPEN_TIME_MS:
        raise CandleFileError(f"{path}: line {line}: open_time is not a time in ms since 1970")
    if any(not math.isfinite(value) or value < 0 for value in prices):
        raise CandleFileError(f"{path}: line {line}: prices and volume must be finite and >= 0")
    open_, high, low, close, volume = prices
    if not low <= min(open_, close) or not high >= max(open_, close):
        raise CandleFileError(f"{path}: line {line}: high/low do not contain open and close")
    if previous is not None and open_time <= previous.open_time:
        raise CandleFileError(f"{path}: line {line}: open_time must increase")
    return Candle(open_time, open_, high, low, close, volume)
