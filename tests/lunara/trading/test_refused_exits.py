"""Exits the exchange refuses, through the executor and the real python-binance client
against the strict fake Binance: tried again on a doubling schedule for as long as the
stop asks, never given up, told to the trader once and to the admins when it lasts; and
a remainder no order can sell closed as dust instead of being refused forever; and an
order that hangs holds back no other trader's stop."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest
from tenacity import wait_none

from lunara.storage import positions as store
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.binance import BinanceExchange, BinanceGateway, RetryPolicy
from lunara.trading.exchange import Exchange
from lunara.trading.executor import (
    EXIT_REFUSED_ADMINS_AFTER_S,
    EXIT_RETRY_FIRST_S,
    EXIT_RETRY_MAX_S,
    CircuitBreaker,
    Executor,
    ExecutorConfig,
    ExitRetries,
    SettingsCache,
)
from lunara.trading.limiter import WeightLimiter
from lunara.trading.market import BinanceMarket
from lunara.trading.model import OrderSide, PositionStatus
from lunara.trading.orders import OrderPath, OrderRequest
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams
from tests.fakes.binance_api import FakeBinance
from tests.lunara.trading.support import FakeClock, notices_to

KEY, SECRET = "k" * 64, "s" * 64
TRADER = 5
INSUFFICIENT = "Account has insufficient balance for requested action."
WAIT_S = 0.5  # how long a tick waits for the traders' orders
OTHER = 6


class Inbox:
    """The Telegram layer's notifier, recording what the trader and the admins were told."""

    def __init__(self) -> None:
        self.to_traders: list[tuple[int, str]] = []
        self.to_admins: list[str] = []

    async def notify(self, user_id: int, text: str) -> None:
        self.to_traders.append((user_id, text))

    async def notify_admins(self, text: str) -> None:
        self.to_admins.append(text)


@dataclass
class Bot:
    db: aiosqlite.Connection
    stops: SqliteStopStore
    executor: Executor
    orders: OrderPath
    exchange: BinanceExchange
    clock: FakeClock  # the retry schedule's clock
    inbox: Inbox

    async def buy(self, symbol: str, quantity: str, price: str) -> store.Position:
        settled = await self.orders.submit(
            self.exchange,
            OrderRequest(TRADER, symbol, OrderSide.BUY, Decimal(quantity), Decimal(price)),
        )
        return settled.position

    def refusals_told(self) -> list[str]:
        return [text for _, text in self.inbox.to_traders if "did not go through" in text]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    prices = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}
    with FakeBinance(prices=prices) as server:
        server.add_account(KEY, SECRET, USDT="10000")
        yield server


@pytest.fixture
async def bot(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Bot]:
    db = await open_database(tmp_path / "lunara.db")
    stop_db = await open_database(tmp_path / "lunara.db")
    await users.register(db, TRADER, "live")

    async def params(user_id: int) -> TrailingParams:
        return TrailingParams(stoploss=-0.05)

    stops = SqliteStopStore(stop_db)
    orders = OrderPath(db, stops, default_stop_params=params)
    gateway = BinanceGateway(
        base_url=fake.base_url,
        limiter=WeightLimiter(),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=1, wait=wait_none()),
    )
    exchange = BinanceExchange(gateway, KEY, SECRET)

    async def exchange_for(user_id: int) -> Exchange:
        return exchange

    clock = FakeClock(0.0)
    inbox = Inbox()
    executor = Executor(
        db=db,
        market=BinanceMarket(gateway),
        stops=stops,
        orders=orders,
        exchange_for=exchange_for,
        signals=None,
        settings=SettingsCache(db),
        breaker=CircuitBreaker(),
        config=ExecutorConfig(symbols=("BTCUSDT", "ETHUSDT"), wait_for_traders_s=WAIT_S),
        notifier=lambda: inbox,
        exit_retries=ExitRetries(clock=clock),
    )
    try:
        yield Bot(db, stops, executor, orders, exchange, clock, inbox)
    finally:
        await gateway.aclose()
        await db.close()
        await stop_db.close()


def _sells(fake: FakeBinance) -> int:
    return sum(1 for method, endpoint in fake.requests if (method, endpoint) == ("POST", "order"))


async def test_a_refused_exit_is_tried_again_on_a_doubling_schedule_until_it_sells(
    fake: FakeBinance, bot: Bot
) -> None:
    position = await bot.buy("BTCUSDT", "0.001", "50000")
    fake.set_price("BTCUSDT", 45000)  # below the 5 % stop
    fake.inject("order", 400, -2010, INSUFFICIENT, method="POST", times=4)
    sends_before = _sells(fake)
    sent_at: list[float] = []
    for _ in range(200):  # one tick per simulated second
        sells = _sells(fake)
        await bot.executor.tick()
        if _sells(fake) > sells:
            sent_at.append(bot.clock.now)
        if not await store.list_open(bot.db, TRADER):
            break
        bot.clock.now += 1.0
    else:
        pytest.fail("the exit never went through")
    # Four refusals, then the sale: each wait twice the one before.
    assert _sells(fake) - sends_before == 5
    waits = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert waits == [EXIT_RETRY_FIRST_S * 2**n for n in range(4)]
    closed = await store.get(bot.db, position.id)
    assert closed is not None
    assert closed.exit_reason == "stop_loss"
    assert bot.executor.exit_retries.due(position.id)
    assert len(bot.executor.exit_retries) == 0
    told = bot.refusals_told()
    assert len(told) == 1
    assert INSUFFICIENT.rstrip(".") in told[0]
    assert [t for t in await notices_to(bot.db, TRADER) if "Stop loss hit" in t] != []
    assert bot.inbox.to_admins == []  # sold within minutes: no admin's business


async def test_an_exit_refused_for_long_is_never_given_up_and_reaches_the_admins_once(
    fake: FakeBinance, bot: Bot
) -> None:
    position = await bot.buy("BTCUSDT", "0.001", "50000")
    fake.set_price("BTCUSDT", 45000)
    fake.inject("order", 400, -2010, INSUFFICIENT, method="POST", times=10_000)
    hours = 3
    sent_at: list[float] = []
    for _ in range(hours * 3600 // 30):  # a tick every 30 s for three hours
        sells = _sells(fake)
        await bot.executor.tick()
        if _sells(fake) > sells:
            sent_at.append(bot.clock.now)
        bot.clock.now += 30.0
    # Doubling waits up to the cap, then one try per cap: bounded, and never given up.
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent_at)]
    assert gaps[0] == 30.0
    assert max(gaps) <= EXIT_RETRY_MAX_S + 30.0  # first wait: one tick
    assert gaps[-1] >= EXIT_RETRY_MAX_S
    assert bot.clock.now - sent_at[-1] <= EXIT_RETRY_MAX_S + 30.0
    assert len(sent_at) <= hours * 3600 / EXIT_RETRY_MAX_S + 6
    assert len(bot.refusals_told()) == 1
    assert len(bot.inbox.to_admins) == 1
    assert f"position {position.id}" in bot.inbox.to_admins[0]
    assert "BTCUSDT" in bot.inbox.to_admins[0]
    # The stop still asks: once Binance takes the order, it sells.
    fake.clear_injected("order")
    bot.clock.now += EXIT_RETRY_MAX_S
    await bot.executor.tick()
    assert await store.list_open(bot.db, TRADER) == []


async def test_a_refused_exit_holds_back_no_other_position_of_the_same_trader(
    fake: FakeBinance, bot: Bot
) -> None:
    first = await bot.buy("BTCUSDT", "0.001", "50000")
    second = await bot.buy("ETHUSDT", "0.01", "3000")
    fake.set_price("BTCUSDT", 45000)
    fake.set_price("ETHUSDT", 2700)
    fake.inject("order", 400, -2010, INSUFFICIENT, method="POST", times=1)
    report = await bot.executor.tick()
    assert report.exits == 1
    assert report.failures == 1
    still_open = await store.list_open(bot.db, TRADER)
    assert [position.id for position in still_open] == [first.id]
    closed = await store.get(bot.db, second.id)
    assert closed is not None
    assert closed.status is PositionStatus.CLOSED


async def test_the_admins_hear_of_a_refused_exit_only_after_it_has_lasted(
    fake: FakeBinance, bot: Bot
) -> None:
    await bot.buy("BTCUSDT", "0.001", "50000")
    fake.set_price("BTCUSDT", 45000)
    fake.inject("order", 400, -2010, INSUFFICIENT, method="POST", times=10_000)
    while bot.clock.now < EXIT_REFUSED_ADMINS_AFTER_S - EXIT_RETRY_MAX_S:
        await bot.executor.tick()
        bot.clock.now += 5.0
    assert bot.inbox.to_admins == []
    while bot.clock.now < EXIT_REFUSED_ADMINS_AFTER_S + EXIT_RETRY_MAX_S:
        await bot.executor.tick()
        bot.clock.now += 5.0
    assert len(bot.inbox.to_admins) == 1


async def test_a_remainder_too_small_to_sell_closes_the_position_as_dust(
    fake: FakeBinance, bot: Bot
) -> None:
    position = await bot.buy("BTCUSDT", "0.001", "50000")  # 0.000999 BTC after the fee
    fake.set_price("BTCUSDT", 45000)
    fake.fill_next_partly("0.95")  # the exit sells 0.00094 BTC, then Binance expires it
    await bot.executor.tick()
    reduced = await store.get(bot.db, position.id)
    assert reduced is not None
    assert reduced.status is PositionStatus.OPEN
    left = reduced.quantity
    assert left * 45000 < 5  # under BTCUSDT's 5 USDT minimum notional
    sends = _sells(fake)
    bot.clock.now += EXIT_RETRY_MAX_S
    await bot.executor.tick()
    assert _sells(fake) == sends  # nothing Binance would refuse is sent
    closed = await store.get(bot.db, position.id)
    assert closed is not None
    assert closed.status is PositionStatus.CLOSED
    assert closed.exit_reason == "dust"
    assert closed.residue_quantity == left
    sold_quote = sum(
        Decimal(order["cummulativeQuoteQty"]) for order in fake.orders if order["side"] == "SELL"
    )
    commission = sum(Decimal(trade["commission"]) for trade in fake.trades if not trade["isBuyer"])
    assert closed.exit_proceeds == sold_quote - commission
    assert closed.entry_cost is not None
    assert closed.realized_pnl == closed.exit_proceeds - closed.entry_cost
    assert len(bot.executor.exit_retries) == 0
    assert await bot.orders.has_unsettled() is False
    told = [text for text in await notices_to(bot.db, TRADER) if "smallest" in text]
    assert len(told) == 1
    assert "BTC" in told[0]
    assert position.id not in {stop.position_id for stop in bot.stops.tracked()}
    # The stop is gone: later ticks leave the closed position alone.
    await bot.executor.tick()
    assert _sells(fake) == sends


async def test_an_order_that_hangs_holds_back_no_other_traders_stop(
    fake: FakeBinance, bot: Bot
) -> None:
    await users.register(bot.db, OTHER, "other")
    hanging = await bot.buy("BTCUSDT", "0.001", "50000")
    other = (
        await bot.orders.submit(
            bot.exchange,
            OrderRequest(OTHER, "ETHUSDT", OrderSide.BUY, Decimal("0.01"), Decimal(3000)),
        )
    ).position
    fake.set_price("BTCUSDT", 45000)
    fake.inject("order", 0, 0, "", stall_s=1.5, method="POST")  # the next sell hangs 1.5 s
    first = await bot.executor.tick()
    assert first.still_working == 1
    assert first.exits == 0
    fake.set_price("ETHUSDT", 2700)  # the other trader's stop, while the first still waits
    second = await bot.executor.tick()
    assert second.skipped_busy == 1
    assert second.exits == 1
    closed = await store.get(bot.db, other.id)
    assert closed is not None
    assert closed.status is PositionStatus.CLOSED
    still = await store.get(bot.db, hanging.id)
    assert still is not None
    assert still.status is PositionStatus.OPEN
    assert await bot.executor.finish_in_flight(10.0) == 0  # the hung sell completes
    sold = await store.get(bot.db, hanging.id)
    assert sold is not None
    assert sold.status is PositionStatus.CLOSED
    sells = [order for order in fake.orders if order["side"] == "SELL"]
    assert len(sells) == 2  # each position sold once


async def test_a_whole_position_worth_too_little_after_a_fall_is_refused_not_dust(
    fake: FakeBinance, bot: Bot
) -> None:
    """Below the minimum notional only at this price: the price may come back, so the
    exit is refused and tried again, and the position stays open under its stop."""
    position = await bot.buy("BTCUSDT", "0.0002", "50000")  # 10 USDT, then 0.0001998 BTC
    fake.set_price("BTCUSDT", 20000)  # 0.00019 BTC is now 3.80 USDT, under 5
    report = await bot.executor.tick()
    assert report.failures == 1
    assert report.exits == 0
    still = await store.get(bot.db, position.id)
    assert still is not None
    assert still.status is PositionStatus.OPEN
    assert position.id in {stop.position_id for stop in bot.stops.tracked()}
    assert len(bot.refusals_told()) == 1
    assert "minimum notional" in bot.refusals_told()[0]


async def test_a_position_whose_account_holds_less_than_the_minimum_quantity_closes_as_dust(
    fake: FakeBinance, bot: Bot
) -> None:
    """The account holds less of the asset than any order may sell (sold elsewhere):
    nothing is sent, the position closes as dust with what it held as residue."""
    position = await bot.buy("BTCUSDT", "0.001", "50000")
    fake.balances[KEY]["BTC"] = Decimal("0.000005")  # under BTCUSDT's minimum of 0.00001
    fake.set_price("BTCUSDT", 45000)
    sends = _sells(fake)
    report = await bot.executor.tick()
    assert report.exits == 1
    assert _sells(fake) == sends
    closed = await store.get(bot.db, position.id)
    assert closed is not None
    assert closed.exit_reason == "dust"
    assert closed.residue_quantity == position.quantity
    assert closed.sold_quantity == 0
    assert position.id not in {stop.position_id for stop in bot.stops.tracked()}
