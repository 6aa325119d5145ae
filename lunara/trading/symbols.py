"""What a trading pair's name may be: one rule for settings, commands, storage and the engine.

Binance names a spot pair by its base and quote assets run together in capitals
(``BTCUSDT``); anything else is refused before it reaches a query, a file name or the
exchange. This module imports nothing of ours, so every layer can use it.
"""

from __future__ import annotations

import re

MAX_SYMBOL_LENGTH = 20
SYMBOL_PATTERN = re.compile(rf"^[A-Z0-9]{{5,{MAX_SYMBOL_LENGTH}}}$")


def symbol_name(raw: str) -> str:
    """How a symbol is written, whatever the user typed: ``" btcusdt"`` → ``"BTCUSDT"``."""
    return raw.strip().upper()


def is_symbol(name: str) -> bool:
    """Whether ``name`` (already normalised) has the shape of a trading pair."""
    return SYMBOL_PATTERN.match(name) is not None
