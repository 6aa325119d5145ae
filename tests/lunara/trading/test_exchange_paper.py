"""The paper exchange: fills at the market with fee and slippage, balances in SQLite."""

from __future__ import annotations

from decimal import ROUND_UP, Decimal
from pathlib import Path

import pytest

from lunara.services import TradingError
from lunara.storage import orders as order_store
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.exchange import OrderRefused
from lunara.trading.filters import default_rules
from lunara.trading.market import SimMarket
from lunara.trading.model import OrderSide
from lunara.trading.orders import OrderPath, OrderRequest
from lunara.trading.paper import PaperExchange
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams

FEE = Decimal("0.001")
SLIPPAGE = Decimal("0.0005")
PARAMS = TrailingParams(stoploss=-0.05, trailing_stop=True)


async def _params(user_id: int) -> TrailingParams:
    return PARAMS


async def test_buy_fills_with_fee_and_slippage_and_balances_survive_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lunara.db"
    db = await open_database(path)
    stop_db = await open_database(path)
    market = SimMarket(seed=3)
    try:
        await users.register(db, 7, "trader")
        paper = PaperExchange(
            db, 7, market.prices, fee_rate=FEE, slippage=SLIPPAGE, start_balance=Decimal(1000)
        )
        orders = OrderPath(db, SqliteStopStore(stop_db), default_stop_params=_params)
        market_price = (await market.prices(["ETHUSDT"]))["ETHUSDT"]
        settled = await orders.submit(
            paper,
            OrderRequest(7, "ETHUSDT", OrderSide.BUY, Decimal("0.05"), market_price),
        )
        rules = default_rules("ETHUSDT")
        expected_price = rules.round_price(market_price * (1 + SLIPPAGE), ROUND_UP)
        assert settled.price == expected_price
        cost = Decimal("0.05") * expected_price
        assert settled.fee_in_quote == cost * FEE
        assert settled.position.quantity == Decimal("0.05")
        assert settled.position.entry_cost == cost + cost * FEE  # the fee paid in USDT
    finally:
        await db.close()
        await stop_db.close()

    reopened = await open_database(path)
    try:
        again = PaperExchange(
            reopened, 7, market.prices, fee_rate=FEE, slippage=SLIPPAGE, start_balance=Decimal(1000)
        )
        balances = {balance.asset: balance.free for balance in await again.balances()}
        assert balances == {"USDT": Decimal(1000) - cost - cost * FEE, "ETH": Decimal("0.05")}
    finally:
        await reopened.close()


async def test_orders_breaking_filters_or_balance_are_refused_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "lunara.db"
    db = await open_database(path)
    stop_db = await open_database(path)
    market = SimMarket(seed=3)
    try:
        await users.register(db, 8, "small")
        paper = PaperExchange(
            db, 8, market.prices, fee_rate=FEE, slippage=SLIPPAGE, start_balance=Decimal(50)
        )
        orders = OrderPath(db, SqliteStopStore(stop_db), default_stop_params=_params)
        price = (await market.prices(["BTCUSDT"]))["BTCUSDT"]
        with pytest.raises(TradingError, match="minimum notional"):
            await orders.submit(
                paper, OrderRequest(8, "BTCUSDT", OrderSide.BUY, Decimal("0.00002"), price)
            )
        assert await order_store.list_unsettled_orders(db) == []
        with pytest.raises(OrderRefused, match="insufficient balance"):
            await orders.submit(
                paper, OrderRequest(8, "BTCUSDT", OrderSide.BUY, Decimal("0.01"), price)
            )
        async with db.execute("SELECT status FROM orders") as cursor:
            assert [row[0] for row in await cursor.fetchall()] == ["rejected"]
        assert {b.asset: b.free for b in await paper.balances()} == {"USDT": Decimal(50)}
    finally:
        await db.close()
        await stop_db.close()
