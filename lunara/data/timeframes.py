"""Candle intervals by name ("1m", "4h", "1d"), as Binance and freqtrade write them."""

from __future__ import annotations

import re

MINUTE_MS = 60_000
_UNITS_MS = {"s": 1000, "m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": 24 * 60 * MINUTE_MS}
_NAME = re.compile(r"^([1-9][0-9]{0,3})([smhd])$")

BINANCE_INTERVALS = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
)  # fmt: skip
"""The kline intervals Binance publishes whose candles start on a multiple of their length
since the epoch (3d, 1w and 1mo do not, so a backtest cannot resample to them)."""


def parse_timeframe(name: str) -> int:
    """The length of a candle in milliseconds; ValueError names what is accepted."""
    match = _NAME.match(name.strip())
    if match is None:
        raise ValueError(
            f"{name!r} is not a candle interval: a number and a unit, like 1m, 5m, 15m, 1h, 4h, 1d"
        )
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def timeframe_name(interval_ms: int) -> str:
    """The shortest name of an interval: 300000 -> "5m", 3600000 -> "1h"."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if interval_ms % size == 0:
            return f"{interval_ms // size}{unit}"
    return f"{interval_ms}ms"
