"""Candles kept under ``LUNARA_HOME/data``: one file per symbol and interval,
``BTCUSDT-1m.feather``.

Feather (Arrow IPC, lz4-compressed), not parquet: a backtest reads the store far more
often than a download writes it, and feather loads with no decoding pass while parquet is
decoded on every read; on candles, parquet's usual advantage, smaller files, does not
show (``bench/backtest_year.py`` measures both, size and read time); and feather is
freqtrade's default format with freqtrade's columns
(date as a UTC timestamp, open, high, low, close, volume), so freqtrade reads these files
and ``--data`` reads freqtrade's. A merge writes a new file beside the old one and renames
it over, so a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lunara.data.formats import read_candle_file
from lunara.data.load import DataSelectionError, SymbolData, prepare
from lunara.data.quality import clean
from lunara.data.timeframes import parse_timeframe, timeframe_name

SUFFIX = ".feather"


@dataclass(frozen=True)
class MergeSummary:
    path: Path
    added: int
    """Candles the store did not hold before."""
    total: int
    first_ms: int | None
    last_ms: int | None


class CandleStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, symbol: str, interval: str) -> Path:
        return self.root / f"{symbol}-{interval}{SUFFIX}"

    def intervals(self, symbol: str) -> list[tuple[int, Path]]:
        """The stored intervals of ``symbol`` (milliseconds, file), shortest first."""
        found: list[tuple[int, Path]] = []
        if not self.root.is_dir():
            return found
        for path in self.root.glob(f"{symbol}-*{SUFFIX}"):
            name = path.name[len(symbol) + 1 : -len(SUFFIX)]
            try:
                found.append((parse_timeframe(name), path))
            except ValueError:
                continue
        return sorted(found)

    def read(self, path: Path) -> pd.DataFrame:
        return read_candle_file(path).frame

    def merge(self, symbol: str, interval: str, frame: pd.DataFrame) -> MergeSummary:
        """Add ``frame`` to what is stored (the new candle wins a duplicate), sorted."""
        path = self.path(symbol, interval)
        existing = self.read(path) if path.exists() else None
        before = 0 if existing is None else len(existing)
        merged = frame if existing is None else pd.concat([existing, frame], ignore_index=True)
        merged, _ = clean(merged)
        if len(merged):
            self._write(path, merged)
        first = int(merged["open_time"].iloc[0]) if len(merged) else None
        last = int(merged["open_time"].iloc[-1]) if len(merged) else None
        return MergeSummary(path, len(merged) - before, len(merged), first, last)

    def _write(self, path: Path, frame: pd.DataFrame) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        table = frame.rename(columns={"open_time": "date"})
        table["date"] = pd.to_datetime(table["date"], unit="ms", utc=True).dt.as_unit("ms")
        partial = path.with_name(path.name + ".part")
        table.to_feather(partial, compression="lz4")
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)


def load_stored(
    store: CandleStore,
    symbols: Sequence[str],
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    timeframe_ms: int | None = None,
) -> dict[str, SymbolData]:
    """Each symbol's stored candles: the file of the timeframe asked for when there is one,
    otherwise the shortest stored interval that resamples to it."""
    result: dict[str, SymbolData] = {}
    for symbol in symbols:
        stored = store.intervals(symbol)
        if not stored:
            raise DataSelectionError(
                f"no stored candles for {symbol} in {store.root}: run `lunara data download "
                f"{symbol}` first, or give --data or --sim"
            )
        usable = [
            (interval, path)
            for interval, path in stored
            if timeframe_ms is None or timeframe_ms % interval == 0
        ]
        if not usable:
            names = ", ".join(timeframe_name(interval) for interval, _ in stored)
            raise DataSelectionError(
                f"--timeframe {timeframe_name(timeframe_ms or 0)}: {symbol} is stored as {names}"
                " candles, which do not resample to it"
            )
        exact = [(interval, path) for interval, path in usable if interval == timeframe_ms]
        _, path = exact[0] if exact else usable[0]
        result[symbol] = prepare(
            symbol,
            store.read(path),
            sources=(f"{path} (stored)",),
            start_ms=start_ms,
            end_ms=end_ms,
            timeframe_ms=timeframe_ms,
        )
    return result
