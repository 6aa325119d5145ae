"""The order path against a strict fake Binance: real fees, lost replies, partial fills,
what is asked again after a failure and what the recovery finds.

Every test drives the real python-binance client against tests/fakes/binance_api.py,
which follows Binance's own rules: the commission of a BUY comes out of the base asset
received, ``GET /order`` carries no fills and lags an order whose reply was lost, a
filled order's client id is accepted again, and a MARKET order can fill partly and
expire.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest
from tenacity import wait_none

from lunara.services import AssetBalance, TradingError
from lunara.storage import orders as order_store
from lunara.storage import positions as store
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.binance import BinanceExchange, BinanceGateway, RetryPolicy
from lunara.trading.exchange import Fill, OrderRefused
from lunara.trading.filters import OrderRejected, SymbolRules
from lunara.trading.limiter import WeightLimiter
from lunara.trading.model import OrderSide, OrderStatus, PositionStatus
from lunara.trading.orders import (
    OrderOutcomeUnknown,
    OrderPath,
    OrderRequest,
    RecoveryReport,
    client_order_id,
    exit_intent,
    successor_id,
)
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams
from tests.fakes.binance_api import DROP_CLOSE, DUPLICATE, INSUFFICIENT, FakeBinance
from tests.lunara.trading.support import FakeClock, notices_to

KEY, SECRET = "k" * 64, "s" * 64
OTHER_KEY, OTHER_SECRET = "o" * 64, "p" * 64
USER, OTHER = 5, 6
WINDOW_S = 6.0
# Each trader's stop settings, as the engine looks them up by trader.
TRADERS_OWN_STOP = {
    USER: TrailingParams(stoploss=-0.05, trailing_stop=True),
    OTHER: TrailingParams(stoploss=-0.03, trailing_stop=True),
}
UNCONFIRMED = (
    "^the exchange did not confirm the order; it will be checked again and never placed twice$"
)
NOT_PLACED_AFTER_RESTART = "not placed: the exchange has no such order (found after a restart)"
LOST_REPLY = "Binance is unreachable: ConnectionError"  # the connection closed, no reply
ENDED_UNFILLED = "Binance ended the order without a fill (status EXPIRED)"
BUY, SELL = OrderSide.BUY, OrderSide.SELL


@dataclass
class Bot:
    db: aiosqlite.Connection
    orders: OrderPath
    exchange: BinanceExchange
    stops: SqliteStopStore
    clock: FakeClock
    gateway: BinanceGateway

    async def buy(self, quantity: str) -> store.Position:
        settled = await self.orders.submit(
            self.exchange,
            OrderRequest(USER, "BTCUSDT", OrderSide.BUY, Decimal(quantity), Decimal(50000)),
        )
        return settled.position

    async def sell(
        self, position: store.Position, price: str = "50000", reason: str = "manual"
    ) -> store.Position:
        settled = await self.orders.submit(
            self.exchange,
            OrderRequest(
                USER,
                "BTCUSDT",
                OrderSide.SELL,
                position.quantity,
                Decimal(price),
                position_id=position.id,
                exit_reason=reason,
            ),
        )
        return settled.position

    async def exchange_of(self, user_id: int) -> BinanceExchange:
        """The recovery's view: each trader's own account (only USER has one here)."""
        return {USER: self.exchange}[user_id]


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
        return TRADERS_OWN_STOP[user_id]

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
        yield Bot(db, orders, BinanceExchange(gateway, KEY, SECRET), stops, clock, gateway)
    finally:
        await db.close()
        await stop_db.close()


def _free(fake: FakeBinance, asset: str) -> Decimal:
    return fake.balances[KEY].get(asset, Decimal(0))


async def _stamped_by_the_order_paths_clock(bot: Bot) -> bool:
    """Every time written on orders and positions came from the order path's clock (the
    fake one starts at 1000 s and moves only when slept on; the wall clock is past 1e9)."""
    times: list[float] = []
    for query in (
        "SELECT created_at, updated_at FROM orders",
        "SELECT opened_at, closed_at FROM positions",
    ):
        async with bot.db.execute(query) as cursor:
            times.extend(t for row in await cursor.fetchall() for t in row if t is not None)
    return bool(times) and all(1000.0 <= t <= bot.clock.now for t in times)


async def test_a_buy_settled_by_lookup_holds_the_quantity_after_the_fee_and_sells_it_all(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.drop_mode, fake.drop_stall_s, fake.lookup_lag_s = DROP_CLOSE, 0.0, 3600.0
    fake.drop_next_order_response = True
    position = await bot.buy("0.001")
    # Found through allOrders while GET /order still says -2013; the fee from myTrades.
    assert fake.count("GET", "allOrders") == 1
    assert fake.count("GET", "myTrades") == 1
    assert position.quantity == _free(fake, "BTC") == Decimal("0.000999")
    order = (await order_store.orders_of_position(bot.db, position.id))[0]
    assert order.fees == {"BTC": Decimal("0.000001")}
    assert order.fee == Decimal("0.05")  # that commission valued in USDT at the fill price
    closed = await bot.sell(position)
    assert closed.status is PositionStatus.CLOSED
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
        OrderRequest(USER, "BTCUSDT", OrderSide.BUY, Decimal("0.01"), Decimal(50000)),
    )
    assert settled.position.quantity == _free(fake, "BTC") == Decimal("0.01")
    assert settled.order.fees == {"BNB": Decimal("0.001")}
    assert settled.fee_in_quote == 0
    assert settled.position.entry_cost == Decimal(500)


async def test_a_lost_reply_under_lookup_lag_never_buys_twice(fake: FakeBinance, bot: Bot) -> None:
    # GET /order keeps saying -2013 ("Memory => Database"); sending again under the same
    # client id would be accepted as a second order, since the first one filled.
    fake.drop_mode, fake.drop_stall_s, fake.lookup_lag_s = DROP_CLOSE, 0.0, 3600.0
    fake.drop_next_order_response = True
    position = await bot.buy("0.001")
    assert fake.count("POST", "order") == 1
    assert len(fake.orders) == 1
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
    assert len(posts) == 2
    assert posts[0] != posts[1]
    assert [o["clientOrderId"] for o in fake.orders] == [posts[1]]
    assert bot.clock.slept == [WINDOW_S]  # the recvWindow of the first send was waited out
    first = await order_store.get_order(bot.db, posts[0])
    assert first is not None
    assert first.status is OrderStatus.REJECTED
    assert first.error == "not placed: the exchange never took it"
    assert successor_id(first) == posts[1] == position.entry_client_order_id
    assert posts[1] == client_order_id(USER, f"resend:{posts[0]}", OrderSide.BUY, 0)
    assert (bot.orders.placed, bot.orders.failed) == (1, 0)
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_an_order_still_unseen_after_two_sends_is_reported_not_placed(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.inject("order", 503, -1001, "Internal error.", times=2, method="POST")
    with pytest.raises(
        OrderOutcomeUnknown, match=r"^the exchange did not take the order; try again shortly$"
    ):
        await bot.buy("0.001")
    assert fake.orders == []
    assert bot.clock.slept == [WINDOW_S, WINDOW_S]
    assert await store.list_open(bot.db, USER) == []
    assert await order_store.list_unsettled_orders(bot.db) == []


@pytest.mark.parametrize("status", ["EXPIRED", "EXPIRED_IN_MATCH"])
async def test_an_exit_that_expires_part_filled_keeps_the_rest_open_under_its_stop(
    fake: FakeBinance, bot: Bot, status: str
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.01")
    fake.fill_next_partly("0.4", status)
    rest = await bot.sell(position)
    assert rest.status is PositionStatus.OPEN
    assert (rest.quantity, rest.sold_quantity) == (Decimal("0.006"), Decimal("0.004"))
    exit_order = (await order_store.orders_of_position(bot.db, position.id))[-1]
    assert (exit_order.quantity, exit_order.expired) == (Decimal("0.004"), True)
    assert _free(fake, "BTC") == Decimal("0.006")
    assert position.id in {stop.position_id for stop in bot.stops.tracked()}
    closed = await bot.sell(rest)  # the stop says sell again: the rest goes
    assert closed.status is PositionStatus.CLOSED
    assert (closed.sold_quantity, closed.residue_quantity) == (Decimal("0.01"), Decimal(0))
    assert closed.realized_pnl == 0
    assert _free(fake, "BTC") == 0
    assert position.id not in {stop.position_id for stop in bot.stops.tracked()}
    # Recovery does not apply the partial exit a second time.
    report = await bot.orders.recover(bot.exchange_of)
    assert report.settled == 0
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_a_position_whose_exit_was_refused_a_thousand_times_can_still_be_sold(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    for sequence in range(1000):  # earlier exits, each refused by the exchange
        order_id = client_order_id(USER, exit_intent(position.id), OrderSide.SELL, sequence)
        await order_store.record_pending_order(
            bot.db,
            order_id,
            USER,
            "BTCUSDT",
            OrderSide.SELL,
            Decimal("0.001"),
            position_id=position.id,
        )
        await order_store.mark_order_rejected(bot.db, order_id, "Account has insufficient balance")
    closed = await bot.sell(position)
    assert closed.status is PositionStatus.CLOSED
    assert _free(fake, "BTC") == 0


# What was sent, recorded and counted


def _posts(fake: FakeBinance) -> list[str]:
    """The client order id of every order placement the exchange received, in order."""
    return [
        r.params["newClientOrderId"]
        for r in fake.recorded
        if r.method == "POST" and r.endpoint == "order"
    ]


async def _all_orders(bot: Bot) -> list[order_store.Order]:
    async with bot.db.execute("SELECT client_order_id FROM orders ORDER BY created_at") as cursor:
        ids = [row[0] for row in await cursor.fetchall()]
    found = [await order_store.get_order(bot.db, order_id) for order_id in ids]
    return [order for order in found if order is not None]


def _stop_prices(bot: Bot) -> dict[int, float]:
    return {stop.position_id: stop.state.stop_price for stop in bot.stops.tracked()}


async def test_each_order_is_sent_under_the_id_its_request_derives(
    fake: FakeBinance, bot: Bot
) -> None:
    # A keyed /buy delivered again after a restart or an upgrade must derive the id it was
    # first sent under; the other ids count the trader's (or the position's) orders.
    fake.commission_rate = Decimal(0)
    first = await bot.buy("0.001")
    keyed = OrderRequest(USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000), request_key="k9")
    await bot.orders.submit(bot.exchange, keyed)
    await bot.buy("0.001")
    await bot.sell(first)
    assert _posts(fake) == [
        client_order_id(USER, "entry:BTCUSDT", BUY, 0),
        client_order_id(USER, "entry:BTCUSDT:k9", BUY, 0),
        client_order_id(USER, "entry:BTCUSDT", BUY, 2),
        client_order_id(USER, f"exit:{first.id}", SELL, 1),
    ]


async def test_a_fill_is_recorded_as_the_exchange_reported_it(fake: FakeBinance, bot: Bot) -> None:
    settled = await bot.orders.submit(
        bot.exchange, OrderRequest(USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000))
    )
    entry = settled.order
    assert (entry.status, entry.settled, entry.exchange_order_id) == (
        OrderStatus.FILLED,
        True,
        str(fake.orders[0]["orderId"]),
    )
    assert (entry.quantity, entry.fill_price, entry.fee) == (
        Decimal("0.001"),
        Decimal(50000),
        Decimal("0.05"),  # the 0.000001 BTC commission valued in USDT
    )
    fake.set_price("BTCUSDT", "51000")
    closed = await bot.sell(settled.position, "51000", reason="trailing_stop")
    assert closed.exit_client_order_id == fake.orders[1]["clientOrderId"]
    assert (closed.exit_reason, closed.exit_price) == ("trailing_stop", Decimal(51000))
    exit_order = await order_store.get_order(bot.db, fake.orders[1]["clientOrderId"])
    assert exit_order is not None
    assert exit_order.settled
    assert (exit_order.exchange_order_id, exit_order.fee) == (
        str(fake.orders[1]["orderId"]),
        Decimal("0.05049"),
    )
    assert (bot.orders.placed, bot.orders.failed) == (2, 0)
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_a_buy_starts_its_stop_at_the_parameters_it_asked_for_or_else_the_traders_own(
    fake: FakeBinance, bot: Bot
) -> None:
    asked = await bot.orders.submit(
        bot.exchange,
        OrderRequest(
            USER,
            "BTCUSDT",
            BUY,
            Decimal("0.001"),
            Decimal(50000),
            stop_params=TrailingParams(stoploss=-0.10, trailing_stop=True),
        ),
    )
    default = await bot.buy("0.001")
    assert _stop_prices(bot) == {
        asked.position.id: pytest.approx(45000.0),
        default.id: pytest.approx(47500.0),
    }


async def test_each_refusal_is_recorded_with_the_exchanges_reason_and_never_sent_again(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.inject("order", 400, -2010, INSUFFICIENT, times=2, method="POST")
    for _ in range(2):
        with pytest.raises(OrderRefused, match="insufficient balance"):
            await bot.buy("0.001")
    assert [(o.status, o.error) for o in await _all_orders(bot)] == [
        (OrderStatus.REJECTED, f"Binance refused the request: {INSUFFICIENT}")
    ] * 2
    assert fake.count("POST", "order") == 2
    assert fake.orders == []
    assert (bot.orders.placed, bot.orders.failed) == (0, 2)
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_an_order_binances_rules_refuse_at_the_average_price_is_recorded_so_and_never_sent(
    fake: FakeBinance, bot: Bot
) -> None:
    # 0.00012 BTC is 6 USDT at the 50000 price, 4.80 USDT at the 40000 average: too small.
    fake.average_prices["BTCUSDT"] = Decimal(40000)
    with pytest.raises(OrderRejected) as refusal:
        await bot.buy("0.00012")
    [order] = await _all_orders(bot)
    assert (order.status, order.error) == (OrderStatus.REJECTED, refusal.value.message)
    assert "4.80 USDT (at the 5-minute average price 40000" in refusal.value.message
    assert fake.count("POST", "order") == 0
    assert bot.orders.failed == 1


async def test_an_order_the_exchange_ended_unfilled_after_its_reply_was_lost_is_recorded_refused(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.drop_mode, fake.drop_stall_s = DROP_CLOSE, 0.0
    fake.drop_next_order_response = True
    fake.fill_next_partly("0")  # no liquidity: the market order expires with nothing done
    with pytest.raises(OrderRefused, match=f"^{re.escape(ENDED_UNFILLED)}$"):
        await bot.buy("0.001")
    [order] = await _all_orders(bot)
    assert (order.status, order.error) == (OrderStatus.REJECTED, ENDED_UNFILLED)
    assert fake.count("POST", "order") == 1
    assert bot.orders.failed == 1
    assert await store.list_open(bot.db, USER) == []


async def test_an_id_the_exchange_calls_a_duplicate_is_settled_from_the_order_it_holds(
    fake: FakeBinance, bot: Bot
) -> None:
    # A venue that refuses a client id it has seen (not Binance: it accepts a filled
    # order's id again) already holds the order under it, e.g. one sent before the
    # database was restored from a backup: that order is the fill, nothing else is bought.
    fake.commission_rate = Decimal(0)
    fake.refuse_reused_client_ids = True
    held = client_order_id(USER, "entry:BTCUSDT", BUY, 0)
    await bot.exchange.place_market_order("BTCUSDT", BUY, Decimal("0.002"), held)
    position = await bot.buy("0.001")
    assert len(fake.orders) == 1
    assert len(fake.duplicates) == 1
    assert (position.quantity, position.entry_client_order_id) == (Decimal("0.002"), held)


async def test_a_duplicate_the_exchange_cannot_show_is_recorded_refused(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.inject("order", 400, -2010, DUPLICATE, method="POST")
    with pytest.raises(TradingError, match=r"^the exchange refused a duplicate order$"):
        await bot.buy("0.001")
    [order] = await _all_orders(bot)
    assert (order.status, order.error) == (
        OrderStatus.REJECTED,
        "the exchange reports a duplicate it cannot show",
    )
    assert fake.orders == []
    assert bot.orders.failed == 1


async def test_an_exit_that_names_no_position_is_refused_before_anything_is_recorded_or_sent(
    fake: FakeBinance, bot: Bot
) -> None:
    with pytest.raises(TradingError, match=r"^an exit order needs the position it closes$"):
        await bot.orders.submit(
            bot.exchange, OrderRequest(USER, "BTCUSDT", SELL, Decimal("0.001"), Decimal(50000))
        )
    assert await _all_orders(bot) == []
    assert fake.count("POST", "order") == 0


async def test_an_exit_of_a_position_whose_coins_are_gone_sends_nothing(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    fake.balances[KEY]["BTC"] = Decimal(0)  # the trader sold them all by hand
    with pytest.raises(OrderRejected):
        await bot.sell(position)
    assert fake.count("POST", "order") == 1
    assert len(await order_store.orders_of_position(bot.db, position.id)) == 1


# Lost replies: the exit or keyed buy asked again


def _lose_the_reply_and_the_lookup(fake: FakeBinance) -> None:
    """The next order is placed but its reply is lost, and the look-up after it fails."""
    fake.drop_mode, fake.drop_stall_s = DROP_CLOSE, 0.0
    fake.drop_next_order_response = True
    fake.inject("order", 503, -1001, "Internal error.", method="GET")


def _never_place_and_fail_the_lookup(fake: FakeBinance) -> None:
    """The next order is answered 503 without being placed, and the look-up after it fails."""
    fake.inject("order", 503, -1001, "Internal error.", method="POST")
    fake.inject("order", 503, -1001, "Internal error.", method="GET")


async def test_an_exit_whose_reply_was_lost_is_settled_from_the_exchange_when_sold_again(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.sell(position, reason="trailing_stop")
    lost = (await order_store.orders_of_position(bot.db, position.id))[-1]
    assert (lost.status, lost.error) == (OrderStatus.UNKNOWN, LOST_REPLY)
    assert await _stamped_by_the_order_paths_clock(bot)
    closed = await bot.sell(position, reason="trailing_stop")  # the stop is still hit
    assert [order["side"] for order in fake.orders] == ["BUY", "SELL"]
    assert closed.status is PositionStatus.CLOSED
    assert (closed.exit_client_order_id, closed.exit_reason) == (
        lost.client_order_id,
        "trailing_stop",
    )
    assert closed.sold_quantity == Decimal("0.001")
    assert _free(fake, "BTC") == 0
    assert position.id not in _stop_prices(bot)
    assert bot.clock.slept == []


async def test_an_exit_never_placed_is_marked_so_and_a_new_one_sent_when_sold_again(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    _never_place_and_fail_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.sell(position)
    closed = await bot.sell(position)
    first, second = [
        o for o in await order_store.orders_of_position(bot.db, position.id) if o.side is SELL
    ]
    assert (first.status, first.error) == (OrderStatus.REJECTED, NOT_PLACED_AFTER_RESTART)
    assert [o["clientOrderId"] for o in fake.orders[1:]] == [second.client_order_id]
    assert closed.status is PositionStatus.CLOSED
    assert bot.clock.slept == [WINDOW_S]  # not found is final once the recvWindow passed
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_an_exit_the_exchange_never_took_is_sent_again_under_a_new_id_and_closes_the_position(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    fake.inject("order", 503, -1001, "Internal error.", method="POST")
    closed = await bot.sell(position)
    first, again = _posts(fake)[1:]
    assert again == client_order_id(USER, f"resend:{first}", SELL, 0)
    assert closed.status is PositionStatus.CLOSED
    assert closed.exit_client_order_id == again
    resent = await order_store.get_order(bot.db, again)
    assert resent is not None
    assert resent.position_id == position.id


async def _filled_by_an_earlier_release(
    bot: Bot,
    order_id: str,
    side: OrderSide,
    quantity: str,
    price: str,
    fees: dict[str, Decimal],
    *,
    fee_in_quote: str,
    position_id: int | None = None,
    expired: bool = False,
    user_id: int = USER,
) -> None:
    """An order a release before the ``settled`` column recorded filled without writing
    its effect on the position: the migration leaves it unsettled."""
    await order_store.record_pending_order(
        bot.db, order_id, user_id, "BTCUSDT", side, Decimal(quantity), position_id=position_id
    )
    await order_store.mark_order_filled(
        bot.db, order_id, Decimal(price), Decimal(fee_in_quote), fees=fees, expired=expired
    )


@pytest.mark.parametrize("expired", [False, True])
async def test_an_exit_filled_before_an_upgrade_is_settled_from_its_record_when_sold_again(
    fake: FakeBinance, bot: Bot, expired: bool
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.002")  # 100 USDT
    sold = "0.0008" if expired else "0.002"
    commission = Decimal(sold) * 51000 / 1000
    await _filled_by_an_earlier_release(
        bot,
        client_order_id(USER, exit_intent(position.id), SELL, 1),
        SELL,
        sold,
        "51000",
        {"USDT": commission},
        fee_in_quote=str(commission),
        position_id=position.id,
        expired=expired,
    )
    after = await bot.sell(position, "51000", reason="stop_loss")
    assert fake.count("POST", "order") == 1  # the exchange sold it back then
    proceeds = Decimal(sold) * 51000 - commission
    if expired:
        assert after.status is PositionStatus.OPEN
        assert (after.quantity, after.sold_quantity) == (Decimal("0.0012"), Decimal("0.0008"))
        assert after.exit_proceeds == proceeds
    else:
        assert after.status is PositionStatus.CLOSED
        assert (after.exit_price, after.exit_reason) == (Decimal(51000), "stop_loss")
        assert (after.exit_proceeds, after.realized_pnl) == (proceeds, proceeds - 100)


async def test_fills_recorded_before_an_upgrade_without_their_effect_are_settled_at_start(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.002")
    await _filled_by_an_earlier_release(
        bot,
        client_order_id(USER, exit_intent(position.id), SELL, 1),
        SELL,
        "0.002",
        "51000",
        {"USDT": Decimal("0.102")},
        fee_in_quote="0.102",
        position_id=position.id,
    )
    await _filled_by_an_earlier_release(
        bot,
        client_order_id(USER, "entry:BTCUSDT", BUY, 1),
        BUY,
        "0.001",
        "50000",
        {"BTC": Decimal("0.000001")},
        fee_in_quote="0.05",
    )
    report = await bot.orders.recover(bot.exchange_of)
    assert report == RecoveryReport(settled=2)
    closed = await store.get(bot.db, position.id)
    assert closed is not None
    assert closed.status is PositionStatus.CLOSED
    assert (closed.exit_reason, closed.exit_proceeds) == ("manual", Decimal("101.898"))
    [opened] = await store.list_open(bot.db, USER)
    assert (opened.quantity, opened.entry_price, opened.entry_cost) == (
        Decimal("0.000999"),  # what the account received, the BTC commission taken
        Decimal(50000),
        Decimal(50),
    )
    assert _stop_prices(bot) == {opened.id: pytest.approx(47500.0)}
    assert fake.count("POST", "order") == 1


async def test_a_keyed_buy_whose_reply_was_lost_is_settled_from_the_exchange_when_asked_again(
    fake: FakeBinance, bot: Bot
) -> None:
    request = OrderRequest(
        USER,
        "BTCUSDT",
        BUY,
        Decimal("0.001"),
        Decimal(50000),
        stop_params=TrailingParams(stoploss=-0.10, trailing_stop=True),
        request_key="tg:5:7",
    )
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.orders.submit(bot.exchange, request)
    lost = await order_store.get_order(
        bot.db, client_order_id(USER, "entry:BTCUSDT:tg:5:7", BUY, 0)
    )
    assert lost is not None
    assert (lost.status, lost.error) == (OrderStatus.UNKNOWN, LOST_REPLY)
    settled = await bot.orders.submit(bot.exchange, request)  # Telegram delivers it again
    assert fake.count("POST", "order") == 1
    assert len(fake.orders) == 1
    assert settled.order.client_order_id == lost.client_order_id
    assert settled.position.quantity == Decimal("0.000999")
    assert _stop_prices(bot) == {settled.position.id: pytest.approx(45000.0)}
    assert await _stamped_by_the_order_paths_clock(bot)


async def test_a_keyed_buy_the_exchange_never_took_is_sent_once_more_when_asked_again(
    fake: FakeBinance, bot: Bot
) -> None:
    request = OrderRequest(
        USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000), request_key="tg:5:8"
    )
    _never_place_and_fail_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.orders.submit(bot.exchange, request)
    settled = await bot.orders.submit(bot.exchange, request)
    assert bot.clock.slept == [WINDOW_S]  # certain it never reached the exchange
    assert _posts(fake) == [settled.order.client_order_id] * 2
    assert len(fake.orders) == 1
    assert fake.duplicates == []
    assert settled.position.status is PositionStatus.OPEN


async def test_a_keyed_buy_the_exchange_refused_is_not_sent_again_when_asked_again(
    fake: FakeBinance, bot: Bot
) -> None:
    request = OrderRequest(
        USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000), request_key="tg:5:9"
    )
    fake.inject("order", 400, -2010, INSUFFICIENT, method="POST")
    with pytest.raises(OrderRefused):
        await bot.orders.submit(bot.exchange, request)
    refused = re.escape(f"Binance refused the request: {INSUFFICIENT}")
    with pytest.raises(TradingError, match=f"^this order was refused earlier: {refused}$"):
        await bot.orders.submit(bot.exchange, request)
    assert fake.count("POST", "order") == 1


async def test_a_keyed_buy_sent_again_under_a_new_id_is_found_under_it_when_asked_again(
    fake: FakeBinance, bot: Bot
) -> None:
    request = OrderRequest(
        USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000), request_key="tg:5:10"
    )
    fake.inject("order", 503, -1001, "Internal error.", method="POST")
    first = await bot.orders.submit(bot.exchange, request)
    again = await bot.orders.submit(bot.exchange, request)
    assert (again.order.client_order_id, again.position.id) == (
        first.order.client_order_id,
        first.position.id,
    )
    assert fake.count("POST", "order") == 2
    assert len(fake.orders) == 1


# Recovery


async def test_fills_whose_replies_were_lost_are_settled_by_the_recovery_from_the_exchange(
    fake: FakeBinance, bot: Bot
) -> None:
    for _ in range(2):
        _lose_the_reply_and_the_lookup(fake)
        with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
            await bot.buy("0.001")
    assert await bot.orders.has_unsettled()
    report = await bot.orders.recover(bot.exchange_of)
    assert report == RecoveryReport(settled=2)
    assert not await bot.orders.has_unsettled()
    opened = await store.list_open(bot.db, USER)
    assert [p.quantity for p in opened] == [Decimal("0.000999")] * 2  # commissions from myTrades
    assert _stop_prices(bot) == {p.id: pytest.approx(47500.0) for p in opened}
    assert fake.count("POST", "order") == 2


async def test_an_exit_whose_reply_was_lost_is_closed_by_the_recovery_as_the_stop_exit_it_was(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    position = await bot.buy("0.001")
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.sell(position, reason="trailing_stop")
    assert await bot.orders.recover(bot.exchange_of) == RecoveryReport(settled=1)
    closed = await store.get(bot.db, position.id)
    assert closed is not None
    assert closed.status is PositionStatus.CLOSED
    assert (closed.exit_client_order_id, closed.sold_quantity) == (
        fake.orders[1]["clientOrderId"],
        Decimal("0.001"),
    )
    # The order row keeps why it was sent: the exit is the stop's, and so is its notice,
    # queued once with the close however often the recovery runs.
    assert closed.exit_reason == "trailing_stop"
    assert position.id not in _stop_prices(bot)
    assert fake.count("POST", "order") == 2
    assert await bot.orders.recover(bot.exchange_of) == RecoveryReport()
    told = await notices_to(bot.db, position.user_id)
    assert len(told) == 1
    assert told[0].startswith("Trailing stop hit: sold 0.001 BTCUSDT")


async def test_orders_the_exchange_never_took_are_recorded_not_placed_after_the_recv_window(
    fake: FakeBinance, bot: Bot
) -> None:
    for _ in range(2):
        _never_place_and_fail_the_lookup(fake)
        with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
            await bot.buy("0.001")
    report = await bot.orders.recover(bot.exchange_of)
    assert report == RecoveryReport(not_placed=2)
    assert bot.clock.slept == [WINDOW_S]  # sent at the same time: one window covers both
    assert [(o.status, o.error) for o in await _all_orders(bot)] == [
        (OrderStatus.REJECTED, NOT_PLACED_AFTER_RESTART)
    ] * 2
    assert fake.orders == []
    assert not await bot.orders.has_unsettled()
    assert await _stamped_by_the_order_paths_clock(bot)


@pytest.mark.parametrize(("elapsed", "waited"), [(5.5, [0.5]), (6.0, [])])
async def test_a_recovery_waits_only_what_is_left_of_the_recv_window(
    fake: FakeBinance, bot: Bot, elapsed: float, waited: list[float]
) -> None:
    _never_place_and_fail_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.buy("0.001")
    bot.clock.now += elapsed
    report = await bot.orders.recover(bot.exchange_of)
    assert report == RecoveryReport(not_placed=1)
    assert bot.clock.slept == waited


async def test_orders_the_exchange_ended_unfilled_are_recorded_refused_by_the_recovery(
    fake: FakeBinance, bot: Bot
) -> None:
    for _ in range(2):
        fake.fill_next_partly("0")
        _lose_the_reply_and_the_lookup(fake)
        with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
            await bot.buy("0.001")
    report = await bot.orders.recover(bot.exchange_of)
    assert report == RecoveryReport(not_placed=2)
    assert [(o.status, o.error) for o in await _all_orders(bot)] == [
        (OrderStatus.REJECTED, ENDED_UNFILLED)
    ] * 2


async def test_an_order_the_exchange_cannot_show_yet_is_left_for_the_next_check(
    fake: FakeBinance, bot: Bot
) -> None:
    for _ in range(3):
        _lose_the_reply_and_the_lookup(fake)
        with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
            await bot.buy("0.001")
    fake.inject("order", 503, -1001, "Internal error.", times=2, method="GET")  # two look-ups
    assert await bot.orders.recover(bot.exchange_of) == RecoveryReport(settled=1, still_unknown=2)
    assert await _stamped_by_the_order_paths_clock(bot)
    assert await bot.orders.recover(bot.exchange_of) == RecoveryReport(settled=2)
    assert len(await store.list_open(bot.db, USER)) == 3


# Recovery and orders in flight at the same time


class Interleaved:
    """A trader's exchange that runs ``meanwhile`` (once) just before an order goes out or
    before the first look-up: what other tasks do while this one talks to the exchange."""

    def __init__(
        self,
        inner: BinanceExchange,
        meanwhile: Callable[[], Awaitable[None]],
        *,
        before: str,
    ) -> None:
        self.inner = inner
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile
        self._before = before

    @property
    def name(self) -> str:
        return self.inner.name

    async def _run(self, step: str) -> None:
        if self._before == step and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            # A task that waited for this trader's lock would wait for this very call.
            async with asyncio.timeout(10):
                await meanwhile()

    async def balances(self, max_wait_s: float | None = None) -> list[AssetBalance]:
        return await self.inner.balances(max_wait_s)

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        return await self.inner.symbol_rules(symbol)

    async def place_market_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str
    ) -> Fill:
        await self._run("send")
        return await self.inner.place_market_order(symbol, side, quantity, client_order_id)

    async def find_order(self, symbol: str, client_order_id: str) -> Fill | None:
        await self._run("lookup")
        return await self.inner.find_order(symbol, client_order_id)


async def _other_trader(fake: FakeBinance, bot: Bot) -> BinanceExchange:
    fake.add_account(OTHER_KEY, OTHER_SECRET, USDT="1000")
    await users.register(bot.db, OTHER, "other")
    return BinanceExchange(bot.gateway, OTHER_KEY, OTHER_SECRET)


async def test_the_periodic_recovery_leaves_an_order_being_sent_alone_and_settles_the_rest(
    fake: FakeBinance, bot: Bot
) -> None:
    other = await _other_trader(fake, bot)

    async def accounts(user_id: int) -> BinanceExchange:
        return {USER: bot.exchange, OTHER: other}[user_id]

    reports: list[RecoveryReport] = []

    async def meanwhile() -> None:
        # A moment later the other trader's buy loses its reply; then the periodic check.
        bot.clock.now += 1
        _lose_the_reply_and_the_lookup(fake)
        with pytest.raises(OrderOutcomeUnknown):
            await bot.orders.submit(
                other, OrderRequest(OTHER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000))
            )
        reports.append(await bot.orders.recover(accounts, skip_busy=True))

    settled = await bot.orders.submit(
        Interleaved(bot.exchange, meanwhile, before="send"),
        OrderRequest(USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000)),
    )
    assert reports == [RecoveryReport(settled=1)]  # the other's; this one was in flight
    assert settled.order.status is OrderStatus.FILLED
    assert len(fake.orders) == 2
    assert {p.user_id for p in await store.list_open(bot.db)} == {USER, OTHER}


async def test_the_periodic_recovery_skips_a_trader_whose_order_a_recovery_is_resolving(
    fake: FakeBinance, bot: Bot
) -> None:
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.buy("0.001")
    periodic: list[RecoveryReport] = []

    async def meanwhile() -> None:
        periodic.append(await bot.orders.recover(bot.exchange_of, skip_busy=True))

    async def resolving(user_id: int) -> Interleaved:
        return Interleaved(await bot.exchange_of(user_id), meanwhile, before="lookup")

    assert await bot.orders.recover(resolving) == RecoveryReport(settled=1)
    assert periodic == [RecoveryReport()]
    assert len(await store.list_open(bot.db, USER)) == 1


async def test_a_recovery_leaves_an_order_that_another_request_settled_meanwhile(
    fake: FakeBinance, bot: Bot
) -> None:
    other = await _other_trader(fake, bot)
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.buy("0.001")
    bot.clock.now += 1
    keyed = OrderRequest(OTHER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000), request_key="k")
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.orders.submit(other, keyed)
    bot.clock.now += 1
    _lose_the_reply_and_the_lookup(fake)
    with pytest.raises(OrderOutcomeUnknown, match=UNCONFIRMED):
        await bot.buy("0.001")

    async def meanwhile() -> None:
        await bot.orders.submit(other, keyed)  # Telegram delivers the other's /buy again

    async def accounts(user_id: int) -> BinanceExchange | Interleaved:
        if user_id == USER:
            return Interleaved(bot.exchange, meanwhile, before="lookup")
        return {OTHER: other}[user_id]

    assert await bot.orders.recover(accounts) == RecoveryReport(settled=2)  # not the other's
    assert fake.count("POST", "order") == 3
    assert sorted(p.user_id for p in await store.list_open(bot.db)) == [USER, USER, OTHER]


async def test_the_periodic_recovery_leaves_a_busy_traders_recorded_fills_for_later(
    fake: FakeBinance, bot: Bot
) -> None:
    fake.commission_rate = Decimal(0)
    other = await _other_trader(fake, bot)

    async def accounts(user_id: int) -> BinanceExchange:
        return {USER: bot.exchange, OTHER: other}[user_id]

    for user_id in (USER, OTHER):  # the other's a moment later
        await _filled_by_an_earlier_release(
            bot,
            client_order_id(user_id, "entry:BTCUSDT", BUY, 0),
            BUY,
            "0.001",
            "50000",
            {},
            fee_in_quote="0",
            user_id=user_id,
        )
        bot.clock.now += 1
    periodic: list[RecoveryReport] = []

    async def meanwhile() -> None:
        periodic.append(await bot.orders.recover(accounts, skip_busy=True))

    await bot.orders.submit(
        Interleaved(bot.exchange, meanwhile, before="send"),
        OrderRequest(USER, "BTCUSDT", BUY, Decimal("0.001"), Decimal(50000)),
    )
    assert periodic == [RecoveryReport(settled=1)]  # the other's fill
    assert await bot.orders.recover(accounts) == RecoveryReport(settled=1)  # then this one's
    assert sorted(p.user_id for p in await store.list_open(bot.db)) == [USER, USER, OTHER]
