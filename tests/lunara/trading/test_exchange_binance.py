"""BinanceExchange: real python-binance against the local fake Binance server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from tenacity import wait_none

from lunara.trading.binance import BinanceExchange, BinanceGateway, RetryPolicy, Weight
from lunara.trading.exchange import ExchangeBusy, OrderRefused, RateLimited
from lunara.trading.limiter import WeightLimiter
from lunara.trading.market import BinanceMarket
from lunara.trading.model import OrderSide
from lunara.trading.orders import OrderRequest
from tests.fakes.binance_api import FakeBinance
from tests.lunara.trading.support import FakeClock, order_path

KEY, SECRET = "k" * 64, "s" * 64
OTHER_KEY, OTHER_SECRET = "o" * 64, "p" * 64


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.add_account(KEY, SECRET, USDT="1000")
        server.add_account(OTHER_KEY, OTHER_SECRET, USDT="1000")
        yield server


def _gateway(
    fake: FakeBinance, limiter: WeightLimiter | None = None, attempts: int = 3
) -> BinanceGateway:
    return BinanceGateway(
        base_url=fake.base_url,
        limiter=limiter or WeightLimiter(),
        timeout_s=1.0,
        retry=RetryPolicy(attempts=attempts, wait=wait_none()),
    )


async def test_a_429_with_retry_after_holds_back_every_caller(fake: FakeBinance) -> None:
    clock = FakeClock()
    gateway = _gateway(fake, WeightLimiter(clock=clock, sleep=clock.sleep), attempts=1)
    first = BinanceExchange(gateway, KEY, SECRET)
    second = BinanceExchange(gateway, OTHER_KEY, OTHER_SECRET)
    fake.inject("account", 429, -1003, "Too many requests", headers={"Retry-After": "7"})
    with pytest.raises(RateLimited):
        await first.balances()
    assert gateway.limiter.blocked_for_s == 7
    balances = await second.balances()
    assert clock.slept == [7.0]
    assert {b.asset for b in balances} == {"USDT"}


async def test_a_read_that_would_wait_long_for_the_budget_fails_fast(fake: FakeBinance) -> None:
    # A budget of one account request a minute: the second would queue for ~60 s.
    gateway = _gateway(fake, WeightLimiter(weight_per_minute=Weight.ACCOUNT), attempts=1)
    exchange = BinanceExchange(gateway, KEY, SECRET)
    await exchange.balances(max_wait_s=10)
    requests_before = gateway.requests_sent
    with pytest.raises(ExchangeBusy):
        await exchange.balances(max_wait_s=10)
    assert gateway.requests_sent == requests_before  # refused before anything was sent
    clock = FakeClock()
    blocked = _gateway(fake, WeightLimiter(clock=clock, sleep=clock.sleep), attempts=1)
    blocked.limiter.penalize(30)  # a Retry-After longer than the caller accepts
    with pytest.raises(ExchangeBusy):
        await BinanceExchange(blocked, KEY, SECRET).balances(max_wait_s=10)
    assert clock.slept == []


async def test_a_timestamp_refusal_resyncs_server_time_then_succeeds(fake: FakeBinance) -> None:
    fake.skew_ms = 60_000
    exchange = BinanceExchange(_gateway(fake), KEY, SECRET)
    balances = await exchange.balances()
    assert balances[0].free == Decimal(1000)
    assert fake.count("GET", "time") == 1
    assert abs(exchange.timestamp_offset_ms - 60_000) < 5_000


async def test_prices_for_all_symbols_come_in_one_request(fake: FakeBinance) -> None:
    fake.prices = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}
    market = BinanceMarket(_gateway(fake))
    tick = await market.tick(["BTCUSDT", "ETHUSDT"], 0.0)
    assert tick.prices == {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}
    assert fake.count("GET", "ticker/price") == 1


async def test_every_traders_client_shares_the_gateways_few_connections(
    fake: FakeBinance,
) -> None:
    """A trader's client carries their keys, not a connection pool of its own: forty
    traders' reads go over at most the gateway's `max_concurrency` connections, each
    still signed with its own key."""
    traders = [(f"{n:02d}" * 32, f"{n:02d}s" * 21 + "s") for n in range(40)]
    for n, (key, secret) in enumerate(traders):
        fake.add_account(key, secret, USDT=str(100 + n))
    gateway = _gateway(fake)
    exchanges = [BinanceExchange(gateway, key, secret) for key, secret in traders]
    balances = await asyncio.gather(*(exchange.balances() for exchange in exchanges))
    assert [b[0].free for b in balances] == [Decimal(100 + n) for n in range(40)]
    port = urlsplit(fake.base_url).port
    open_to_the_exchange = [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]
    assert 1 <= len(open_to_the_exchange) <= 4  # the gateway's max_concurrency


async def test_a_rejected_order_is_never_retried(fake: FakeBinance, tmp_path: Path) -> None:
    db, stop_db, orders = await order_path(tmp_path)
    try:
        fake.inject("order", 400, -2010, "Account has insufficient balance for requested action.")
        exchange = BinanceExchange(_gateway(fake), KEY, SECRET)
        with pytest.raises(OrderRefused, match="insufficient balance"):
            await orders.submit(
                exchange,
                OrderRequest(5, "BTCUSDT", OrderSide.BUY, Decimal("0.001"), Decimal(50000)),
            )
        assert fake.count("POST", "order") == 1
        assert fake.count("GET", "order") == 0
        async with db.execute("SELECT status FROM orders") as cursor:
            assert [row[0] for row in await cursor.fetchall()] == ["rejected"]
    finally:
        await db.close()
        await stop_db.close()


async def test_a_dropped_answer_is_resolved_by_client_id_without_a_duplicate(
    fake: FakeBinance, tmp_path: Path
) -> None:
    db, stop_db, orders = await order_path(tmp_path)
    try:
        fake.drop_next_order_response = True
        exchange = BinanceExchange(_gateway(fake), KEY, SECRET)
        settled = await orders.submit(
            exchange,
            OrderRequest(5, "BTCUSDT", OrderSide.BUY, Decimal("0.001"), Decimal(50000)),
        )
        assert len(fake.orders) == 1
        assert fake.orders[0]["clientOrderId"] == settled.order.client_order_id
        assert fake.count("GET", "order") == 1
        # The position holds what the account received: 0.001 BTC less the 0.1 %
        # commission Binance takes from the base asset of a BUY (read from myTrades).
        assert settled.position.quantity == fake.balances[KEY]["BTC"] == Decimal("0.000999")
    finally:
        await db.close()
        await stop_db.close()
