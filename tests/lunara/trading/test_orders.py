"""The order path: deterministic ids, recorded before sending, never placed twice."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from lunara.services import AssetBalance, TradingError
from lunara.storage import positions as store
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.exchange import ExchangeUnavailable, Fill
from lunara.trading.filters import SymbolRules
from lunara.trading.market import SimMarket
from lunara.trading.model import OrderSide, OrderStatus
from lunara.trading.orders import (
    DEFAULT_UNKNOWN_ORDER_WINDOW_S,
    OrderPath,
    OrderRequest,
    client_order_id,
)
from lunara.trading.paper import PaperExchange
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams
from tests.lunara.trading.support import FakeClock, order_path

PARAMS = TrailingParams(stoploss=-0.05, trailing_stop=True)
USER = 11
INTERRUPTED = (
    "a restart interrupted this order before it reached the exchange; "
    "nothing was bought, send the command again"
)


class Crash(BaseException):
    """Stands for the process dying at one point of the order path."""


class FaultyExchange:
    """The real paper exchange with one injected fault around the send."""

    def __init__(self, inner: PaperExchange, fault: str) -> None:
        self.inner = inner
        self.fault = fault
        self.sends = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def balances(self, max_wait_s: float | None = None) -> list[AssetBalance]:
        return await self.inner.balances(max_wait_s)

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        return await self.inner.symbol_rules(symbol)

    async def place_market_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str
    ) -> Fill:
        self.sends += 1
        if self.fault == "crash_before_send":
            raise Crash()
        fill = await self.inner.place_market_order(symbol, side, quantity, client_order_id)
        if self.fault == "crash_after_fill":
            raise Crash()
        if self.fault == "drop_response":
            raise ExchangeUnavailable("connection reset after the order was accepted")
        return fill

    async def find_order(self, symbol: str, client_order_id: str) -> Fill | None:
        return await self.inner.find_order(symbol, client_order_id)


async def _params(user_id: int) -> TrailingParams:
    return PARAMS


def test_client_order_ids_are_deterministic_and_fit_binance() -> None:
    first = client_order_id(1, "entry:BTCUSDT", OrderSide.BUY, 0)
    # What every release derives: an order recorded before an upgrade is found after it.
    assert first == "lu-8720090ef04c14dccf61bdc9dcde030b"
    assert first == client_order_id(1, "entry:BTCUSDT", OrderSide.BUY, 0)
    assert first != client_order_id(1, "entry:BTCUSDT", OrderSide.BUY, 1)
    assert first != client_order_id(2, "entry:BTCUSDT", OrderSide.BUY, 0)
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,36}", first)


async def _setup(
    path: Path, market: SimMarket, clock: FakeClock | None = None
) -> tuple[aiosqlite.Connection, aiosqlite.Connection, PaperExchange, OrderPath]:
    clock = clock or FakeClock()
    db = await open_database(path)
    stop_db = await open_database(path)
    await users.register(db, USER, "trader")
    paper = PaperExchange(
        db,
        USER,
        market.prices,
        fee_rate=Decimal("0.001"),
        slippage=Decimal(0),
        start_balance=Decimal(1000),
    )
    stops = SqliteStopStore(stop_db)
    await stops.reconcile()
    orders = OrderPath(db, stops, default_stop_params=_params, clock=clock, sleep=clock.sleep)
    return db, stop_db, paper, orders


@pytest.mark.parametrize("fault", ["crash_before_send", "crash_after_fill"])
async def test_a_crash_around_the_send_never_places_an_order_twice(
    tmp_path: Path, fault: str
) -> None:
    path = tmp_path / "lunara.db"
    market = SimMarket(seed=5)
    db, stop_db, paper, orders = await _setup(path, market)
    price = (await market.prices(["ETHUSDT"]))["ETHUSDT"]
    request = OrderRequest(USER, "ETHUSDT", OrderSide.BUY, Decimal("0.05"), price)
    with pytest.raises(Crash):
        await orders.submit(FaultyExchange(paper, fault), request)
    await db.close()
    await stop_db.close()

    # A new process over the same database.
    restarted = FakeClock()
    db, stop_db, paper, orders = await _setup(path, market, restarted)
    try:
        if fault == "crash_before_send":
            assert await orders.has_unsettled()  # sent or not, the exchange must say
        report = await orders.recover(lambda user_id: _exchange(paper))
        assert not await orders.has_unsettled()
        open_positions = await store.list_open(db, USER)
        balances = {b.asset: b.free for b in await paper.balances()}
        if fault == "crash_before_send":
            assert report.not_placed == 1
            assert open_positions == []
            assert balances == {"USDT": Decimal(1000)}
            # Not found is only final once the send's recvWindow has passed.
            assert restarted.slept == [DEFAULT_UNKNOWN_ORDER_WINDOW_S]
        else:
            assert report.settled == 1
            assert len(open_positions) == 1
            assert balances["ETH"] == Decimal("0.05")
            assert restarted.slept == []
        # Recovering again changes nothing; a fresh buy gets a new id and fills once.
        again = await orders.recover(lambda user_id: _exchange(paper))
        assert (again.settled, again.not_placed) == (0, 0)
        settled = await orders.submit(paper, request)
        assert len(await store.list_open(db, USER)) == len(open_positions) + 1
        async with db.execute("SELECT COUNT(*) FROM orders WHERE status = 'filled'") as cur:
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == len(open_positions) + 1
        assert settled.order.client_order_id != client_order_id(
            USER, "entry:ETHUSDT", OrderSide.BUY, 0
        )
    finally:
        await db.close()
        await stop_db.close()


async def _exchange(paper: PaperExchange) -> PaperExchange:
    return paper


async def test_an_accepted_order_whose_answer_was_lost_is_found_by_its_client_id(
    tmp_path: Path,
) -> None:
    market = SimMarket(seed=5)
    db, stop_db, paper, orders = await _setup(tmp_path / "lunara.db", market)
    try:
        price = (await market.prices(["ETHUSDT"]))["ETHUSDT"]
        faulty = FaultyExchange(paper, "drop_response")
        settled = await orders.submit(
            faulty, OrderRequest(USER, "ETHUSDT", OrderSide.BUY, Decimal("0.05"), price)
        )
        assert faulty.sends == 1
        assert settled.order.status is OrderStatus.FILLED
        balances = {b.asset: b.free for b in await paper.balances()}
        assert balances["ETH"] == Decimal("0.05")
        assert len(await store.list_open(db, USER)) == 1
    finally:
        await db.close()
        await stop_db.close()


@pytest.mark.parametrize("fault", ["crash_before_send", "crash_after_fill"])
async def test_a_keyed_entry_asked_again_after_a_crash_never_buys_twice(
    tmp_path: Path, fault: str
) -> None:
    # A Telegram /buy delivered again after the bot died carries the same request key.
    path = tmp_path / "lunara.db"
    market = SimMarket(seed=5)
    db, stop_db, paper, orders = await _setup(path, market)
    price = (await market.prices(["ETHUSDT"]))["ETHUSDT"]
    request = OrderRequest(
        USER, "ETHUSDT", OrderSide.BUY, Decimal("0.05"), price, request_key="tg:11:7"
    )
    with pytest.raises(Crash):
        await orders.submit(FaultyExchange(paper, fault), request)
    await db.close()
    await stop_db.close()

    db, stop_db, paper, orders = await _setup(path, market)
    try:
        await orders.recover(lambda user_id: _exchange(paper))
        if fault == "crash_before_send":
            with pytest.raises(TradingError, match=f"^{re.escape(INTERRUPTED)}$"):
                await orders.submit(paper, request)
            assert await store.list_open(db, USER) == []
        else:
            first = await orders.submit(paper, request)
            again = await orders.submit(paper, request)
            assert first.order.client_order_id == again.order.client_order_id
            assert first.position.id == again.position.id
            assert len(await store.list_open(db, USER)) == 1
            balances = {b.asset: b.free for b in await paper.balances()}
            assert balances["ETH"] == Decimal("0.05")
        # Another message is another entry.
        other = OrderRequest(
            USER, "ETHUSDT", OrderSide.BUY, Decimal("0.05"), price, request_key="tg:11:8"
        )
        await orders.submit(paper, other)
        async with db.execute("SELECT COUNT(*) FROM orders WHERE status = 'filled'") as cur:
            row = await cur.fetchone()
        assert row is not None
        assert row[0] == (1 if fault == "crash_before_send" else 2)
    finally:
        await db.close()
        await stop_db.close()


async def test_a_keyed_entry_filled_before_a_crash_is_settled_with_its_stop_when_asked_again(
    tmp_path: Path,
) -> None:
    # The paper exchange wrote the fill, the crash came before the position did; the /buy
    # is delivered again before any recovery ran.
    path = tmp_path / "lunara.db"
    market = SimMarket(seed=5)
    db, stop_db, paper, orders = await _setup(path, market)
    price = (await market.prices(["ETHUSDT"]))["ETHUSDT"]
    request = OrderRequest(
        USER,
        "ETHUSDT",
        OrderSide.BUY,
        Decimal("0.05"),
        price,
        stop_params=TrailingParams(stoploss=-0.10, trailing_stop=True),
        request_key="tg:11:9",
    )
    with pytest.raises(Crash):
        await orders.submit(FaultyExchange(paper, "crash_after_fill"), request)
    await db.close()
    await stop_db.close()

    db, stop_db, paper, orders = await _setup(path, market)
    try:
        settled = await orders.submit(paper, request)
        assert settled.order.client_order_id == request.keyed_entry_id
        stop = await store.get_trailing_stop(db, settled.position.id)
        assert stop is not None
        assert stop.stop_price == pytest.approx(float(settled.price) * 0.9)
        assert {b.asset: b.free for b in await paper.balances()}["ETH"] == Decimal("0.05")
    finally:
        await db.close()
        await stop_db.close()


async def test_until_idle_returns_once_every_order_under_way_is_done(tmp_path: Path) -> None:
    """The shutdown's wait: woken by the last release, not before."""
    db, stop_db, orders = await order_path(tmp_path)
    try:
        await orders.until_idle()  # nothing under way: at once
        first, second = orders.lock_for(1), orders.lock_for(2)
        await first.acquire()
        await second.acquire()
        waiting = asyncio.create_task(orders.until_idle())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        first.release()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # the second trader's order is still under way
        second.release()
        await waiting
        assert not orders.busy
    finally:
        await db.close()
        await stop_db.close()
