"""How values are stored: UTC epoch seconds, and Decimals as text (floats would round them)."""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation

from lunara.storage.errors import InvalidValue, StorageError


def now_s() -> float:
    """Timestamps are UTC epoch seconds (REAL): simple arithmetic, no time zones."""
    return time.time()


def decimal_to_text(value: Decimal) -> str:
    """Plain positional notation (never 1E-8), trailing zeros kept as given."""
    if not value.is_finite():
        raise InvalidValue("decimal", "must be a finite number")
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def text_to_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise StorageError(f"stored decimal {text[:30]!r} is unreadable") from None
    if not value.is_finite():
        raise StorageError(f"stored decimal {text[:30]!r} is not finite")
    return value


def optional_decimal(text: str | None) -> Decimal | None:
    return None if text is None else text_to_decimal(text)
