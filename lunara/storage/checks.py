"""Checks shared by the trading tables: a symbol, a positive amount, an exit reason.

Each raises `InvalidValue` naming the field, so a bad value is refused before any SQL.
"""

from __future__ import annotations

import re
from decimal import Decimal

from lunara.storage.database import InvalidValue
from lunara.trading.symbols import is_symbol

EXIT_REASON_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_symbol(symbol: str) -> str:
    if not is_symbol(symbol):
        raise InvalidValue("symbol", "must be a trading pair such as BTCUSDT")
    return symbol


def check_positive(field: str, value: Decimal) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
        raise InvalidValue(field, "must be a positive decimal")
    return value


def check_exit_reason(exit_reason: str) -> str:
    if not EXIT_REASON_PATTERN.match(exit_reason):
        raise InvalidValue("exit_reason", "must be a lower-case reason such as trailing_stop")
    return exit_reason
