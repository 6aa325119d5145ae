"""One candle file, whatever wrote it, recognised from its content (never its name).

- our CSV: the header ``open_time,open,high,low,close,volume``, times in milliseconds;
- Binance's public kline CSVs, in their zip or unpacked: 12 columns (open time, open,
  high, low, close, volume, close time, quote volume, trades, taker buy base volume,
  taker buy quote volume, ignore), no header on spot, a header on futures files from
  mid-2022 on. Spot open times are milliseconds before 2025 and microseconds from
  2025-01-01 on: as freqtrade does, a value above 1e13 is microseconds, row by row;
- freqtrade's files: ``.feather`` (its default, lz4-compressed) and ``.parquet`` with the
  columns date, open, high, low, close, volume (date a UTC timestamp), and ``.json`` or
  ``.json.gz``: a list of ``[epoch ms, open, high, low, close, volume]`` rows.

Every format becomes the same frame: ``open_time`` (int64, epoch milliseconds) and the
five float64 columns, in file order (sorting, duplicates and gaps are ``quality``'s).
A file that is none of these, or whose rows are not candles, raises ``DataFileError``
naming what was expected and the first bad line (or row, in a binary format).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

COLUMNS = ("open_time", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = COLUMNS[1:]
LUNARA_HEADER = COLUMNS
BINANCE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
FREQTRADE_COLUMNS = ("date", "open", "high", "low", "close", "volume")
MICROSECONDS_ABOVE = 10**13
"""An open time above this is in microseconds (Binance spot from 2025-01-01 on)."""

EXPECTED = (
    "expected our CSV (header open_time,open,high,low,close,volume), a Binance kline CSV "
    "(12 columns, in its zip or unpacked), or a freqtrade .feather, .parquet, .json or "
    ".json.gz file (date, open, high, low, close, volume)"
)

_ZIP = b"PK\x03\x04"
_ARROW = b"ARROW1"
_FEATHER_V1 = b"FEA1"
_PARQUET = b"PAR1"
_GZIP = b"\x1f\x8b"


class DataFileError(ValueError):
    """A file that cannot be read as candles; the message is one line for the user."""


@dataclass(frozen=True)
class CandleFile:
    path: Path
    kind: str
    """What the content was: "lunara csv", "binance csv", "binance zip", "freqtrade feather",
    "freqtrade parquet", "freqtrade json" or "freqtrade json.gz"."""
    frame: pd.DataFrame


def read_candle_file(path: Path) -> CandleFile:
    """Read one file of candles in any of the formats above, told apart by its bytes."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(8)
    except OSError as error:
        raise DataFileError(f"{path}: cannot open ({error.strerror or error})") from None
    if magic.startswith(_ZIP):
        return CandleFile(path, "binance zip", _read_zip(path))
    if magic.startswith((_ARROW, _FEATHER_V1)):
        return CandleFile(path, "freqtrade feather", _read_columnar(path, "feather"))
    if magic.startswith(_PARQUET):
        return CandleFile(path, "freqtrade parquet", _read_columnar(path, "parquet"))
    if magic.startswith(_GZIP):
        try:
            with gzip.open(path, "rb") as handle:
                content = handle.read()
        except (OSError, EOFError) as error:
            raise DataFileError(f"{path}: a damaged gzip file ({error}); {EXPECTED}") from None
        if not content.lstrip().startswith(b"["):
            raise DataFileError(f"{path}: a gzip file that holds no JSON list; {EXPECTED}")
        return CandleFile(path, "freqtrade json.gz", _read_json(path, content))
    try:
        with path.open("rb") as handle:
            content = handle.read()
    except OSError as error:
        raise DataFileError(f"{path}: cannot read ({error.strerror or error})") from None
    if content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        return CandleFile(path, "freqtrade json", _read_json(path, content))
    frame, kind = _read_csv(str(path), content)
    return CandleFile(path, kind, frame)


def _read_zip(path: Path) -> pd.DataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(info.filename for info in members) or "nothing"
                raise DataFileError(
                    f"{path}: a zip that holds {names}; expected one Binance kline CSV"
                )
            content = archive.read(members[0])
    except zipfile.BadZipFile as error:
        raise DataFileError(f"{path}: a damaged zip file ({error}); {EXPECTED}") from None
    frame, _ = _read_csv(f"{path} ({members[0].filename})", content)
    return frame


def _read_csv(where: str, content: bytes) -> tuple[pd.DataFrame, str]:
    head = content[:4096].decode("utf-8-sig", errors="replace")
    first_line = head.lstrip("\r\n").split("\n", 1)[0].strip()
    first = [cell.strip().lower() for cell in next(csv.reader([first_line]), [])]
    if tuple(first) == LUNARA_HEADER:
        kind, names, header = "lunara csv", list(LUNARA_HEADER), True
    elif len(first) == len(BINANCE_COLUMNS) and first[0] == "open_time":
        kind, names, header = "binance csv", list(BINANCE_COLUMNS), True
    elif len(first) == len(BINANCE_COLUMNS) and first[0].isdigit():
        kind, names, header = "binance csv", list(BINANCE_COLUMNS), False
    elif not first_line:
        raise DataFileError(f"{where}: empty; {EXPECTED}")
    else:
        raise DataFileError(f"{where}: line 1: not a candle file; {EXPECTED}")
    try:
        raw = pd.read_csv(
            io.BytesIO(content),
            header=0 if header else None,
            names=names,
            skip_blank_lines=True,
            encoding="utf-8-sig",
        )
    except (pd.errors.ParserError, ValueError) as error:
        raise DataFileError(f"{where}: {_parser_message(error, header)}; {EXPECTED}") from None
    required = names if kind == "lunara csv" else names[: len(BINANCE_COLUMNS) - 1]
    lines = _Lines(content, header)
    frame = _numeric(raw, list(COLUMNS), required, where, lines)
    if kind == "binance csv":
        times = frame["open_time"].to_numpy()
        frame["open_time"] = np.where(times > MICROSECONDS_ABOVE, times // 1000, times)
    _check_candles(frame, where, lines)
    return frame, kind


def _parser_message(error: Exception, header: bool) -> str:
    """pandas says "Expected 12 fields in line 7, saw 13": keep the line, say it our way."""
    text = str(error)
    marker = " in line "
    if marker in text:
        tail = text.split(marker, 1)[1]
        number = "".join(ch for ch in tail.split(",", 1)[0] if ch.isdigit())
        if number:
            return f"line {number}: a row with more fields than the first line"
    return f"not readable as CSV ({text.splitlines()[0] if text else type(error).__name__})"


class _Lines:
    """Names a data row as the user sees it: the line of the file it came from, with its
    text (the parser skips blank lines, so row and line differ), or the row of a binary
    file. Computed only when a row is bad."""

    def __init__(self, content: bytes | None, header: bool) -> None:
        self._content = content
        self._header = header

    def name(self, row: int) -> str:
        if self._content is None:
            return f"row {row + 1}"
        text = self._content.decode("utf-8-sig", errors="replace")
        seen = -2 if self._header else -1
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                seen += 1
                if seen == row:
                    shown = line.strip()
                    shown = shown if len(shown) <= 80 else shown[:77] + "..."
                    return f"line {number} ({shown!r})"
        return f"line {row + 1 + int(self._header)}"


def _numeric(
    raw: pd.DataFrame,
    columns: Sequence[str],
    required: Sequence[str],
    where: str,
    lines: _Lines,
) -> pd.DataFrame:
    """The candle columns as numbers; the first row with a missing or non-numeric value in a
    required column is an error."""
    if raw.empty:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in columns}).astype(
            {"open_time": "int64"}
        )
    converted = {name: pd.to_numeric(raw[name], errors="coerce") for name in required}
    missing = np.zeros(len(raw), dtype=bool)
    for series in converted.values():
        missing |= series.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataFileError(
            f"{where}: {lines.name(row)}: expected numbers for {','.join(required)}"
        )
    times = converted[columns[0]].to_numpy()
    if times.dtype.kind == "f":
        fractional = times != np.floor(times)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise DataFileError(f"{where}: {lines.name(row)}: the open time is not a whole number")
    frame = pd.DataFrame({columns[0]: times.astype("int64")})
    for name in columns[1:]:
        frame[name] = converted[name].to_numpy(dtype="float64")
    return frame


def _check_candles(frame: pd.DataFrame, where: str, lines: _Lines) -> None:
    """Finite, non-negative prices whose high and low contain the open and close."""
    if frame.empty:
        return
    values = frame[list(PRICE_COLUMNS)].to_numpy()
    bad_value = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
    bad_value |= frame["open_time"].to_numpy() < 0
    if bad_value.any():
        row = int(np.argmax(bad_value))
        raise DataFileError(
            f"{where}: {lines.name(row)}: times, prices and volume must be finite and >= 0"
        )
    opened, high, low, close = (values[:, index] for index in range(4))
    bad_range = (low > np.minimum(opened, close)) | (high < np.maximum(opened, close))
    if bad_range.any():
        row = int(np.argmax(bad_range))
        raise DataFileError(f"{where}: {lines.name(row)}: high/low do not contain open and close")


def _read_columnar(path: Path, kind: str) -> pd.DataFrame:
    try:
        raw = pd.read_feather(path) if kind == "feather" else pd.read_parquet(path)
    # The boundary with pyarrow reading an untrusted file: its errors have no common base
    # we can name, and any of them means a damaged file.
    except Exception as error:  # noqa: BLE001
        raise DataFileError(
            f"{path}: a damaged {kind} file ({type(error).__name__}); {EXPECTED}"
        ) from None
    absent = [name for name in FREQTRADE_COLUMNS if name not in raw.columns]
    if absent:
        raise DataFileError(
            f"{path}: a {kind} file without the column(s) {', '.join(absent)}; {EXPECTED}"
        )
    dates = raw["date"]
    lines = _Lines(None, False)
    if isinstance(dates.dtype, pd.DatetimeTZDtype) or dates.dtype.kind == "M":
        missing = dates.isna().to_numpy()
        if missing.any():
            row = int(np.argmax(missing))
            raise DataFileError(f"{path}: row {row + 1}: no date")
        utc = dates.dt.tz_localize("UTC") if dates.dt.tz is None else dates.dt.tz_convert("UTC")
        raw = raw.assign(date=utc.dt.as_unit("ms").astype("int64"))
    frame = _numeric(
        raw.rename(columns={"date": "open_time"}), list(COLUMNS), list(COLUMNS), str(path), lines
    )
    _check_candles(frame, str(path), lines)
    return frame


def _read_json(path: Path, content: bytes) -> pd.DataFrame:
    lines = _Lines(None, False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ragged rows: padded now, refused later; both ours
            raw = pd.read_json(io.BytesIO(content), orient="values", dtype=False)
    except ValueError:
        raise DataFileError(f"{path}: {_json_problem(content)}; {EXPECTED}") from None
    if raw.shape[1] != len(COLUMNS) and not raw.empty:
        raise DataFileError(f"{path}: {_json_problem(content)}; {EXPECTED}")
    raw.columns = list(COLUMNS)[: raw.shape[1]] if not raw.empty else []
    if raw.empty:
        raw = pd.DataFrame(columns=list(COLUMNS))
    frame = _numeric(raw, list(COLUMNS), list(COLUMNS), str(path), lines)
    _check_candles(frame, str(path), lines)
    return frame


def _json_problem(content: bytes) -> str:
    """Where a JSON candle list goes wrong: its syntax, or the first row that is not six
    numbers."""
    try:
        document = json.loads(content)
    except json.JSONDecodeError as error:
        return f"line {error.lineno}: not valid JSON ({error.msg})"
    except UnicodeDecodeError as error:
        return f"not UTF-8 text (bad byte at offset {error.start})"
    except RecursionError:
        return "not readable JSON (nested too deep)"
    except ValueError:  # an integer longer than Python converts
        return "not readable JSON (a number too long)"
    if not isinstance(document, list):
        return "not a JSON list of candle rows"
    for index, row in enumerate(document, start=1):
        if (
            not isinstance(row, list)
            or len(row) != len(COLUMNS)
            or not all(isinstance(cell, int | float) for cell in row)
        ):
            return f"row {index}: not [date in epoch ms, open, high, low, close, volume]"
    return "not a JSON list of candle rows"
