"""Candle files written in the exact layouts their makers use, for the readers' tests.

Binance's public kline CSVs: 12 columns, no header on spot (a header on futures), prices
with 8 decimals, open and close times in milliseconds before 2025 and microseconds from
2025-01-01 on; each zip holds one CSV of the same name. freqtrade: feather (lz4) and
parquet with date (UTC timestamp), open, high, low, close, volume; json and json.gz as a
list of [epoch ms, open, high, low, close, volume].
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

Row = tuple[int, float, float, float, float, float]
MINUTE = 60_000
JAN_2024 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
JAN_2025 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
FUTURES_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)


def minute_rows(start_ms: int, count: int, base: float = 100.0) -> list[Row]:
    """`count` one-minute candles from `start_ms`, prices with at most 4 decimals."""
    rows: list[Row] = []
    for index in range(count):
        close = round(base + (index % 11) * 0.25 - (index % 7) * 0.125, 4)
        opened = round(close - 0.0625, 4)
        rows.append(
            (start_ms + index * MINUTE, opened, close + 0.5, opened - 0.5, close, 1.5 + index % 3)
        )
    return rows


def binance_line(row: Row, *, microseconds: bool, interval_ms: int = MINUTE) -> str:
    open_time, opened, high, low, close, volume = row
    scale = 1000 if microseconds else 1
    close_time = (open_time + interval_ms) * scale - 1
    quote = volume * close
    return (
        f"{open_time * scale},{opened:.8f},{high:.8f},{low:.8f},{close:.8f},{volume:.8f},"
        f"{close_time},{quote:.8f},{17},{volume / 2:.8f},{quote / 2:.8f},0"
    )


def binance_csv(rows: list[Row], *, microseconds: bool = False, header: bool = False) -> str:
    lines = [FUTURES_HEADER] if header else []
    lines += [binance_line(row, microseconds=microseconds) for row in rows]
    return "\n".join(lines) + "\n"


def write_binance_csv(path: Path, rows: list[Row], **options: bool) -> Path:
    path.write_text(binance_csv(rows, **options))
    return path


def binance_zip_bytes(name: str, rows: list[Row], **options: bool) -> bytes:
    """A zip as Binance publishes it: `name`.zip holding `name`.csv."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.csv", binance_csv(rows, **options))
    return buffer.getvalue()


def write_binance_zip(path: Path, rows: list[Row], **options: bool) -> Path:
    path.write_bytes(binance_zip_bytes(path.name.removesuffix(".zip"), rows, **options))
    return path


def write_lunara_csv(path: Path, rows: list[Row]) -> Path:
    lines = ["open_time,open,high,low,close,volume"]
    lines += [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _frame(rows: list[Row]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "date": pd.to_datetime([row[0] for row in rows], unit="ms", utc=True),
            "open": [row[1] for row in rows],
            "high": [row[2] for row in rows],
            "low": [row[3] for row in rows],
            "close": [row[4] for row in rows],
            "volume": [row[5] for row in rows],
        }
    )


def write_feather(path: Path, rows: list[Row]) -> Path:
    _frame(rows).to_feather(path, compression="lz4")
    return path


def write_parquet(path: Path, rows: list[Row]) -> Path:
    _frame(rows).to_parquet(path)
    return path


def write_json(path: Path, rows: list[Row], *, gz: bool = False) -> Path:
    text = json.dumps([list(row) for row in rows])
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path
