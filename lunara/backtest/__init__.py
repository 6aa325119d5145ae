"""Backtests: the live analyzer, entry rule and trailing stops replayed over candles.

``engine`` runs them (one or several symbols over one budget), ``report`` computes and
prints the figures freqtrade's backtesting shows, ``plot`` draws them (matplotlib, loaded
only there). None of these import pandas: the candles come in as numpy arrays.
"""

from lunara.backtest.engine import (
    DEFAULT_STOPS,
    BacktestResult,
    CandleArrays,
    ExitReason,
    SymbolRun,
    Trade,
    candle_stop,
    max_drawdown,
    run_backtest,
    run_portfolio,
    sharpe_ratio,
)

__all__ = [
    "DEFAULT_STOPS",
    "BacktestResult",
    "CandleArrays",
    "ExitReason",
    "SymbolRun",
    "Trade",
    "candle_stop",
    "max_drawdown",
    "run_backtest",
    "run_portfolio",
    "sharpe_ratio",
]
