"""The picture of a backtest: one panel per symbol (its close, the entries, the exits and
the stop while a position is open), then the equity curve and its drawdown under them.
matplotlib (Agg backend, no display) is imported here only.

A year of 1-minute candles is more points than an image has pixels: a series longer than
``MAX_POINTS`` is drawn from buckets of consecutive candles (the last close, the highest
stop, the last equity, the deepest drawdown of each), so a spike or a stop is not lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lunara.backtest.engine import BacktestResult, CandleArrays

MAX_POINTS = 4000


def _buckets(length: int) -> np.ndarray:
    step = max(1, -(-length // MAX_POINTS))
    return np.arange(0, length, step)


def _last(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    ends = np.append(starts[1:], len(values)) - 1
    last: np.ndarray = values[ends]
    return last


def _highest(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.fmax.reduceat(values, starts) if len(values) else values


def plot_backtest(result: BacktestResult, series: Mapping[str, CandleArrays], path: Path) -> None:
    """Write the picture of ``result``, run over ``series``, to ``path`` (its suffix picks
    the format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    symbols = list(result.symbols)
    panels = len(symbols) + 2
    heights = [3] * len(symbols) + [2, 1]
    figure, axes = plt.subplots(
        panels, 1, figsize=(11, 2.6 * panels), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    starts = _buckets(len(result.timeline))
    times = _last(result.timeline, starts).astype("datetime64[ms]")
    for axis, symbol in zip(axes, symbols, strict=False):
        candles = series[symbol]
        own = _buckets(len(candles))
        stop = result.symbols[symbol].stop[np.searchsorted(result.timeline, candles.open_time)]
        own_times = _last(candles.open_time, own).astype("datetime64[ms]")
        axis.plot(own_times, _last(candles.close, own), color="tab:gray", lw=0.8, label="close")
        axis.plot(own_times, _highest(stop, own), color="tab:orange", lw=0.8, label="stop")
        trades = [trade for trade in result.trades if trade.symbol == symbol]
        if trades:
            axis.scatter(
                np.array([t.entry_time for t in trades]).astype("datetime64[ms]"),
                [t.entry_price for t in trades],
                marker="^", color="tab:green", s=24, label="entry", zorder=3,
            )  # fmt: skip
            axis.scatter(
                np.array([t.exit_time for t in trades]).astype("datetime64[ms]"),
                [t.exit_price for t in trades],
                marker="v", s=24, zorder=3, label="exit",
                color=["tab:green" if t.profit > 0 else "tab:red" for t in trades],
            )  # fmt: skip
        run = result.symbols[symbol]
        axis.set_title(
            f"{symbol}: {len(trades)} trades, market {run.market_change * 100:+.2f}%", loc="left"
        )
        axis.set_ylabel("price")
        axis.legend(loc="upper left", fontsize="small")
    equity_axis, drawdown_axis = axes[-2], axes[-1]
    equity_axis.plot(times, _last(result.equity, starts), color="tab:blue")
    equity_axis.set_ylabel("equity")
    equity_axis.set_title(
        f"equity: {result.profit_percent:+.2f}% over a stake of {result.stake:.10g}", loc="left"
    )
    peaks = np.maximum.accumulate(result.equity) if len(result.equity) else result.equity
    with np.errstate(divide="ignore", invalid="ignore"):
        underwater = np.where(peaks > 0, (result.equity - peaks) / peaks * 100.0, 0.0)
    deepest = -_highest(-underwater, starts) if len(underwater) else underwater
    drawdown_axis.fill_between(times, deepest, 0, color="tab:red", alpha=0.4)
    drawdown_axis.set_ylabel("drawdown %")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
