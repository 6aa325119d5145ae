"""Backtests: the same analyzer, entry rule and trailing stops, replayed over candles."""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.analysis.candles import Candle
from lunara.backtest import (
    DEFAULT_STOPS,
    CandleArrays,
    candle_stop,
    max_drawdown,
    run_backtest,
    run_portfolio,
)
from lunara.trading.trailing import TrailingParams, advance, initial_state
from tests.blueprint.cli_harness import TOKENS, Cli, manifest_document, write_manifest


def dip_then_rally_then_fall() -> list[Candle]:
    """Flat, one sharp dip (oversold below the band: the entry), a rally, then a fall."""
    closes = [100.0] * 50 + [98.0]
    closes += [98.0 + 1.5 * i for i in range(1, 11)]  # up to 113: the trailing stop activates
    closes += [113.0 - 2.0 * i for i in range(1, 8)]  # falls through the trailing stop
    return [Candle(i * 60_000, c, c + 0.2, c - 0.2, c, 1.0) for i, c in enumerate(closes)]


def test_a_dip_entry_exits_on_the_trailing_stop_with_the_expected_profit() -> None:
    candles = dip_then_rally_then_fall()
    result = run_backtest("BTCUSDT", candles, stake=100.0, fee_rate=0.0)
    assert len(result.trades) == 1
    trade = result.trades[0]
    assert trade.entry_price == 98.0
    assert trade.reason == "trailing stop"
    # Peak high 113.2; trailing 2 % below it once past the 3 % offset: stop 110.936,
    # reached by the first falling candle (low 110.8), which opened above the stop.
    expected_exit = 113.2 * (1 - 0.02)
    assert trade.exit_price == pytest.approx(expected_exit)
    assert trade.profit == pytest.approx(100.0 / 98.0 * (expected_exit - 98.0))
    assert result.win_rate == 1.0
    assert result.profit == pytest.approx(trade.profit)


TRAILING = TrailingParams(
    stoploss=-0.05,
    trailing_stop=True,
    trailing_stop_positive=0.02,
    trailing_stop_positive_offset=0.03,
)


def test_a_candle_opening_below_the_standing_stop_exits_at_the_open() -> None:
    state = initial_state(100.0, TRAILING, 0.0)  # stop 95
    after, price = candle_stop(state, 94.0, 112.0, 90.0, TRAILING, 0.0, first=False)
    assert price == 94.0
    assert after is state  # the high of a gapped candle does not trail


def test_a_low_reaching_the_standing_stop_exits_at_it_whatever_the_high() -> None:
    state = initial_state(100.0, TRAILING, 0.0)
    after, price = candle_stop(state, 100.0, 120.0, 94.0, TRAILING, 0.0, first=False)
    assert price == state.stop_price == 95.0
    assert not after.activated


def test_a_stop_raised_inside_a_candle_exits_at_the_raised_stop_not_the_open() -> None:
    state = initial_state(100.0, TRAILING, 0.0)
    after, price = candle_stop(state, 104.0, 110.0, 107.0, TRAILING, 0.0, first=False)
    assert price == after.stop_price == 110.0 * (1 - 0.02)  # 107.8, above the open
    assert after.activated


def test_a_candle_whose_low_stays_above_the_raised_stop_only_trails() -> None:
    state = initial_state(100.0, TRAILING, 0.0)
    after, price = candle_stop(state, 104.0, 110.0, 108.0, TRAILING, 0.001, first=False, now=5.0)
    assert price is None
    assert after == advance(state, 110.0, TRAILING, 5.0, 0.001)


def test_the_entry_candle_takes_freqtrades_worst_case_with_only_offset() -> None:
    state = initial_state(100.0, DEFAULT_STOPS, 0.0)  # only_offset, positive 2 %, offset 3 %
    _, price = candle_stop(state, 100.0, 110.0, 100.5, DEFAULT_STOPS, 0.0, first=True)
    assert price == pytest.approx(100.0 * (1 + 0.03 - 0.02))  # just armed, then fell
    _, floored = candle_stop(state, 100.0, 110.0, 107.0, DEFAULT_STOPS, 0.0, first=True)
    assert floored == 107.0  # never below the candle's low


def test_the_entry_candle_worst_case_uses_the_distance_in_effect() -> None:
    state = initial_state(100.0, TRAILING, 0.0)
    _, tightened = candle_stop(state, 100.0, 110.0, 90.0 + 5.5, TRAILING, 0.0, first=True)
    assert tightened == pytest.approx(100.0 * (1 - 0.02))
    plain_trail = TrailingParams(stoploss=-0.05, trailing_stop=True)
    state = initial_state(100.0, plain_trail, 0.0)
    _, price = candle_stop(state, 100.0, 102.0, 94.0 + 1.0, plain_trail, 0.0, first=True)
    assert price == pytest.approx(95.0)  # open x (1 - 5 %), the low 95 allows it


def test_a_plain_stop_exits_as_stop_loss_at_the_stop() -> None:
    candles = dip_then_rally_then_fall()
    candles += [Candle(len(candles) * 60_000, 99.0, 99.2, 90.0, 91.0, 1.0)]
    plain = TrailingParams(stoploss=-0.05)
    result = run_backtest("BTCUSDT", candles, stake=100.0, fee_rate=0.0, stops=plain)
    first = result.trades[0]
    assert (first.entry_price, first.reason, first.exit_price) == (98.0, "stop loss", 98.0 * 0.95)


def test_max_drawdown_is_the_largest_fall_from_a_peak() -> None:
    assert max_drawdown([100, 120, 90, 130, 65]) == pytest.approx(0.5)
    assert max_drawdown([100, 101, 102]) == 0.0


def shifted(candles: list[Candle], minutes: int, scale: float) -> list[Candle]:
    return [
        Candle(c.open_time + minutes * 60_000, c.open * scale, c.high * scale, c.low * scale,
               c.close * scale, c.volume)
        for c in candles
    ]  # fmt: skip


def test_symbols_share_one_budget_split_over_the_symbols_without_a_position() -> None:
    first = dip_then_rally_then_fall()
    second = shifted(first, 2, 2.0)  # the same dip two minutes later, at twice the price
    result = run_portfolio(
        {"AAAUSDT": CandleArrays.of(first), "BBBUSDT": CandleArrays.of(second)},
        stake=100.0,
        fee_rate=0.0,
    )
    assert [(t.symbol, t.stake) for t in result.trades] == [("AAAUSDT", 50.0), ("BBBUSDT", 50.0)]
    ratios = [t.profit_ratio for t in result.trades]
    assert ratios[0] == pytest.approx(ratios[1])  # the same move, the same return
    assert result.final_balance == pytest.approx(100.0 + sum(t.profit for t in result.trades))
    assert result.candles == len(first) + len(second)
    assert len(result.timeline) == len(first) + 2
    assert result.symbols["BBBUSDT"].profit[-1] == pytest.approx(result.trades[1].profit)


def test_an_entry_takes_what_is_left_when_the_other_symbols_hold_positions() -> None:
    first = dip_then_rally_then_fall()
    candles = {
        "AAAUSDT": CandleArrays.of(first),
        "BBBUSDT": CandleArrays.of(shifted(first, 1, 1.0)),
        "CCCUSDT": CandleArrays.of(shifted(first, 2, 1.0)),
    }
    result = run_portfolio(candles, stake=90.0, fee_rate=0.0)
    assert [t.stake for t in result.trades] == pytest.approx([30.0, 30.0, 30.0])
    opened = sorted(result.trades, key=lambda t: t.entry_time)
    assert [t.symbol for t in opened] == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]


def test_a_position_open_when_its_data_ends_closes_there_and_the_last_candle_never_enters() -> None:
    candles = dip_then_rally_then_fall()[:55]  # ends while the position is open
    result = run_backtest("BTCUSDT", candles, stake=100.0, fee_rate=0.0)
    assert [t.reason for t in result.trades] == ["end of data"]
    assert result.trades[0].exit_time == candles[-1].open_time
    assert result.trades[0].exit_price == candles[-1].close
    only_the_dip = dip_then_rally_then_fall()[:51]  # the entry signal on the last candle
    assert run_backtest("BTCUSDT", only_the_dip, stake=100.0, fee_rate=0.0).trades == ()


def test_the_stop_line_follows_the_open_position_only() -> None:
    result = run_backtest("BTCUSDT", dip_then_rally_then_fall(), stake=100.0, fee_rate=0.0)
    stop = result.symbols["BTCUSDT"].stop
    trade = result.trades[0]
    holding = (result.timeline >= trade.entry_time) & (result.timeline < trade.exit_time)
    assert not np.isnan(stop[holding]).any()
    assert np.isnan(stop[~holding]).all()
    assert stop[holding][0] == pytest.approx(98.0 * 0.95)


@pytest.mark.slow
def test_backtest_cli_json_and_plot(tmp_path: Path) -> None:
    data = tmp_path / "klines.csv"
    rows = ["open_time,open,high,low,close,volume"] + [
        f"{c.open_time},{c.open},{c.high},{c.low},{c.close},1" for c in dip_then_rally_then_fall()
    ]
    data.write_text("\n".join(rows) + "\n")
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    entry = (sys.executable, "-m", "lunara.cli")
    plot = tmp_path / "equity.png"
    result = cli.run("backtest", "--symbol", "BTCUSDT", "--data", str(data), "--json",
                     "--plot", str(plot), entry=entry, token=TOKENS["owner"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["trades"]) == 1
    assert document["win_rate"] == 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = cli.run("backtest", "--symbol", "BTCUSDT", "--data", str(data), "--sim", entry=entry)
    assert both.returncode == 2
    sim = cli.run("backtest", "--symbol", "ETHUSDT", "--sim", "--days", "1", "--json", entry=entry)
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["candles"] == 1440


@settings(max_examples=15, deadline=None)
@given(
    seeds=st.lists(st.integers(0, 10_000), min_size=1, max_size=3),
    count=st.integers(60, 600),
    offsets=st.lists(st.integers(0, 120), min_size=3, max_size=3),
)
def test_a_shared_budget_never_holds_two_positions_in_a_symbol_and_adds_up(
    seeds: list[int], count: int, offsets: list[int]
) -> None:
    from lunara.trading.market import simulated_candles

    series = {}
    for number, seed in enumerate(seeds):
        candles = simulated_candles("BTCUSDT", count, seed=seed)
        series[f"S{number}USDT"] = CandleArrays.of(shifted(candles, offsets[number], 1.0))
    result = run_portfolio(series, stake=1000.0, fee_rate=0.001)
    for symbol in series:
        own = [t for t in result.trades if t.symbol == symbol]
        assert all(a.exit_time <= b.entry_time for a, b in pairwise(own))
    assert all(t.stake > 0 for t in result.trades)
    assert result.final_balance == pytest.approx(1000.0 + sum(t.profit for t in result.trades))
    events = sorted(
        [(t.entry_time, 1, t.stake) for t in result.trades]
        + [(t.exit_time, 0, -t.stake - t.profit) for t in result.trades]
    )  # exits free their proceeds before entries at the same time
    cash = 1000.0
    for _, _, change in events:
        cash -= change
        assert cash >= -1e-6  # never more spent than held
