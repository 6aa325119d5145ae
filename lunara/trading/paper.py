"""Paper trading: market orders filled at the current market price, balances in SQLite.

The paper exchange behaves like the real one where it matters to the order path: the
same symbol filters refuse the same orders, a short balance is a definite refusal
(Binance's -2010), a client order id executes at most once, and an executed order can
be found again by its client id after a crash. The balance change and the fill record
are written in one transaction, so a crash leaves either both or neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from decimal import ROUND_DOWN, ROUND_UP, Decimal

import aiosqlite

from lunara.services import AssetBalance, TradingError
from lunara.storage import orders as order_store
from lunara.storage import paper_balances as paper_store
from lunara.storage.database import StateConflict, transaction
from lunara.storage.paper_balances import InsufficientBalance
from lunara.trading.exchange import DuplicateOrder, Fill, OrderRefused
from lunara.trading.filters import SymbolRules, check_order, default_rules
from lunara.trading.model import OrderSide, OrderStatus

VENUE = "paper"
PAPER_ORDER_PREFIX = "paper-"

PriceLookup = Callable[[Sequence[str]], Awaitable[dict[str, Decimal]]]
RulesLookup = Callable[[str], SymbolRules]


class PaperExchange:
    """One trader's paper account; cheap to build per request."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        user_id: int,
        prices: PriceLookup,
        *,
        fee_rate: Decimal,
        slippage: Decimal,
        start_balance: Decimal,
        quote_asset: str = "USDT",
        rules: RulesLookup = default_rules,
    ) -> None:
        self._db = db
        self._user_id = user_id
        self._prices = prices
        self._fee_rate = fee_rate
        self._slippage = slippage
        self._start_balance = start_balance
        self._quote_asset = quote_asset
        self._rules = rules

    @property
    def name(self) -> str:
        return VENUE

    async def _ensure_seeded(self) -> None:
        # A no-op after the first call: the row exists (even at zero) once seeded.
        await paper_store.seed_paper_balance(
            self._db, self._user_id, self._quote_asset, self._start_balance
        )

    async def balances(self, max_wait_s: float | None = None) -> list[AssetBalance]:
        await self._ensure_seeded()
        held = await paper_store.paper_balances(self._db, self._user_id)
        return [AssetBalance(asset, free) for asset, free in held.items() if free > 0]

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        try:
            return self._rules(symbol)
        except ValueError as error:
            raise TradingError(f"{symbol} cannot be traded: {error}") from None

    def fill_price(self, rules: SymbolRules, market_price: Decimal, side: OrderSide) -> Decimal:
        """Market price moved against the trader by the slippage, kept on the tick grid."""
        if side is OrderSide.BUY:
            moved = market_price * (1 + self._slippage)
            price = rules.round_price(moved, ROUND_UP)
        else:
            moved = market_price * (1 - self._slippage)
            price = rules.round_price(moved, ROUND_DOWN)
        return price if price > 0 else market_price

    async def place_market_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str
    ) -> Fill:
        rules = await self.symbol_rules(symbol)
        if rules.quote_asset != self._quote_asset:
            raise TradingError(f"paper trading settles in {self._quote_asset} pairs only")
        quoted = await self._prices([symbol])
        market_price = quoted.get(symbol)
        if market_price is None or market_price <= 0:
            raise TradingError(f"no market price for {symbol} right now")
        price = self.fill_price(rules, market_price, side)
        executed = check_order(rules, quantity, price)
        quote_quantity = executed * price
        fee = quote_quantity * self._fee_rate
        if side is OrderSide.BUY:
            deltas = {self._quote_asset: -(quote_quantity + fee), rules.base_asset: executed}
        else:
            deltas = {rules.base_asset: -executed, self._quote_asset: quote_quantity - fee}
        await self._ensure_seeded()
        exchange_order_id = PAPER_ORDER_PREFIX + client_order_id
        try:
            async with transaction(self._db):
                recorded = await order_store.get_order(self._db, client_order_id)
                if recorded is None:
                    raise TradingError(f"order {client_order_id} was not recorded before sending")
                if recorded.status is OrderStatus.FILLED or recorded.exchange_order_id:
                    raise DuplicateOrder("Duplicate order sent.")
                await paper_store.adjust_paper_balances(self._db, self._user_id, deltas)
                await order_store.mark_order_filled(
                    self._db,
                    client_order_id,
                    price,
                    fee,
                    filled_quantity=executed,
                    exchange_order_id=exchange_order_id,
                )
        except InsufficientBalance as error:
            raise OrderRefused(f"Account has insufficient balance: {error}", -2010) from None
        except StateConflict as error:
            raise DuplicateOrder(str(error)) from None
        return Fill(
            client_order_id=client_order_id,
            exchange_order_id=exchange_order_id,
            symbol=symbol,
            side=side,
            quantity=executed,
            quote_quantity=quote_quantity,
            fee=fee,
            fee_asset=self._quote_asset,
        )

    async def find_order(self, symbol: str, client_order_id: str) -> Fill | None:
        order = await order_store.get_order(self._db, client_order_id)
        if (
            order is None
            or order.status is not OrderStatus.FILLED
            or not (order.exchange_order_id or "").startswith(PAPER_ORDER_PREFIX)
            or order.fill_price is None
        ):
            return None
        return Fill(
            client_order_id=client_order_id,
            exchange_order_id=order.exchange_order_id or "",
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            quote_quantity=order.quantity * order.fill_price,
            fee=order.fee or Decimal(0),
            fee_asset=self._quote_asset,
        )
