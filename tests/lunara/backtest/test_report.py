"""The report's figures on a hand-computed set of trades, as freqtrade defines them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lunara.backtest import BacktestResult, ExitReason, SymbolRun, Trade
from lunara.backtest.report import build_report, iso, print_report, write_trades_csv

M = 60_000


def trade(symbol: str, entry: int, exit_: int, stake: float, profit: float, reason: str) -> Trade:
    price = 10.0
    return Trade(
        symbol, entry * M, price, exit_ * M, price, stake / price, stake, profit, ExitReason(reason)
    )


TRADES = (
    trade("AAAUSDT", 0, 2, 100.0, 10.0, "trailing stop"),  # +10 %, 2 min
    trade("BBBUSDT", 0, 1, 50.0, 6.0, "trailing stop"),  # +12 %, 1 min
    trade("AAAUSDT", 2, 4, 200.0, -20.0, "stop loss"),  # -10 %, 2 min
    trade("BBBUSDT", 1, 3, 100.0, 0.0, "end of data"),  # a draw, 2 min
)


def result() -> BacktestResult:
    timeline = np.arange(5, dtype="int64") * M
    return BacktestResult(
        stake=1000.0,
        fee_rate=0.0,
        timeline=timeline,
        equity=np.array([1000.0, 1010.0, 990.0, 1020.0, 996.0]),
        symbols={
            "AAAUSDT": SymbolRun(
                "AAAUSDT",
                5,
                0,
                4 * M,
                10.0,
                12.0,
                np.array([0.0, 5.0, -10.0, 10.0, -10.0]),
                np.full(5, np.nan),
            ),
            "BBBUSDT": SymbolRun(
                "BBBUSDT",
                4,
                M,
                4 * M,
                100.0,
                90.0,
                np.array([0.0, 6.0, 6.0, 6.0, 6.0]),
                np.full(5, np.nan),
            ),
        },
        trades=TRADES,
        interval_ms=M,
    )


def test_the_totals_are_freqtrades_figures_over_every_trade() -> None:
    total = build_report(result(), "1m").total
    stats = total.stats
    assert (stats.trades, stats.wins, stats.draws, stats.losses) == (4, 2, 1, 1)
    assert stats.win_rate == 0.5
    assert stats.average_profit_ratio == pytest.approx((0.10 + 0.12 - 0.10 + 0.0) / 4)
    assert stats.profit == pytest.approx(-4.0)
    assert stats.profit_ratio == pytest.approx(-4.0 / 1000.0)
    assert stats.average_duration_ms == (2 + 1 + 2 + 2) / 4 * M
    assert total.profit_factor == pytest.approx(16.0 / 20.0)
    # win rate x average win - loss rate x average loss; (1 + win/loss) x win rate - 1
    assert total.expectancy == pytest.approx(0.5 * 8.0 - 0.25 * 20.0)
    assert total.expectancy_ratio == pytest.approx((1 + 8.0 / 20.0) * 0.5 - 1)
    assert total.best is TRADES[1] and total.worst is TRADES[2]
    assert total.market_change == pytest.approx((0.2 - 0.1) / 2)
    assert total.candles == 9


def test_the_drawdown_is_the_largest_fall_in_quote_with_its_dates() -> None:
    drawdown = build_report(result(), "1m").total.drawdown
    # equity 1000, 1010, 990, 1020, 996: the fall from 1020 to 996 (24) beats 1010 to 990
    assert drawdown.amount == pytest.approx(24.0)
    assert drawdown.fraction == pytest.approx(24.0 / 1020.0)
    assert (drawdown.peak_time, drawdown.trough_time) == (3 * M, 4 * M)


def test_each_symbol_has_its_own_figures_over_the_shared_starting_balance() -> None:
    report = build_report(result(), "1m")
    first, second = report.per_symbol["AAAUSDT"], report.per_symbol["BBBUSDT"]
    assert (first.stats.trades, first.stats.wins, first.stats.losses) == (2, 1, 1)
    assert first.stats.profit_ratio == pytest.approx(-10.0 / 1000.0)
    assert first.profit_factor == pytest.approx(0.5)
    assert first.expectancy == pytest.approx(0.5 * 10.0 - 0.5 * 20.0)
    assert first.market_change == pytest.approx(0.2)
    assert first.drawdown.amount == pytest.approx(20.0)  # 1010 down to 990 after the peak
    assert (first.drawdown.peak_time, first.drawdown.trough_time) == (3 * M, 4 * M)
    assert (second.stats.wins, second.stats.draws, second.stats.losses) == (1, 1, 0)
    assert second.profit_factor is None and second.expectancy_ratio is None
    assert second.drawdown.amount == 0.0 and second.drawdown.peak_time is None
    assert second.market_change == pytest.approx(-0.1)


def test_exit_reasons_are_tabled_with_their_own_figures() -> None:
    reasons = build_report(result(), "1m").exit_reasons
    assert list(reasons) == ["end of data", "stop loss", "trailing stop"]
    trailing = reasons["trailing stop"]
    assert (trailing.trades, trailing.wins, trailing.profit) == (2, 2, 16.0)
    assert trailing.average_profit_ratio == pytest.approx(0.11)
    assert reasons["end of data"].draws == 1


def test_json_carries_the_same_with_candles_and_iso_times() -> None:
    document = build_report(result(), "1m").to_json()
    assert document["candles"] == 9 and document["symbols"] == ["AAAUSDT", "BBBUSDT"]
    assert document["per_symbol"]["AAAUSDT"]["candles"] == 5
    assert document["period"] == {"from": "1970-01-01T00:00:00Z", "to": "1970-01-01T00:04:00Z"}
    assert document["trades"][0]["entry_time"] == "1970-01-01T00:00:00Z"
    drawdown = document["total"]["max_drawdown"]
    assert drawdown["peak_at"] == "1970-01-01T00:03:00Z" and drawdown["amount"] == 24.0
    assert document["total"]["market_change_percent"] == pytest.approx(5.0)
    assert document["total"]["strategy_change_percent"] == pytest.approx(-0.4)
    assert document["exit_reasons"]["stop loss"]["losses"] == 1


def test_iso_times_keep_milliseconds_only_when_there_are_some() -> None:
    assert iso(1_735_689_600_000) == "2025-01-01T00:00:00Z"
    assert iso(1_735_689_600_250) == "2025-01-01T00:00:00.250Z"


def test_the_export_writes_one_row_per_trade(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    write_trades_csv(TRADES, path)
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert len(rows) == 4
    assert rows[2] == {
        "symbol": "AAAUSDT", "entry_time": "1970-01-01T00:02:00Z", "entry_price": "10",
        "exit_time": "1970-01-01T00:04:00Z", "exit_price": "10", "quantity": "20",
        "stake": "200", "profit": "-20", "profit_percent": "-10", "duration": "0:02:00",
        "reason": "stop loss",
    }  # fmt: skip


def test_the_printed_report_starts_with_the_period_as_dates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    print_report(build_report(result(), "1m"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "backtest"
    assert lines[1].split(None, 1) == ["period", "1970-01-01 00:00 UTC to 1970-01-01 00:04 UTC"]
    text = "\n".join(lines)
    assert "candles AAAUSDT" in text and "TOTAL" in text and "exit reasons" in text
