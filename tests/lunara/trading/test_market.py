"""Market data: the seeded simulator, candle building, and replay from a file."""

from __future__ import annotations

from pathlib import Path

from lunara.trading.market import CandleBuilder, ReplayMarket, SimMarket


async def test_the_sim_market_is_deterministic_for_a_seed_and_independent_per_symbol() -> None:
    first, second, other = SimMarket(seed=9), SimMarket(seed=9), SimMarket(seed=10)
    wider = SimMarket(seed=9)
    runs = []
    for market, symbols in (
        (first, ["BTCUSDT"]),
        (second, ["BTCUSDT"]),
        (wider, ["BTCUSDT", "ETHUSDT"]),
    ):
        runs.append([(await market.tick(symbols, 0.0)).prices["BTCUSDT"] for _ in range(50)])
    assert runs[0] == runs[1] == runs[2]
    assert [(await other.tick(["BTCUSDT"], 0.0)).prices["BTCUSDT"] for _ in range(50)] != runs[0]
    assert len(await first.history("BTCUSDT", 500)) >= 200


async def test_candles_close_when_a_price_falls_into_the_next_interval() -> None:
    builder = CandleBuilder(60)
    assert builder.add("BTCUSDT", 0.0, 10.0) is None
    assert builder.add("BTCUSDT", 30.0, 12.0) is None
    assert builder.add("BTCUSDT", 45.0, 9.0) is None
    closed = builder.add("BTCUSDT", 61.0, 11.0)
    assert closed is not None
    assert (closed.open, closed.high, closed.low, closed.close) == (10.0, 12.0, 9.0, 9.0)


async def test_replay_plays_recorded_klines_one_candle_per_tick(tmp_path: Path) -> None:
    path = tmp_path / "klines.csv"
    rows = ["open_time,open,high,low,close,volume"]
    rows += [f"{i * 60_000},{100 + i},{101 + i},{99 + i},{100.5 + i},1" for i in range(3)]
    path.write_text("\n".join(rows) + "\n")
    market = ReplayMarket(path)
    assert market.interval_s == 60
    closes = []
    for _ in range(4):
        tick = await market.tick(["BTCUSDT"], 0.0)
        closes.append(str(tick.prices["BTCUSDT"]))
    assert closes == ["100.5", "101.5", "102.5", "102.5"]
    assert len(await market.history("BTCUSDT", 10)) == 3
