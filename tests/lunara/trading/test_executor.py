"""The tick loop on the paper exchange with a real Redis stop store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tenacity import wait_none

from lunara.services import TradingPaused
from lunara.storage import positions as store
from lunara.storage import user_settings, users
from lunara.storage.database import open_database
from lunara.trading.binance import BinanceGateway, RetryPolicy
from lunara.trading.engine import EngineConfig, TradingEngine
from lunara.trading.exchange import CredentialsRejected, Exchange
from lunara.trading.executor import CircuitBreaker, trailing_params
from lunara.trading.limiter import WeightLimiter
from lunara.trading.market import BinanceMarket, SimMarket
from lunara.trading.stops import RedisStopStore
from tests.fakes.binance_api import FakeBinance
from tests.lunara.trading.support import notices_to

MAX_TICKS = 400


class Inbox:
    """The Notifier the Telegram layer would provide, recording what it was asked to send."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []

    async def notify(self, user_id: int, text: str) -> None:
        self.messages.append((user_id, text))


@pytest.fixture
async def engine(tmp_path: Path, redis_db: str) -> AsyncIterator[TradingEngine]:
    path = tmp_path / "lunara.db"
    db = await open_database(path)
    stop_db = await open_database(path)
    redis = Redis.from_url(redis_db)
    market = SimMarket(seed=21, volatility=0.01)
    built = TradingEngine(
        db=db,
        stops=RedisStopStore(redis, stop_db, name="test"),
        market=market,
        config=EngineConfig(),
        notifier=Inbox(),
    )
    for user_id in (1, 2):
        await users.register(db, user_id, f"trader{user_id}")
        await user_settings.update(
            db,
            user_id,
            {
                "stoploss": -0.02,
                "trailing_stop_positive": 0.01,
                "trailing_stop_positive_offset": 0.02,
            },
        )
    await built.start()
    yield built
    await redis.aclose()
    await db.close()
    await stop_db.close()


async def test_triggered_trailing_stops_exit_through_the_order_path(engine: TradingEngine) -> None:
    inbox = Inbox()
    engine.attach_notifier(inbox)
    await engine.buy(1, "BTCUSDT", Decimal(100))
    await engine.buy(2, "ETHUSDT", Decimal(100))
    for _ in range(MAX_TICKS):
        report = await engine.executor.tick()
        if engine.executor.ticks > 1 and report.exits == 0:
            assert report.store_round_trips == 1  # one advance_all call for every position
        if not engine.stop_store.tracked():
            break
    assert engine.stop_store.tracked() == []
    db = engine.orders._db
    for user_id in (1, 2):
        assert await store.list_open(db, user_id) == []
        closed = await store.by_user(db, user_id)
        assert closed[0].exit_reason in ("stop_loss", "trailing_stop")
    # Each exit's notice was queued with it, once; none went through the notifier.
    for user_id in (1, 2):
        exits = [text for text in await notices_to(db, user_id) if "hit: sold" in text]
        assert len(exits) == 1
    assert not any("hit: sold" in text for _, text in inbox.messages)


async def test_a_trader_with_a_plain_stop_keeps_the_initial_stop_and_exits_as_stop_loss(
    engine: TradingEngine,
) -> None:
    await user_settings.update(engine.orders._db, 1, {"trailing_stop": "off"})
    assert not trailing_params(await user_settings.get(engine.orders._db, 1)).trailing_stop
    bought = await engine.buy(1, "BTCUSDT", Decimal(100))
    [stop] = engine.stop_store.tracked()
    initial = stop.state.stop_price
    highest = 0.0
    for _ in range(MAX_TICKS):
        await engine.executor.tick()
        tracked = engine.stop_store.tracked()
        if not tracked:
            break
        assert tracked[0].state.stop_price == initial
        highest = max(highest, tracked[0].state.peak_price)
    assert engine.stop_store.tracked() == []
    [closed] = await store.by_user(engine.orders._db, 1)
    assert closed.id == bought.position_id
    assert closed.exit_reason == "stop_loss"
    # The price rose enough on the way that a trailing stop would have moved.
    assert highest * (1 - 0.02) > initial


async def test_one_traders_failing_keys_trip_the_breaker_and_others_keep_trading(
    engine: TradingEngine,
) -> None:
    inbox = Inbox()
    engine.attach_notifier(inbox)
    engine.breaker = CircuitBreaker(threshold=2, cooldown_s=3600)
    engine.executor._breaker = engine.breaker
    await engine.buy(1, "BTCUSDT", Decimal(100))
    await engine.buy(2, "BTCUSDT", Decimal(100))
    real_exchange_for = engine.executor._exchange_for

    async def exchange_for(user_id: int) -> Exchange:
        if user_id == 1:
            raise CredentialsRejected("Binance refused the API key: Invalid API-key")
        return await real_exchange_for(user_id)

    engine.executor._exchange_for = exchange_for
    for _ in range(MAX_TICKS):
        await engine.executor.tick()
        if engine.breaker.is_open(1) and not await store.list_open(engine.orders._db, 2):
            break
    assert engine.breaker.is_open(1)
    assert await store.list_open(engine.orders._db, 2) == []
    assert len(await store.list_open(engine.orders._db, 1)) == 1
    assert any(user == 1 and "paused" in text for user, text in inbox.messages)
    assert (await engine.engine_status())["paused_users"] == [1]


async def test_an_admin_pause_refuses_buys_until_resumed(engine: TradingEngine) -> None:
    await engine.set_paused(True, "telegram:1")
    assert await engine.is_paused()
    with pytest.raises(TradingPaused):
        await engine.buy(1, "BTCUSDT", Decimal(100))
    report = await engine.executor.tick()
    assert report.paused
    assert report.entries == 0
    await engine.set_paused(False, "telegram:1")
    result = await engine.buy(1, "BTCUSDT", Decimal(100))
    assert result.side == "BUY"
    assert result.position_id is not None


async def test_one_unknown_symbol_in_a_traders_settings_costs_no_one_their_stops(
    tmp_path: Path, redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Binance refuses a price batch that names one unknown symbol; the trader whose
    settings hold one (saved before symbols were checked, or delisted since) must not
    blind the tick: the other trader's stop still sells, and that trader is told once."""
    prices = {"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}
    with FakeBinance(prices=prices) as binance:
        gateway = BinanceGateway(
            base_url=binance.base_url,
            limiter=WeightLimiter(),
            timeout_s=2.0,
            retry=RetryPolicy(attempts=1, wait=wait_none()),
        )
        path = tmp_path / "lunara.db"
        db, stop_db = await open_database(path), await open_database(path)
        redis = Redis.from_url(redis_db)
        inbox = Inbox()
        engine = TradingEngine(
            db=db,
            stops=RedisStopStore(redis, stop_db, name="test"),
            market=BinanceMarket(gateway),
            config=EngineConfig(symbols=("BTCUSDT", "ETHUSDT")),
            gateway=gateway,
            notifier=inbox,
        )
        try:
            for user_id in (1, 2):
                await users.register(db, user_id, f"trader{user_id}")
            await user_settings.update(db, 1, {"stoploss": -0.02, "trailing_stop": False})
            await user_settings.update(
                db, 2, {"symbols": ("ETHUSDT", "NOPEUSDT"), "auto_mode": True}
            )
            await engine.start()
            await engine.buy(1, "BTCUSDT", Decimal(100))
            binance.set_price("BTCUSDT", 48000)  # below trader 1's 2 % stop
            for _ in range(3):
                await engine.executor.tick()
            assert await store.list_open(db, 1) == []
            sold = await store.by_user(db, 1)
            assert sold[0].exit_reason == "stop_loss"
            told = [(user, text) for user, text in inbox.messages if "NOPEUSDT" in text]
            assert len(told) == 1
            assert told[0][0] == 2
            assert "/settings" in told[0][1]
            logged = [r for r in caplog.records if "NOPEUSDT" in r.getMessage()]
            assert len(logged) == 1
        finally:
            await redis.aclose()
            await db.close()
            await stop_db.close()
            await gateway.aclose()
