"""Symbol status and filters as Binance applies them, through python-binance and the fake."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from tenacity import wait_none

from lunara.trading.binance import BinanceExchange, BinanceGateway, RetryPolicy
from lunara.trading.exchange import OrderRefused
from lunara.trading.filters import OrderRejected
from lunara.trading.limiter import WeightLimiter
from lunara.trading.model import OrderSide
from lunara.trading.orders import OrderRequest
from tests.fakes.binance_api import SYMBOL_FILTERS, FakeBinance
from tests.lunara.trading.support import order_path

KEY, SECRET = "k" * 64, "s" * 64


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.add_account(KEY, SECRET, USDT="1000")
        yield server


def _exchange(fake: FakeBinance) -> BinanceExchange:
    gateway = BinanceGateway(
        base_url=fake.base_url,
        limiter=WeightLimiter(),
        timeout_s=1.0,
        retry=RetryPolicy(attempts=1, wait=wait_none()),
    )
    return BinanceExchange(gateway, KEY, SECRET)


@pytest.mark.parametrize("status", ["BREAK", "HALT"])
async def test_an_order_on_a_symbol_not_trading_is_refused_before_sending(
    fake: FakeBinance, tmp_path: Path, status: str
) -> None:
    fake.symbol_status["BTCUSDT"] = status
    db, stop_db, orders = await order_path(tmp_path)
    try:
        with pytest.raises(OrderRejected, match=rf"not trading.*status {status}"):
            await orders.submit(
                _exchange(fake),
                OrderRequest(5, "BTCUSDT", OrderSide.BUY, Decimal("0.001"), Decimal(50000)),
            )
        assert fake.count("POST", "order") == 0
    finally:
        await db.close()
        await stop_db.close()


async def test_symbols_without_spot_or_market_orders_are_refused_before_sending(
    fake: FakeBinance,
) -> None:
    fake.set_price("ETHUSDT", "3000")
    fake.order_types["BTCUSDT"] = ["LIMIT"]
    fake.permission_sets["ETHUSDT"] = [["MARGIN"]]
    exchange = _exchange(fake)
    with pytest.raises(OrderRejected, match="BTCUSDT takes no market orders"):
        await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "a1")
    with pytest.raises(OrderRejected, match="ETHUSDT is not open to spot trading"):
        await exchange.place_market_order("ETHUSDT", OrderSide.BUY, Decimal("0.01"), "a2")
    assert fake.count("POST", "order") == 0


async def test_a_market_order_is_valued_at_binances_average_price(fake: FakeBinance) -> None:
    # 0.00012 BTC is 6 USDT at the 50000 price, 4.80 USDT at the 40000 average: too small.
    fake.average_prices["BTCUSDT"] = Decimal(40000)
    exchange = _exchange(fake)
    with pytest.raises(OrderRejected, match=r"4\.80 USDT \(at the 5-minute average price 40000"):
        await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.00012"), "b1")
    assert fake.count("GET", "avgPrice") == 1
    assert fake.count("POST", "order") == 0
    fake.average_prices.clear()
    fill = await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.00012"), "b2")
    assert fill.quantity == Decimal("0.00012")


async def test_market_lot_size_max_qty_binds_market_orders(fake: FakeBinance) -> None:
    fake.balances[KEY]["USDT"] = Decimal(10_000_000)
    exchange = _exchange(fake)
    with pytest.raises(OrderRejected, match="above the maximum 100 BTC for a market order"):
        await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("100.5"), "c1")
    assert fake.count("POST", "order") == 0


async def test_a_filter_failure_reloads_the_rules_once_and_is_not_resent(
    fake: FakeBinance, tmp_path: Path
) -> None:
    exchange = _exchange(fake)
    await exchange.symbol_rules("BTCUSDT")
    # Binance tightened the lot step after our exchangeInfo was cached.
    fake.filters["BTCUSDT"] = [
        {**f, "stepSize": "0.001"} if f["filterType"] == "LOT_SIZE" else f for f in SYMBOL_FILTERS
    ]
    db, stop_db, orders = await order_path(tmp_path)
    try:
        with pytest.raises(OrderRefused, match=r"Filter failure: LOT_SIZE.*reloaded"):
            await orders.submit(
                exchange,
                OrderRequest(5, "BTCUSDT", OrderSide.BUY, Decimal("0.0015"), Decimal(50000)),
            )
        assert fake.count("POST", "order") == 1
        assert fake.count("GET", "order") == 0
        assert fake.count("GET", "exchangeInfo") == 1
        rules = await exchange.symbol_rules("BTCUSDT")  # the next order's look-up
        assert rules.step_size == Decimal("0.001")
        await exchange.symbol_rules("BTCUSDT")
        assert fake.count("GET", "exchangeInfo") == 2  # reloaded once, then cached again
    finally:
        await db.close()
        await stop_db.close()
