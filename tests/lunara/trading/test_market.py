"""Market data sources: the offline sim market and replays of recorded klines."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunara.services import TradingError
from lunara.trading.market import ReplayMarket, SimMarket, read_klines_csv

CSV = (
    "open_time,open,high,low,close,volume\n"
    "1700000000000,100,101,99,100.5,12\n"
    "1700000060000,100.5,102,100,101.5,8\n"
    "1700000120000,101.5,103,101,102.5,9\n"
)


def test_replay_file_reads_as_market_candles_with_close_times(tmp_path: Path) -> None:
    path = tmp_path / "klines.csv"
    path.write_text(CSV)
    candles = read_klines_csv(path)
    assert [c.close for c in candles] == [100.5, 101.5, 102.5]
    assert candles[0].close_time == 1700000059999


def test_a_bad_replay_file_is_a_clear_trading_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("open_time,open,high,low,close,volume\n1,1,1,1,oops,1\n")
    with pytest.raises(TradingError, match="line 2"):
        ReplayMarket(path)


async def test_the_sim_market_is_deterministic_for_a_seed() -> None:
    first, second = SimMarket(7, tick_s=1.0), SimMarket(7, tick_s=1.0)
    history_a = await first.history("BTCUSDT", 50)
    history_b = await second.history("BTCUSDT", 50)
    assert [c.close for c in history_a] == [c.close for c in history_b]
    assert len(history_a) == 50
