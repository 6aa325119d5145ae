"""The order path against a strict fake Binance: real fees, lost replies, partial fills.

Every test drives the real python-binance client against tests/fakes/binance_api.py,
which follows Binance's own rules: the commission of a BUY comes out of the base asset
received, ``GET /order`` carries no fills and lags an order whose reply was lost, a
filled order's client id is accepted again, and a MARKET order can fill partly and
expire.
"""

from __future__ import annotations

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
from lunara.trading.limiter import WeightLimiter
from lunara.trading.orders import (
    OrderOutcomeUnknown,
    OrderPath,
    OrderRequest,
    client_order_id,
    exit_intent,
    successor_id,
)
from lunara.trading.stopstore import SqliteStopStore
from lunara.trading.trailing import TrailingParams
from tests.fakes.binance_api import DROP_CLOSE, FakeBinance
from tests.lunara.trading.support import FakeClock

KEY, SECRET = "k" * 64, "s" * 64
USER = 5
WINDOW_S = 6.0


@dataclass
class Bot:
    db: aiosqlite.Connection
    orders: OrderPath
    exchange: BinanceExchange
    stops: SqliteStopStore
    clock: FakeClock

    async def buy(self, quantity: str) -> store.Position:
        settled = await self.orders.submit(
            self.exchange,
            OrderRequest(USER, "BTCUSDT", store.OrderSide.BUY, Decimal(quantity), Decimal(50000)),
        )
        return settled.position

    async def sell(self, position: store.Position, price: str = "50000") -> store.Position:
        settled = await self.orders.submit(
            self.exchange,
            OrderRequest(
                USER,
                "BTCUSDT",
                store.OrderSide.SELL,
                position.quantity,
                Decimal(price),
                position_id=position.id,
            ),
        )
        return settled.position


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.add_account(KEY, SECRET, USDT="1000")
        yield server


@pytest.fixture
async def bot(fake: FakeBinance, tmp_path: Path) -> AsyncIterator[Bot]:
    db = await open_database(tmp_path / "lunara.db")
    stop_db = await open_database(tmp_path / "lunara.db")
    await users.register(db, USER, "live")

    async def params(user_id: int) -> TrailingParams:
        return TrailingParams(stoploss=-0.05, trailing_stop=True)

    clock = FakeClock()
    stops = SqliteStopStore(stop_db)
    orders = OrderPath(
        db,
        stops,
        default_stop_params=params,
        clock=clock,
        unknown_order_window_s=WINDOW_S,
        sleep=clock.sleep,
    )
    gateway = BinanceGateway(
        base_url=fake.base_url,
        limiter=WeightLimiter(),
        timeout_s=0.5,
        retry=RetryPolicy(attempts=1, wait=wait_none()),
    )
    try:
        yield Bot(db, orders, BinanceExchange(gateway, KEY, SECRET), stops, clock)
    finally:
        await db.close()
        await stop_db.close()


def _free(fake: FakeBinance, asset: str) -> Decimal:
    return fake.balances[KEY].get(asset, Decimal(0))


async def test_a_buy_settled_by_lookup_holds_the_quantity_after_the_fee_and_sells_it_all(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.drop_mode, fake.drop_stall_s, fake.lookup_lag_s = DROP_CLOSE, 0.0, 3600.0
    fake.drop_next_order_response = True
    position = await bot.buy("0.001")
    # Found through allOrders while GET /order still says -2013; the fee from myTrades.
    assert fake.count("GET", "allOrders") == 1 and fake.count("GET", "myTrades") == 1
    assert position.quantity == _free(fake, "BTC") == Decimal("0.000999")
    order = (await store.orders_of_position(bot.db, position.id))[0]
    assert order.fees == {"BTC": Decimal("0.000001")}
    closed = await bot.sell(position)
    assert closed.status is store.PositionStatus.CLOSED
    assert _free(fake, "BTC") == Decimal("0.000009")  # under the 0.00001 step: left behind
    assert (closed.sold_quantity, closed.residue_quantity) == (
        Decimal("0.00099"),
        Decimal("0.000009"),
    )


async def test_an_exit_never_asks_to_sell_more_than_the_free_balance(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.002")
    fake.balances[KEY]["BTC"] = Decimal("0.0015")  # the trader sold some by hand
    closed = await bot.sell(position)
    sell = fake.orders[-1]
    assert (sell["side"], sell["origQty"], sell["status"]) == ("SELL", "0.0015", "FILLED")
    assert _free(fake, "BTC") == 0
    assert (closed.sold_quantity, closed.residue_quantity) == (
        Decimal("0.0015"),
        Decimal("0.0005"),
    )


async def test_profit_is_what_was_sold_minus_what_was_bought_fees_included(
    fake: FakeBinance, bot: Bot
) -> None:
    position = await bot.buy("0.001")  # 50 USDT for 0.001 BTC, 0.000001 BTC fee
    assert position.entry_cost == Decimal(50)
    fake.set_price("BTCUSDT", "51000")
    closed = await bot.sell(position, "51000")
    # 0.00099 BTC sold (the step) for 50.49 USDT, less the 0.05049 USDT commission.
    assert closed.exit_proceeds == Decimal("50.43951")
    assert closed.realized_pnl == Decimal("0.43951")
    assert closed.residue_quantity == Decimal("0.000009")


async def test_fees_paid_in_bnb_are_recorded_in_bnb_not_as_quote(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.bnb_pays_fees = True
    fake.set_price("BNBUSDT", "500")
    fake.balances[KEY]["BNB"] = Decimal(1)
    settled = await bot.orders.submit(
        bot.exchange,
        OrderRequest(USER, "BTCUSDT", store.OrderSide.BUY, Decimal("0.01"), Decimal(50000)),
    )
    assert settled.position.quantity == _free(fake, "BTC") == Decimal("0.01")
    assert settled.order.fees == {"BNB": Decimal("0.001")}
    assert settled.fee_in_quote == 0 and settled.position.entry_cost == Decimal(500)


async def test_a_lost_reply_under_lookup_lag_never_buys_twice(fake: FakeBinance, bot: Bot) -> None:
    # GET /order keeps saying -2013 ("Memory => Database"); sending again under the same
    # client id would be accepted as a second order, since the first one filled.
    fake.drop_mode, fake.drop_stall_s, fake.lookup_lag_s = DROP_CLOSE, 0.0, 3600.0
    fake.drop_next_order_response = True
    position = await bot.buy("0.001")
    assert fake.count("POST", "order") == 1 and len(fake.orders) == 1
    assert fake.duplicates == []
    assert position.entry_client_order_id == fake.orders[0]["clientOrderId"]
    assert bot.clock.slept == []  # found at once: no need to wait out the recvWindow


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (503, -1001, "Internal error; unable to process your request."),
        (408, -1007, "Timeout waiting for response from backend server."),
        (400, -1006, "An unexpected response was received from the message bus."),
        (200, -1006, "An unexpected response was received from the message bus."),
    ],
)
async def test_an_order_never_placed_is_sent_again_under_a_new_client_id_after_the_window(
    fake: FakeBinance, bot: Bot, status: int, code: int, message: str
) -> None:
    fake.inject("order", status, code, message)  # answered without placing the order
    position = await bot.buy("0.001")
    posts = [r.params["newClientOrderId"] for r in fake.recorded if r.method == "POST"]
    assert len(posts) == 2 and posts[0] != posts[1]
    assert [o["clientOrderId"] for o in fake.orders] == [posts[1]]
    assert bot.clock.slept == [WINDOW_S]  # the recvWindow of the first send was waited out
    first = await store.get_order(bot.db, posts[0])
    assert first is not None and first.status is store.OrderStatus.REJECTED
    assert successor_id(first) == posts[1] == position.entry_client_order_id


async def test_an_order_still_unseen_after_two_sends_is_reported_not_placed(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.inject("order", 503, -1001, "Internal error.", times=2, method="POST")
    with pytest.raises(OrderOutcomeUnknown, match="did not take the order"):
        await bot.buy("0.001")
    assert fake.orders == [] and bot.clock.slept == [WINDOW_S, WINDOW_S]
    assert await store.list_open(bot.db, USER) == []
    assert await store.list_unsettled_orders(bot.db) == []


@pytest.mark.parametrize("status", ["EXPIRED", "EXPIRED_IN_MATCH"])
async def test_an_exit_that_expires_part_filled_keeps_the_rest_open_under_its_stop(
    fake: FakeBinance, bot: Bot, status: str
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.01")
    fake.fill_next_partly("0.4", status)
    rest = await bot.sell(position)
    assert rest.status is store.PositionStatus.OPEN
    assert (rest.quantity, rest.sold_quantity) == (Decimal("0.006"), Decimal("0.004"))
    assert _free(fake, "BTC") == Decimal("0.006")
    assert position.id in {stop.position_id for stop in bot.stops.tracked()}
    closed = await bot.sell(rest)  # the stop says sell again: the rest goes
    assert closed.status is store.PositionStatus.CLOSED
    assert (closed.sold_quantity, closed.residue_quantity) == (Decimal("0.01"), Decimal(0))
    assert closed.realized_pnl == 0 and _free(fake, "BTC") == 0
    assert position.id not in {stop.position_id for stop in bot.stops.tracked()}
    # Recovery does not apply the partial exit a second time.
    report = await bot.orders.recover(lambda user_id: _same(bot.exchange))
    assert report.settled == 0


async def _same(exchange: BinanceExchange) -> BinanceExchange:
    return exchange


async def test_a_position_whose_exit_was_refused_a_thousand_times_can_still_be_sold(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    for sequence in range(1000):  # earlier exits, each refused by the exchange
        order_id = client_order_id(USER, exit_intent(position.id), store.OrderSide.SELL, sequence)
        await store.record_pending_order(
            bot.db,
            order_id,
            USER,
            "BTCUSDT",
            store.OrderSide.SELL,
            Decimal("0.001"),
            position_id=position.id,
        )
        await store.mark_order_rejected(bot.db, order_id, "Account has insufficient balance")
    closed = await bot.sell(position)
    assert closed.status is store.PositionStatus.CLOSED and _free(fake, "BTC") == 0
