"""Auto mode: entries on the analyzer's real entry signal, within settings and plan limits.

The engine is the one ``open_trading`` builds for ``LUNARA_MARKET=replay:FILE`` in paper
mode with Redis: each tick delivers one recorded candle to the streaming analyzers, and
auto-mode traders enter through the same order path as ``/buy``. The recorded candles
are calm, then one sharp dip (RSI oversold, close under the lower Bollinger band): the
analyzer's ``entry_signal`` is checked on them first, so each test knows on which tick a
real signal appears, and nothing is mocked between the candles and the orders.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from lunara.analysis.analyzer import StreamingAnalyzer, entry_signal
from lunara.analysis.candles import CSV_HEADER, Candle
from lunara.app import TradingRuntime, open_trading
from lunara.config import load_settings
from lunara.plans import PLANS, PlanName
from lunara.storage import positions as store
from lunara.storage import user_settings, users
from lunara.trading.engine import TradingEngine
from lunara.trading.executor import TickReport
from tests.lunara.trading.test_executor import Inbox

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
AUTO = 7
MANUAL = 8
SECOND_AUTO = 9
STAKE = Decimal(50)
CALM = [100.0 * (1 + 0.004 * math.sin(i / 2)) for i in range(50)]
DIP = 99.0  # a 1 % drop after the calm stretch: oversold and under the lower band
FIRST_OPEN_MS = 1_700_000_040_000
INTERVAL_MS = 60_000
EXTRA_TICKS = 3  # after the recording ends: no new candle, so no new signal


def make_candles(closes: Sequence[float]) -> list[Candle]:
    candles: list[Candle] = []
    previous = closes[0]
    for index, close in enumerate(closes):
        candles.append(
            Candle(
                open_time=FIRST_OPEN_MS + index * INTERVAL_MS,
                open=previous,
                high=max(previous, close) * 1.001,
                low=min(previous, close) * 0.999,
                close=close,
                volume=10.0,
            )
        )
        previous = close
    return candles


def signal_indexes(candles: Sequence[Candle]) -> list[int]:
    """The candles on which the analyzer itself says "enter" (the premise of each test)."""
    analyzer = StreamingAnalyzer("premise")
    found: list[int] = []
    for index, candle in enumerate(candles):
        analysis = analyzer.update(candle)
        if analysis is not None and entry_signal(analysis):
            found.append(index)
    return found


def write_recording(path: Path, candles: Sequence[Candle]) -> Path:
    lines = [",".join(CSV_HEADER)]
    lines += [
        f"{c.open_time},{c.open!r},{c.high!r},{c.low!r},{c.close!r},{c.volume!r}" for c in candles
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


DIP_CANDLES = make_candles([*CALM, DIP])
CALM_CANDLES = make_candles(CALM + CALM[:10])


def test_the_recordings_hold_exactly_the_signals_the_tests_rely_on() -> None:
    assert signal_indexes(DIP_CANDLES) == [len(DIP_CANDLES) - 1]
    assert signal_indexes(CALM_CANDLES) == []


async def open_engine(home: Path, redis_url: str, candles: Sequence[Candle]) -> TradingRuntime:
    recording = write_recording(home.parent / "recording.csv", candles)
    settings = load_settings(
        {
            "LUNARA_HOME": str(home),
            "LUNARA_MODE": "paper",
            "LUNARA_MARKET": f"replay:{recording}",
            "LUNARA_SYMBOLS": ",".join(SYMBOLS),
            "REDIS_URL": redis_url,
        },
        env_file=None,
    )
    runtime = await open_trading(settings, notifier=Inbox())
    db = runtime.engine.orders._db
    await users.register(db, AUTO, "auto")
    await user_settings.update(
        db, AUTO, {"auto_mode": True, "symbols": ["ETHUSDT"], "stake_usdt": STAKE}
    )
    await users.register(db, MANUAL, "manual")  # auto mode off (the default)
    await user_settings.update(db, MANUAL, {"symbols": ["ETHUSDT"], "stake_usdt": STAKE})
    await runtime.engine.start()
    return runtime


@pytest.fixture
async def dip_market(home: Path, redis_db: str) -> AsyncIterator[TradingRuntime]:
    runtime = await open_engine(home, redis_db, DIP_CANDLES)
    yield runtime
    await runtime.aclose()


@pytest.fixture
async def calm_market(home: Path, redis_db: str) -> AsyncIterator[TradingRuntime]:
    runtime = await open_engine(home, redis_db, CALM_CANDLES)
    yield runtime
    await runtime.aclose()


async def replay_all(engine: TradingEngine, candles: Sequence[Candle]) -> list[TickReport]:
    return [await engine.executor.tick() for _ in range(len(candles) + EXTRA_TICKS)]


def entry_ticks(reports: Sequence[TickReport]) -> list[int]:
    return [index for index, report in enumerate(reports) if report.entries]


async def test_a_real_entry_signal_opens_one_position_within_stake_and_symbols(
    dip_market: TradingRuntime,
) -> None:
    engine = dip_market.engine
    db = engine.orders._db
    reports = await replay_all(engine, DIP_CANDLES)

    assert entry_ticks(reports) == [len(DIP_CANDLES) - 1], "entry only on the signal's tick"
    assert reports[len(DIP_CANDLES) - 1].entries == 1
    [position] = await store.list_open(db, AUTO)
    assert position.symbol == "ETHUSDT"  # the trader's symbols, not every symbol signalled
    cost = position.quantity * position.entry_price
    market_price = Decimal(repr(DIP))
    assert position.quantity * market_price <= STAKE  # never more than the stake
    assert cost > STAKE * Decimal("0.99")  # and about all of it
    assert await store.list_open(db, MANUAL) == []  # auto mode off: never enters
    [stop] = engine.stop_store.tracked()
    assert stop.position_id == position.id
    assert stop.state.stop_price == pytest.approx(float(position.entry_price) * 0.95)
    assert any(user == AUTO and "Auto mode bought" in text for user, text in inbox(engine))


async def test_no_entry_without_a_signal(calm_market: TradingRuntime) -> None:
    engine = calm_market.engine
    reports = await replay_all(engine, CALM_CANDLES)
    assert entry_ticks(reports) == []
    assert await store.list_open(engine.orders._db) == []
    assert engine.stop_store.tracked() == []


async def test_no_entry_while_trading_is_paused(dip_market: TradingRuntime) -> None:
    engine = dip_market.engine
    await engine.set_paused(True, "telegram:1")
    reports = await replay_all(engine, DIP_CANDLES)
    assert all(report.paused for report in reports)
    assert entry_ticks(reports) == []
    assert await store.list_open(engine.orders._db) == []


async def test_entries_stop_at_the_plans_open_position_limit(dip_market: TradingRuntime) -> None:
    engine = dip_market.engine
    db = engine.orders._db
    limit = PLANS[PlanName.FREE].max_open_positions
    assert limit < len(SYMBOLS)
    await user_settings.update(db, AUTO, {"symbols": list(SYMBOLS)})
    reports = await replay_all(engine, DIP_CANDLES)
    assert entry_ticks(reports) == [len(DIP_CANDLES) - 1]
    held = await store.list_open(db, AUTO)
    # Every symbol signalled on the same candle; the free plan allows `limit` of them.
    assert len(held) == limit
    assert {p.symbol for p in held} == set(sorted(SYMBOLS)[:limit])


async def test_no_entry_when_the_plan_limit_is_already_reached(
    dip_market: TradingRuntime,
) -> None:
    engine = dip_market.engine
    db = engine.orders._db
    limit = PLANS[PlanName.FREE].max_open_positions
    await user_settings.update(db, AUTO, {"symbols": ["ETHUSDT"]})
    for _ in range(len(DIP_CANDLES) - 1):  # up to the candle before the signal
        await engine.executor.tick()
    for symbol in ("BTCUSDT", "SOLUSDT")[:limit]:
        await engine.buy(AUTO, symbol, STAKE)
    reports = [await engine.executor.tick() for _ in range(1 + EXTRA_TICKS)]
    assert entry_ticks(reports) == []
    held = await store.list_open(db, AUTO)
    assert sorted(p.symbol for p in held) == ["BTCUSDT", "SOLUSDT"][:limit]


async def test_after_a_paid_plan_lapses_auto_mode_enters_only_on_the_symbols_free_allows(
    dip_market: TradingRuntime,
) -> None:
    """Symbols chosen under Pro stay in the settings; on the free plan auto mode keeps to
    the first `max_symbols` of them, in the trader's order (what the plan's end notice
    says), even where the open-position limit would allow another."""
    engine = dip_market.engine
    db = engine.orders._db
    free = PLANS[PlanName.FREE]
    chosen = ["SOLUSDT", "BTCUSDT", "ETHUSDT"]
    assert free.max_symbols < len(chosen) <= PLANS[PlanName.PRO].max_symbols
    await users.set_plan(db, AUTO, PlanName.PRO.value, 1.0)  # ended long ago
    await user_settings.update(db, AUTO, {"symbols": chosen})
    reports = await replay_all(engine, DIP_CANDLES)
    assert entry_ticks(reports) == [len(DIP_CANDLES) - 1]
    held = await store.list_open(db, AUTO)
    # Every symbol signalled on that candle; without the limit BTCUSDT and ETHUSDT (the
    # first in name order) were bought, ETHUSDT being third in the trader's list.
    assert sorted(p.symbol for p in held) == sorted(chosen[: free.max_symbols])


async def test_traders_entering_on_the_same_signal_each_get_a_tracked_stop(
    dip_market: TradingRuntime,
) -> None:
    """Traders are worked on concurrently within a tick; every new position must be
    protected by a stop the executor tracks and SQLite holds."""
    engine = dip_market.engine
    db = engine.orders._db
    await users.register(db, SECOND_AUTO, "auto2")
    await user_settings.update(
        db, SECOND_AUTO, {"auto_mode": True, "symbols": ["ETHUSDT"], "stake_usdt": STAKE}
    )
    reports = await replay_all(engine, DIP_CANDLES)
    assert reports[len(DIP_CANDLES) - 1].entries == 2
    assert reports[len(DIP_CANDLES) - 1].failures == 0
    opened = {p.id for p in await store.list_open(db)}
    assert len(opened) == 2
    assert {stop.position_id for stop in engine.stop_store.tracked()} == opened
    saved = {record.position_id for record in await store.list_trailing_stops(db)}
    assert saved == opened


def inbox(engine: TradingEngine) -> list[tuple[int, str]]:
    notifier = engine._notifier
    assert isinstance(notifier, Inbox)
    return notifier.messages
