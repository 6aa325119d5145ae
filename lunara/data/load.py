"""From what the user points at (files, directories, the store) to one clean series of
candles per symbol, over the range and at the timeframe asked for.

Which symbol a file holds is not in its content: with one ``--symbol`` and only files
given, the files named for that symbol are its, or every file when none is (``--symbol
BTCUSDT --data prices.csv``); otherwise the name says it, as Binance and freqtrade
name their files (``BTCUSDT-1m-2024-01.zip``, ``BTC_USDT-1m.feather``,
``BTC_USDT_USDT-1h-futures.feather``). The files of one symbol are merged (the last read
wins a duplicate). Where a symbol has files of several intervals (a freqtrade data
directory holds 1m, 5m, 1h...), the shortest is read and the others are named as skipped,
since a longer timeframe is resampled from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from lunara.data.formats import CandleFile, read_candle_file
from lunara.data.quality import Quality, assess, clean, interval_of, resample
from lunara.data.timeframes import timeframe_name
from lunara.trading.symbols import is_symbol

SKIPPED_SUFFIXES = (".CHECKSUM", ".part")
"""Files in a data directory that are not candles: Binance's checksums, unfinished
downloads."""


class DataSelectionError(ValueError):
    """The files given do not make the series asked for; one line for the user."""


@dataclass(frozen=True)
class SymbolData:
    symbol: str
    frame: pd.DataFrame
    """Clean candles (open_time ms, open, high, low, close, volume) at ``timeframe_ms``."""
    quality: Quality
    """Of the candles as read, in the range, before resampling."""
    timeframe_ms: int
    sources: tuple[str, ...]
    """What was read: "path (kind)" per file, or the store's file."""
    skipped: tuple[str, ...] = field(default=())


def symbol_from_name(path: Path) -> str | None:
    """BTCUSDT-1m-2024-01.zip, BTC_USDT-1m.feather, BTC_USDT_USDT-1h-futures.feather and
    BTCUSDT-1m.feather all hold BTCUSDT; None when the name says no symbol."""
    stem = path.name.split("-", 1)[0].split(".", 1)[0]
    parts = stem.split("_")
    if len(parts) == 3 and parts[1] == parts[2]:
        parts = parts[:2]  # a freqtrade futures pair: base, quote, settle
    elif len(parts) > 2:
        return None
    symbol = "".join(parts).upper()
    return symbol if is_symbol(symbol) else None


def data_files(paths: Iterable[Path]) -> list[Path]:
    """The files given, with each directory replaced by its files (sorted by name, so the
    months of one symbol come in order; not recursive)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                entry
                for entry in path.iterdir()
                if entry.is_file()
                and not entry.name.startswith(".")
                and not entry.name.endswith(SKIPPED_SUFFIXES)
            )
            if not found:
                raise DataSelectionError(f"--data {path}: the directory holds no candle files")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DataSelectionError(f"--data {path}: no such file or directory")
    return files


def load_paths(
    paths: Sequence[Path],
    symbols: Sequence[str],
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    timeframe_ms: int | None = None,
) -> dict[str, SymbolData]:
    """Every symbol's series from ``paths`` (files or directories); with ``symbols``, those
    symbols only, each of which must have a file."""
    files = data_files(paths)
    by_symbol: dict[str, list[Path]] = {}
    if len(symbols) == 1 and not any(path.is_dir() for path in paths):
        named = [file for file in files if symbol_from_name(file) == symbols[0]]
        by_symbol[symbols[0]] = named or files
    else:
        unnamed: list[Path] = []
        for file in files:
            symbol = symbol_from_name(file)
            if symbol is None:
                unnamed.append(file)
            elif not symbols or symbol in symbols:
                by_symbol.setdefault(symbol, []).append(file)
        if unnamed and not symbols:
            raise DataSelectionError(
                f"--data {unnamed[0]}: the file's name says no symbol; name it like "
                "BTCUSDT-1m.csv or BTC_USDT-1m.feather, or give one --symbol"
            )
        absent = [symbol for symbol in symbols if symbol not in by_symbol]
        if absent:
            raise DataSelectionError(
                f"no file for {', '.join(absent)} in the --data given (a file's name says "
                "its symbol, like BTCUSDT-1m-2024-01.zip or BTC_USDT-1m.feather)"
            )
    result: dict[str, SymbolData] = {}
    for symbol in symbols or sorted(by_symbol):
        read = [read_candle_file(file) for file in by_symbol[symbol]]
        used, skipped = _shortest_interval(read)
        frame = pd.concat([file.frame for file in used], ignore_index=True)
        result[symbol] = prepare(
            symbol,
            frame,
            sources=tuple(f"{file.path} ({file.kind})" for file in used),
            skipped=tuple(skipped),
            start_ms=start_ms,
            end_ms=end_ms,
            timeframe_ms=timeframe_ms,
        )
    return result


def _shortest_interval(files: list[CandleFile]) -> tuple[list[CandleFile], list[str]]:
    """The files whose candles have the shortest interval; the others, named with theirs."""
    intervals = [interval_of(file.frame["open_time"].sort_values().to_numpy()) for file in files]
    known = [interval for interval in intervals if interval is not None]
    if not known:
        return files, []
    shortest = min(known)
    used = [f for f, i in zip(files, intervals, strict=True) if i is None or i == shortest]
    skipped = [
        f"{f.path} ({timeframe_name(i)} candles; {timeframe_name(shortest)} read)"
        for f, i in zip(files, intervals, strict=True)
        if i is not None and i != shortest
    ]
    return used, skipped


def prepare(
    symbol: str,
    frame: pd.DataFrame,
    *,
    sources: tuple[str, ...],
    skipped: tuple[str, ...] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
    timeframe_ms: int | None = None,
) -> SymbolData:
    """One symbol's candles, read in file order: the range kept, sorted, deduplicated,
    assessed, then resampled to ``timeframe_ms`` when it is longer than their own."""
    whole = frame
    if start_ms is not None:
        frame = frame[frame["open_time"] >= start_ms]
    if end_ms is not None:
        frame = frame[frame["open_time"] < end_ms]
    rows = len(frame)
    frame, duplicates = clean(frame)
    if frame.empty and not whole.empty:
        first, last = int(whole["open_time"].min()), int(whole["open_time"].max())
        raise DataSelectionError(
            f"{symbol}: no candles in the range asked for; the data runs from "
            f"{utc_text(first)} to {utc_text(last)}"
        )
    quality = assess(frame, rows, duplicates)  # no candles at all: the caller says how few
    own = quality.interval_ms
    timeframe = own if timeframe_ms is None else timeframe_ms
    if timeframe is None:
        timeframe = 60_000
    elif own is not None and timeframe != own:
        if timeframe < own or timeframe % own:
            raise DataSelectionError(
                f"--timeframe {timeframe_name(timeframe)}: {symbol}'s candles are "
                f"{timeframe_name(own)}, which resample only to a multiple of "
                f"{timeframe_name(own)}"
            )
        frame = resample(frame, timeframe)
    return SymbolData(symbol, frame, quality, timeframe, sources, skipped)


def utc_text(milliseconds: int) -> str:
    """An open time as people read it: 2024-01-31 23:59 UTC."""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
