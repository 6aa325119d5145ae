"""The engine as the Telegram layer and the runtime see it (paper exchange, sim market)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from lunara.ai.analyst import NOTE_OFF
from lunara.config import load_settings
from lunara.services import TradingError
from lunara.storage import positions as store
from lunara.storage import users
from lunara.trading.engine import TradingRuntime, open_trading


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
    assert shown[0].stop_price is not None and shown[0].current_price is not None
    sold = await engine.sell(42, "BTCUSDT")
    assert [result.side for result in sold] == ["SELL"]
    assert await engine.positions(42) == []
    with pytest.raises(TradingError, match="not traded"):
        await engine.buy(42, "DOGEUSDT", Decimal(10))
    with pytest.raises(TradingError, match="/start"):
        await engine.balances(999)


async def test_analysis_has_indicators_and_says_when_ai_is_off(trading: TradingRuntime) -> None:
    engine = trading.engine
    await engine.start()
    view = await engine.analyze(42, "ETHUSDT", with_ai=True)
    assert view.symbol == "ETHUSDT"
    assert view.indicators["rsi"] is not None
    assert view.ai_commentary is None and view.ai_note == NOTE_OFF


async def test_the_runner_ticks_until_stopped_then_checkpoints_the_stops(
    trading: TradingRuntime,
) -> None:
    engine = trading.engine
    await engine.start()
    await engine.buy(42, "SOLUSDT", Decimal(100))
    stop = asyncio.Event()
    task = asyncio.create_task(trading.runner.run(stop))
    deadline = asyncio.get_running_loop().time() + 20
    while engine.executor.ticks < 5:
        assert asyncio.get_running_loop().time() < deadline, "the runner did not tick"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    live = {s.position_id: s.state for s in engine.stop_store.tracked()}
    saved = {r.position_id: r for r in await store.list_trailing_stops(engine.orders._db)}
    assert live.keys() == saved.keys() and live
    for position_id, state in live.items():
        assert saved[position_id].stop_price == state.stop_price
        assert saved[position_id].peak_price == state.peak_price
