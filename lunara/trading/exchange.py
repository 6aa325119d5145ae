"""The one interface every exchange speaks (Binance, paper) and the errors it raises.

The order path needs to tell three outcomes apart, because only one of them may be
retried safely: the exchange *refused* the order (never retry), the exchange *filled*
it, or the outcome is *unknown* (a timeout, a dropped response, a 5xx) and the order
must be looked up by its client order id before anything is sent again. The error
classes below encode exactly that split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from lunara.services import AssetBalance, TradingError
from lunara.trading.filters import SymbolRules
from lunara.trading.model import UNSETTLED_ORDER_STATUSES, OrderSide, OrderStatus

OPEN_ORDER_STATUSES: frozenset[OrderStatus] = frozenset(UNSETTLED_ORDER_STATUSES)


@dataclass(frozen=True)
class Fill:
    """An executed market order as the exchange reports it.

    ``quantity`` is the base amount executed, ``quote_quantity`` what it cost or
    yielded before fees, ``fee`` the commission in ``fee_asset`` (zero and ``None``
    when the exchange did not say, e.g. for an order looked up after the fact).
    ``fees`` holds the commission per asset when it was paid in several (base, quote,
    BNB); ``expired`` says the exchange ended the order before filling
    ``requested_quantity`` (a MARKET order that ran out of liquidity: EXPIRED or
    EXPIRED_IN_MATCH), so the rest of a position is still held.
    """

    client_order_id: str
    exchange_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    quote_quantity: Decimal
    fee: Decimal
    fee_asset: str | None
    fees: dict[str, Decimal] = field(default_factory=dict)
    requested_quantity: Decimal | None = None
    expired: bool = False

    @property
    def fees_by_asset(self) -> dict[str, Decimal]:
        """The commission per asset, whichever of ``fees`` or ``fee``/``fee_asset`` was set."""
        if self.fees:
            return dict(self.fees)
        if self.fee_asset is not None and self.fee > 0:
            return {self.fee_asset: self.fee}
        return {}

    @property
    def average_price(self) -> Decimal:
        if self.quantity == 0:
            return Decimal(0)
        return self.quote_quantity / self.quantity


class ExchangeError(Exception):
    """The exchange could not be used just now; whether an order went through is unknown."""


class ExchangeUnavailable(ExchangeError):
    """Network failure, timeout or server error (5xx)."""


class RateLimited(ExchangeError):
    """HTTP 429/418: the shared limiter has been told to hold every caller back."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IpBanned(RateLimited):
    """HTTP 418: Binance banned this server's IP (2 minutes to 3 days); nothing is sent
    until the ban ends, every request fails at once instead of sleeping through it."""


class OrdersRateLimited(RateLimited):
    """429 -1015 "Too many new orders": one account's ORDERS limit, not the shared budget;
    only that trader's orders are held back."""


class ExchangeBusy(ExchangeError):
    """The shared request budget would make this caller wait longer than it accepts."""


class CredentialsRejected(ExchangeError):
    """The exchange refused the trader's API key (bad key, signature, permissions or IP)."""


class OrderRefused(TradingError):
    """The exchange rejected the order (-2010 and friends): definite, never retried."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DuplicateOrder(OrderRefused):
    """An order with this client order id was already executed."""


class Exchange(Protocol):
    """One trader's account on one venue; every amount is a Decimal."""

    @property
    def name(self) -> str:
        """Venue name recorded with credentials ("binance", "paper")."""
        ...

    async def balances(self, max_wait_s: float | None = None) -> list[AssetBalance]:
        """Non-zero balances of the account."""
        ...

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        """The size and price filters every order on ``symbol`` must respect."""
        ...

    async def place_market_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str
    ) -> Fill:
        """Send a market order; raises ``OrderRefused`` (definite) or ``ExchangeError``
        (outcome unknown: look it up with ``find_order`` before sending again)."""
        ...

    async def find_order(self, symbol: str, client_order_id: str) -> Fill | None:
        """The executed order with this client id, ``None`` if the exchange never took it."""
        ...
