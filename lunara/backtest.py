"""Backtests: the live analyzer, entry rule and trailing-stop logic replayed over candles.

One position at a time, `stake` in quote currency, `fee_rate` paid on both sides (and
in the fee-inclusive profit the trailing offset is compared with, as live). Each candle
is first fed to the streaming analyzer (the same code as the live path). Without a
position, an entry signal at the candle's close buys at that close.

With a position open, stops are priced the way freqtrade's backtesting prices them
(``ft_stoploss_reached`` with the candle's low and high, ``_get_close_rate_for_stoploss``):

1. The stop as it stood at the candle's open is checked first: a candle opening at or
   below it exits at the open (a gap), a low reaching it exits at that stop. The stop
   is not trailed in such a candle.
2. Otherwise the stop is trailed with the candle's high (the same ``trailing.advance``
   as live), and a low reaching the raised stop exits at the raised stop: the high is
   taken to come first, as freqtrade does.
3. The first candle after the entry is the one the trade opened in (an entry at a
   close is the next candle's open). There the order of high and low is least known, so
   an exit at a stop raised inside it takes freqtrade's worst case: the price moved
   just enough to raise the stop and fell back at once (open x (1 + offset - positive)
   with ``trailing_only_offset_is_reached``, else open x (1 - the distance in effect)),
   but never below the candle's low.

The exit reason is "trailing stop" when the stop had moved above where it was placed,
otherwise "stop loss", as live.

Metrics: win rate over closed trades; profit (absolute and % of the stake); maximum
drawdown of the equity curve marked to market at every close; Sharpe ratio of the
per-candle equity returns, annualised with the candle interval (sqrt(candles per year)),
risk-free rate 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from lunara.analysis import AnalyzerParams, StreamingAnalyzer, entry_signal
from lunara.analysis.analyzer import CandleLike
from lunara.trading.trailing import (
    StopState,
    TrailingParams,
    advance,
    initial_state,
    profit_ratio,
)

SECONDS_PER_YEAR = 365 * 24 * 3600

DEFAULT_STOPS = TrailingParams(
    stoploss=-0.05,
    trailing_stop=True,
    trailing_stop_positive=0.02,
    trailing_stop_positive_offset=0.03,
    trailing_only_offset_is_reached=True,
)


@dataclass(frozen=True)
class Trade:
    entry_time: int
    entry_price: float
    exit_time: int
    exit_price: float
    quantity: float
    profit: float  # quote currency, after fees
    reason: str  # "trailing stop", "stop loss" or "end of data"

    @property
    def profit_ratio(self) -> float:
        return self.profit / (self.entry_price * self.quantity)


@dataclass(frozen=True)
class BacktestResult:
    symbol: str
    candles: int
    trades: tuple[Trade, ...]
    equity: tuple[float, ...]
    stake: float
    win_rate: float | None
    profit: float
    profit_percent: float
    max_drawdown: float  # fraction of the peak equity
    sharpe: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "candles": self.candles,
            "trades": [
                trade.__dict__ | {"profit_ratio": trade.profit_ratio} for trade in self.trades
            ],
            "win_rate": self.win_rate,
            "profit": self.profit,
            "profit_percent": self.profit_percent,
            "max_drawdown": self.max_drawdown,
            "sharpe": self.sharpe,
        }


def max_drawdown(equity: Sequence[float]) -> float:
    """The largest fall from a running peak, as a fraction of that peak."""
    peak = -math.inf
    worst = 0.0
    for value in equity:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


def sharpe_ratio(equity: Sequence[float], interval_s: float) -> float | None:
    returns = [b / a - 1.0 for a, b in pairwise(equity) if a > 0]
    if len(returns) < 2:
        return None
    mean = sum(returns) / len(returns)
    variance = sum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if variance <= 0:
        return None
    return mean / math.sqrt(variance) * math.sqrt(SECONDS_PER_YEAR / interval_s)


def candle_stop(
    state: StopState,
    opened: float,
    high: float,
    low: float,
    stops: TrailingParams,
    fee_rate: float,
    *,
    first: bool,
    now: float = 0.0,
) -> tuple[StopState, float | None]:
    """One candle against an open position's stop: the stop after it, and the exit price
    when the stop was reached (None when the position stays open).

    ``first`` marks the candle the trade opened in (see the module docstring).
    """
    standing = state.stop_price
    if opened <= standing:
        return state, opened
    if low <= standing:
        return state, standing
    trailed = advance(state, high, stops, now, fee_rate)
    if low > trailed.stop_price:
        return trailed, None
    if not first:
        return trailed, trailed.stop_price
    positive = stops.trailing_stop_positive
    offset = stops.trailing_stop_positive_offset
    if stops.trailing_only_offset_is_reached and positive is not None:
        worst = opened * (1.0 + offset - positive)
    elif positive is not None and profit_ratio(state.entry_price, high, fee_rate) > offset:
        worst = opened * (1.0 - positive)
    else:
        worst = opened * (1.0 + stops.stoploss)
    return trailed, max(low, worst)


def run_backtest(
    symbol: str,
    candles: Sequence[CandleLike],
    *,
    stake: float = 100.0,
    fee_rate: float = 0.001,
    params: AnalyzerParams | None = None,
    stops: TrailingParams = DEFAULT_STOPS,
    progress: Callable[[int], None] | None = None,
) -> BacktestResult:
    analyzer = StreamingAnalyzer(symbol, params)
    cash = stake
    quantity = 0.0
    entry_time = 0
    entry_price = 0.0
    state: StopState | None = None
    trades: list[Trade] = []
    equity: list[float] = []

    def close(at: int, price: float, reason: str) -> None:
        nonlocal cash, quantity, state
        proceeds = quantity * price * (1 - fee_rate)
        cost = quantity * entry_price * (1 + fee_rate)
        trades.append(Trade(entry_time, entry_price, at, price, quantity, proceeds - cost, reason))
        cash += proceeds
        quantity = 0.0
        state = None

    entry_index = -1
    for index, candle in enumerate(candles):
        high, low, close_price = float(candle.high), float(candle.low), float(candle.close)
        opened = float(getattr(candle, "open", close_price))
        if state is not None:
            first = index == entry_index + 1
            state, exit_price = candle_stop(
                state, opened, high, low, stops, fee_rate, first=first, now=float(candle.open_time)
            )
            if exit_price is not None:
                reason = "trailing stop" if state.activated else "stop loss"
                close(int(candle.open_time), exit_price, reason)
        analysis = analyzer.update(candle)
        if state is None and analysis is not None and entry_signal(analysis) and cash > 0:
            entry_price, entry_time, entry_index = close_price, int(candle.open_time), index
            quantity = cash / (entry_price * (1 + fee_rate))
            cash = 0.0
            state = initial_state(entry_price, stops, float(candle.open_time))
        equity.append(cash + quantity * close_price * (1 - fee_rate))
        if progress is not None:
            progress(index + 1)
    if state is not None and candles:
        last = candles[-1]
        close(int(last.open_time), float(last.close), "end of data")
        equity[-1] = cash
    interval_s = (
        (float(candles[1].open_time) - float(candles[0].open_time)) / 1000.0
        if len(candles) > 1
        else 60.0
    )
    wins = sum(1 for trade in trades if trade.profit > 0)
    profit = (equity[-1] if equity else stake) - stake
    return BacktestResult(
        symbol=symbol,
        candles=len(candles),
        trades=tuple(trades),
        equity=tuple(equity),
        stake=stake,
        win_rate=wins / len(trades) if trades else None,
        profit=profit,
        profit_percent=profit / stake * 100.0,
        max_drawdown=max_drawdown(equity),
        sharpe=sharpe_ratio(equity, max(interval_s, 1.0)),
    )


def plot_equity(result: BacktestResult, candles: Sequence[CandleLike], path: str) -> None:
    """Write the equity curve with the trades marked (matplotlib imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [float(c.open_time) / 1000.0 for c in candles]
    figure, axis = plt.subplots(figsize=(10, 4))
    axis.plot(times, result.equity, label="equity", color="tab:blue")
    index_of = {int(c.open_time): i for i, c in enumerate(candles)}
    for trade in result.trades:
        entry = index_of.get(trade.entry_time)
        exit_ = index_of.get(trade.exit_time)
        if entry is not None:
            axis.scatter(times[entry], result.equity[entry], marker="^", color="tab:green")
        if exit_ is not None:
            colour = "tab:green" if trade.profit > 0 else "tab:red"
            axis.scatter(times[exit_], result.equity[exit_], marker="v", color=colour)
    axis.set_title(
        f"{result.symbol}: {len(result.trades)} trades, profit {result.profit_percent:+.2f}%"
    )
    axis.set_xlabel("time (epoch s)")
    axis.set_ylabel("equity")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
