"""The engine as the Telegram layer and the runtime see it (paper exchange; the sim market,
or the Binance market of the local fake Binance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from lunara.ai.analyst import NOTE_OFF
from lunara.app import TradingRuntime, open_trading
from lunara.config import load_settings
from lunara.services import TradingError
from lunara.storage import positions as store
from lunara.storage import user_settings, users
from tests.fakes.binance_api import FakeBinance
from tests.waiting import until


@pytest.fixture
async def trading(home: Path, redis_db: str) -> AsyncIterator[TradingRuntime]:
    settings = load_settings(
        {"LUNARA_HOME": str(home), "REDIS_URL": redis_db, "LUNARA_TICK_SECONDS": "0.05"},
        env_file=None,
    )
    runtime = await open_trading(settings, seed=4)
    await users.register(runtime.engine.orders._db, 42, "trader")
    yield runtime
    await runtime.aclose()


async def test_the_service_buys_shows_and_sells_a_position(trading: TradingRuntime) -> None:
    engine = trading.engine
    await engine.start()
    bought = await engine.buy(42, "btcusdt", Decimal(200))
    shown = await engine.positions(42)
    assert [view.position_id for view in shown] == [bought.position_id]
    assert shown[0].stop_price is not None
    assert shown[0].current_price is not None
    sold = await engine.sell(42, "BTCUSDT")
    assert [result.side for result in sold] == ["SELL"]
    assert await engine.positions(42) == []
    with pytest.raises(TradingError, match="not traded"):
        await engine.buy(42, "DOGEUSDT", Decimal(10))
    with pytest.raises(TradingError, match="/start"):
        await engine.balances(999)


async def test_a_buy_asked_again_under_its_request_key_buys_once(
    trading: TradingRuntime,
) -> None:
    engine = trading.engine
    await engine.start()
    first = await engine.buy(42, "BTCUSDT", Decimal(200), request_key="tg:42:7")
    again = await engine.buy(42, "BTCUSDT", Decimal(200), request_key="tg:42:7")
    assert again.client_order_id == first.client_order_id
    assert again.position_id == first.position_id
    assert [view.position_id for view in await engine.positions(42)] == [first.position_id]


async def test_analysis_has_indicators_and_says_when_ai_is_off(trading: TradingRuntime) -> None:
    engine = trading.engine
    await engine.start()
    view = await engine.analyze(42, "ETHUSDT", with_ai=True)
    assert view.symbol == "ETHUSDT"
    assert view.indicators["rsi"] is not None
    assert view.ai_commentary is None
    assert view.ai_note == NOTE_OFF


async def test_the_runner_ticks_until_stopped_then_checkpoints_the_stops(
    trading: TradingRuntime,
) -> None:
    engine = trading.engine
    await engine.start()
    await engine.buy(42, "SOLUSDT", Decimal(100))
    stop = asyncio.Event()
    task = asyncio.create_task(trading.runner.run(stop))
    await until(lambda: engine.executor.ticks >= 5, 20, "the runner to tick five times")
    stop.set()
    await asyncio.wait_for(task, 10)
    live = {s.position_id: s.state for s in engine.stop_store.tracked()}
    saved = {r.position_id: r for r in await store.list_trailing_stops(engine.orders._db)}
    assert live.keys() == saved.keys()
    assert live
    for position_id, state in live.items():
        assert saved[position_id].stop_price == state.stop_price
        assert saved[position_id].peak_price == state.peak_price


async def test_a_configured_symbol_binance_does_not_list_is_named_in_the_log_and_left_out(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in LUNARA_SYMBOLS does not stop the bot (its stops must run): the name is
    logged and left out; buying it is refused naming it, the others trade."""
    with FakeBinance(prices={"BTCUSDT": Decimal(50000), "ETHUSDT": Decimal(3000)}) as binance:
        settings = load_settings(
            {
                "LUNARA_HOME": str(home),
                "LUNARA_MARKET": "binance",
                "BINANCE_API_BASE_URL": binance.base_url,
                "LUNARA_SYMBOLS": "BTCUSDT,BTCUSTD,ETHUSDT",
            },
            env_file=None,
        )
        runtime = await open_trading(settings)
        try:
            engine = runtime.engine
            await users.register(engine.orders._db, 42, "trader")
            await engine.start()
            errors = [r for r in caplog.records if r.levelname == "ERROR"]
            assert len(errors) == 1
            assert "BTCUSTD" in errors[0].getMessage()
            with pytest.raises(TradingError, match="BTCUSTD is not traded by this bot"):
                await engine.buy(42, "BTCUSTD", Decimal(100))
            assert (await engine.buy(42, "ETHUSDT", Decimal(100))).symbol == "ETHUSDT"
            with pytest.raises(TradingError, match="Binance does not list NOPEUSDT, XUSDT;"):
                await engine.check_symbols(("BTCUSDT", "NOPEUSDT", "XUSDT"))
            await engine.check_symbols(("BTCUSDT", "ETHUSDT"))
            await user_settings.update(engine.orders._db, 42, {"auto_mode": True})
            await engine.executor.tick()  # an auto-trader watches the bot's symbols
            asked = [r.params for r in binance.recorded if r.endpoint == "ticker/price"]
            assert asked[-1]["symbols"] == '["BTCUSDT","ETHUSDT"]'
            assert not any("BTCUSTD" in str(params) for params in asked)
        finally:
            await runtime.aclose()
