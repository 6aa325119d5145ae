"""The trading service as the Telegram layer sees it.

Handlers know nothing of exchanges, order paths or indicators: they call this
interface with validated arguments and format what it returns. The trading engine
implements it; tests of the handlers run against the same engine on the paper
exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


class TradingError(Exception):
    """An expected refusal with a message fit for the trader (bad symbol, filters, balance)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TradingPaused(TradingError):
    """An admin paused trading globally."""


@dataclass(frozen=True)
class AssetBalance:
    asset: str
    free: Decimal
    locked: Decimal = Decimal(0)


@dataclass(frozen=True)
class PositionView:
    position_id: int
    symbol: str
    quantity: Decimal
    entry_price: Decimal
    current_price: Decimal | None
    stop_price: float | None
    trailing_active: bool
    opened_at: str

    @property
    def profit_ratio(self) -> float | None:
        if self.current_price is None or self.entry_price == 0:
            return None
        return float((self.current_price - self.entry_price) / self.entry_price)


@dataclass(frozen=True)
class OrderResult:
    client_order_id: str
    symbol: str
    side: str  # "BUY" or "SELL"
    quantity: Decimal
    price: Decimal
    fee: Decimal
    position_id: int | None = None


@dataclass(frozen=True)
class AnalysisView:
    symbol: str
    indicators: dict[str, float | None]
    symptoms: tuple[str, ...]
    ai_commentary: str | None = None
    ai_note: str | None = None  # why there is no commentary (off, quota, error)
    extra: dict[str, Any] = field(default_factory=dict)


class TradingService(Protocol):
    """What a trader's and an admin's commands can ask of the engine."""

    async def validate_keys(self, api_key: str, api_secret: str) -> None:
        """Live mode: `TradingError` unless the exchange accepts the key pair for trading."""

    async def check_symbols(self, symbols: Sequence[str]) -> None:
        """`TradingError` naming each symbol the exchange does not list (before a trader's
        settings take them: one unknown name would make the exchange refuse a whole
        batched price request)."""

    async def balances(self, user_id: int) -> list[AssetBalance]: ...

    async def positions(self, user_id: int) -> list[PositionView]: ...

    async def buy(
        self, user_id: int, symbol: str, quote_amount: Decimal, request_key: str | None = None
    ) -> OrderResult:
        """Market buy; the same `request_key` (one per Telegram message) buys at most once."""

    async def sell(self, user_id: int, symbol: str) -> list[OrderResult]: ...

    async def analyze(self, user_id: int, symbol: str, with_ai: bool) -> AnalysisView: ...

    async def set_paused(self, paused: bool, by: str) -> None: ...

    async def is_paused(self) -> bool: ...

    async def engine_status(self) -> dict[str, Any]: ...
