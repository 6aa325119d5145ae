"""Backtests: the same analyzer, entry rule and trailing stops, replayed over candles."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lunara.analysis.candles import Candle
from lunara.backtest import max_drawdown, run_backtest
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
    assert trade.entry_price == 98.0 and trade.reason == "trailing stop"
    # Peak high 113.2; trailing 2 % below it once past the 3 % offset: stop 110.936,
    # reached by the first falling candle (low 110.8), which opened above the stop.
    expected_exit = 113.2 * (1 - 0.02)
    assert trade.exit_price == pytest.approx(expected_exit)
    assert trade.profit == pytest.approx(100.0 / 98.0 * (expected_exit - 98.0))
    assert result.win_rate == 1.0
    assert result.profit == pytest.approx(trade.profit)


def test_max_drawdown_is_the_largest_fall_from_a_peak() -> None:
    assert max_drawdown([100, 120, 90, 130, 65]) == pytest.approx(0.5)
    assert max_drawdown([100, 101, 102]) == 0.0


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
    assert len(document["trades"]) == 1 and document["win_rate"] == 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    both = cli.run("backtest", "--symbol", "BTCUSDT", "--data", str(data), "--sim", entry=entry)
    assert both.returncode == 2
    sim = cli.run("backtest", "--symbol", "ETHUSDT", "--sim", "--days", "1", "--json", entry=entry)
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["candles"] == 1440
