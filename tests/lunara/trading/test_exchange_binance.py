"""BinanceExchange with the real python-binance client against a local fake Binance."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from lunara.trading.binance import BinanceExchange, BinanceGateway
from lunara.trading.exchange import (
    CredentialsRejected,
    DuplicateOrder,
    ExchangeError,
    OrderRefused,
    RateLimited,
)
from lunara.trading.limiter import WeightLimiter
from lunara.trading.orders import Side
from tests.fakes.binance_api import FakeBinance

KEY, SECRET = "k" * 64, "s" * 64


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        fake.add_account(KEY, SECRET, USDT="1000", BTC="0")
        yield fake


def exchange_for(fake: FakeBinance, secret: str = SECRET) -> BinanceExchange:
    gateway = BinanceGateway(base_url=fake.base_url, limiter=WeightLimiter(), timeout_s=2.0)
    return BinanceExchange(gateway, KEY, secret)


async def test_a_signed_market_order_fills_and_is_found_by_client_id(
    fake_binance: FakeBinance,
) -> None:
    exchange = exchange_for(fake_binance)
    fill = await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.001"), "lun-1")
    assert fill.client_order_id == "lun-1"
    found = await exchange.find_order("BTCUSDT", "lun-1")
    assert found is not None and found.client_order_id == "lun-1"
    assert await exchange.find_order("BTCUSDT", "never-sent") is None


async def test_a_reused_client_order_id_is_a_duplicate_and_places_nothing(
    fake_binance: FakeBinance,
) -> None:
    exchange = exchange_for(fake_binance)
    await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.001"), "lun-2")
    with pytest.raises(OrderRefused):
        await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.001"), "lun-2")
    assert len(fake_binance.orders) == 1


async def test_insufficient_balance_is_refused_once_never_retried(
    fake_binance: FakeBinance,
) -> None:
    exchange = exchange_for(fake_binance)
    with pytest.raises(OrderRefused) as refused:
        await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("1"), "lun-3")
    assert not isinstance(refused.value, DuplicateOrder)
    assert fake_binance.count("POST", "order") == 1


async def test_a_wrong_secret_is_rejected_credentials(fake_binance: FakeBinance) -> None:
    exchange = exchange_for(fake_binance, secret="x" * 64)
    with pytest.raises(CredentialsRejected):
        await exchange.balances()


async def test_clock_skew_is_resynchronised_and_the_request_succeeds(
    fake_binance: FakeBinance,
) -> None:
    fake_binance.skew_ms = 60_000  # the server is a minute ahead
    exchange = exchange_for(fake_binance)
    balances = await exchange.balances()
    assert {b.asset for b in balances} >= {"USDT"}
    assert fake_binance.count("GET", "time") >= 1


async def test_429_with_retry_after_holds_every_caller_back(fake_binance: FakeBinance) -> None:
    exchange = exchange_for(fake_binance)
    fake_binance.inject(
        "account", 429, -1003, "Too many requests.", headers={"Retry-After": "2"}, times=5
    )
    with pytest.raises((RateLimited, ExchangeError)):
        await exchange.balances()
    assert exchange._gateway.limiter.blocked_for_s > 0


async def test_an_order_whose_response_was_dropped_is_found_not_resent(
    fake_binance: FakeBinance,
) -> None:
    fake_binance.drop_next_order_response = True
    exchange = exchange_for(fake_binance)
    with pytest.raises(ExchangeError):
        await exchange.place_market_order("BTCUSDT", Side.BUY, Decimal("0.001"), "lun-4")
    found = await exchange.find_order("BTCUSDT", "lun-4")
    assert found is not None  # the order path settles from this lookup instead of resending
    assert len(fake_binance.orders) == 1
