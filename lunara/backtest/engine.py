"""The backtest engine: the live analyzer, entry rule and trailing stops replayed over the
candles of one or several symbols that share one stake budget.

The live rules: one position per symbol, the same entry rule (``entry_signal`` on the
streaming analyzer, the same code as the live path) and the same trailing stops. The
budget (``stake``, in quote currency) is shared as freqtrade shares a wallet among
``max_open_trades`` with an unlimited stake amount: an entry takes the cash available
divided by the symbols without a position, so one symbol puts all the cash in, and three
put a third of it in the first entry, half of what is left in the second, all the rest in
the third. ``fee_rate`` is paid on both sides (and in the fee-inclusive profit the trailing
offset is compared with, as live).

Candles of every symbol are walked in time order. At each open time, every symbol's open
position is checked against that candle first (exits free cash), then each symbol's
candle is fed to its analyzer, and an entry signal at the candle's close buys at that
close, symbols taken in the order given. No entry is made on a symbol's last candle (it
could only lose the fees), and a position still open there is closed at its close
("end of data").

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

The engine keeps, for every open time of the run, the equity (cash plus the positions
marked at their last close, less the exit fee), each symbol's profit so far marked the
same way, and each open position's stop, in numpy arrays; candles are read from their
arrays a chunk at a time, so a year of 1-minute candles for several symbols stays a few
tens of MiB. The figures of the report are ``report``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict, Unpack

import numpy as np

from lunara.analysis import AnalyzerParams, StreamingAnalyzer, entry_signal
from lunara.analysis.analyzer import CandleLike
from lunara.analysis.candles import Candle
from lunara.trading.trailing import (
    StopState,
    TrailingParams,
    advance,
    initial_state,
    profit_ratio,
)

SECONDS_PER_YEAR = 365 * 24 * 3600
CHUNK = 8192
"""Candles of each symbol turned into Python numbers at a time."""

DEFAULT_STOPS = TrailingParams(
    stoploss=-0.05,
    trailing_stop=True,
    trailing_stop_positive=0.02,
    trailing_stop_positive_offset=0.03,
    trailing_only_offset_is_reached=True,
)


class ExitReason(StrEnum):
    TRAILING_STOP = "trailing stop"
    STOP_LOSS = "stop loss"
    END_OF_DATA = "end of data"


@dataclass(frozen=True)
class CandleArrays:
    """One symbol's candles as columns: open times (epoch ms, ascending) and prices."""

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, candles: Sequence[CandleLike]) -> CandleArrays:
        close = np.array([float(c.close) for c in candles], dtype="float64")
        return cls(
            np.array([int(c.open_time) for c in candles], dtype="int64"),
            np.array([float(getattr(c, "open", c.close)) for c in candles], dtype="float64"),
            np.array([float(c.high) for c in candles], dtype="float64"),
            np.array([float(c.low) for c in candles], dtype="float64"),
            close,
            np.array([float(getattr(c, "volume", 0.0)) for c in candles], dtype="float64"),
        )

    @classmethod
    def of_frame(cls, frame: Any) -> CandleArrays:
        """From a frame with the columns open_time, open, high, low, close, volume."""
        return cls(*(frame[name].to_numpy() for name in _COLUMNS))

    def __len__(self) -> int:
        return len(self.open_time)


_COLUMNS = ("open_time", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Trade:
    symbol: str
    entry_time: int  # epoch ms
    entry_price: float
    exit_time: int
    exit_price: float
    quantity: float
    stake: float  # quote paid for the position, the entry fee included
    profit: float  # quote currency, after both fees
    reason: ExitReason

    @property
    def profit_ratio(self) -> float:
        """Profit over what the position cost, as freqtrade's profit_ratio."""
        return self.profit / self.stake if self.stake else 0.0

    @property
    def duration_ms(self) -> int:
        return self.exit_time - self.entry_time


@dataclass(frozen=True)
class SymbolRun:
    symbol: str
    candles: int
    first_time: int
    last_time: int
    first_close: float
    last_close: float
    profit: np.ndarray
    """This symbol's profit so far at every open time of the run, open position marked."""
    stop: np.ndarray
    """The open position's stop at every open time of the run (NaN without one)."""

    @property
    def market_change(self) -> float:
        """The market's own change over the period: last close over first close, less 1."""
        return self.last_close / self.first_close - 1.0 if self.first_close else 0.0


@dataclass(frozen=True)
class BacktestResult:
    stake: float
    fee_rate: float
    timeline: np.ndarray
    """Every open time of the run (epoch ms), ascending: the union of the symbols'."""
    equity: np.ndarray
    """Cash plus the open positions marked at their last close, at every open time."""
    symbols: dict[str, SymbolRun]
    trades: tuple[Trade, ...]
    interval_ms: int = field(default=60_000)

    @property
    def symbol(self) -> str | None:
        return next(iter(self.symbols)) if len(self.symbols) == 1 else None

    @property
    def candles(self) -> int:
        return sum(run.candles for run in self.symbols.values())

    @property
    def final_balance(self) -> float:
        return float(self.equity[-1]) if len(self.equity) else self.stake

    @property
    def profit(self) -> float:
        return self.final_balance - self.stake

    @property
    def profit_percent(self) -> float:
        return self.profit / self.stake * 100.0

    @property
    def win_rate(self) -> float | None:
        wins = sum(1 for trade in self.trades if trade.profit > 0)
        return wins / len(self.trades) if self.trades else None

    @property
    def max_drawdown(self) -> float:
        return max_drawdown(self.equity)

    @property
    def sharpe(self) -> float | None:
        return sharpe_ratio(self.equity, max(self.interval_ms / 1000.0, 1.0))


def max_drawdown(equity: Sequence[float] | np.ndarray) -> float:
    """The largest fall from a running peak, as a fraction of that peak."""
    values = np.asarray(equity, dtype="float64")
    if len(values) == 0:
        return 0.0
    peaks = np.maximum.accumulate(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        falls = np.where(peaks > 0, (peaks - values) / peaks, 0.0)
    return float(max(falls.max(), 0.0))


def sharpe_ratio(equity: Sequence[float] | np.ndarray, interval_s: float) -> float | None:
    """Mean over standard deviation of the per-candle equity returns, annualised with the
    candle interval (sqrt(candles per year)), risk-free rate 0."""
    values = np.asarray(equity, dtype="float64")
    if len(values) < 3:
        return None
    before, after = values[:-1], values[1:]
    usable = before > 0
    returns = after[usable] / before[usable] - 1.0
    if len(returns) < 2:
        return None
    deviation = float(returns.std(ddof=1))
    if not deviation > 0:
        return None
    return float(returns.mean()) / deviation * math.sqrt(SECONDS_PER_YEAR / interval_s)


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


@dataclass
class _Book:
    """One symbol during a run: its analyzer, its position and its own counters."""

    symbol: str
    analyzer: StreamingAnalyzer
    candles: CandleArrays
    quantity: float = 0.0
    entry_price: float = 0.0
    entry_time: int = 0
    entry_index: int = -1
    paid: float = 0.0
    state: StopState | None = None
    realised: float = 0.0
    last_close: float = 0.0
    cursor: int = 0
    """Index of this symbol's next candle."""


class RunOptions(TypedDict, total=False):
    """The options of `run_portfolio`, for what passes them on; its defaults apply."""

    stake: float
    fee_rate: float
    params: AnalyzerParams | None
    stops: TrailingParams
    progress: Callable[[int, int], None] | None


def run_backtest(
    symbol: str, candles: Sequence[CandleLike], **options: Unpack[RunOptions]
) -> BacktestResult:
    """One symbol's backtest over candle objects."""
    return run_portfolio({symbol: CandleArrays.of(candles)}, **options)


# One pass over every candle of every symbol: the loop is kept whole, since a function
# call per candle is what a split would add to the hottest path of a backtest.
def run_portfolio(  # noqa: C901
    series: Mapping[str, CandleArrays],
    *,
    stake: float = 100.0,
    fee_rate: float = 0.001,
    params: AnalyzerParams | None = None,
    stops: TrailingParams = DEFAULT_STOPS,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Several symbols over one budget (see the module docstring); ``progress`` is told how
    many open times of the run are done, and how many there are."""
    books = [
        _Book(symbol, StreamingAnalyzer(symbol, params), candles)
        for symbol, candles in series.items()
        if len(candles)
    ]
    timeline = (
        np.unique(np.concatenate([book.candles.open_time for book in books]))
        if books
        else np.empty(0, dtype="int64")
    )
    steps = len(timeline)
    equity = np.empty(steps, dtype="float64")
    profit_curves = {book.symbol: np.zeros(steps, dtype="float64") for book in books}
    stop_lines = {book.symbol: np.full(steps, np.nan) for book in books}
    trades: list[Trade] = []
    cash = stake
    keep = 1.0 - fee_rate

    def close(book: _Book, at: int, price: float, reason: ExitReason) -> None:
        nonlocal cash
        proceeds = book.quantity * price * keep
        trade_profit = proceeds - book.paid
        trades.append(
            Trade(book.symbol, book.entry_time, book.entry_price, at, price, book.quantity,
                  book.paid, trade_profit, reason)
        )  # fmt: skip
        cash += proceeds
        book.realised += trade_profit
        book.quantity = 0.0
        book.paid = 0.0
        book.state = None

    for start in range(0, steps, CHUNK):
        stop_at = min(start + CHUNK, steps)
        last_time = int(timeline[stop_at - 1])
        rows: list[list[tuple[int, float, float, float, float, float]]] = []
        offsets: list[int] = []
        for book in books:
            arrays = book.candles
            end = int(np.searchsorted(arrays.open_time, last_time, side="right"))
            window = slice(book.cursor, end)
            rows.append(
                list(zip(arrays.open_time[window].tolist(), arrays.open[window].tolist(),
                         arrays.high[window].tolist(), arrays.low[window].tolist(),
                         arrays.close[window].tolist(), arrays.volume[window].tolist(),
                         strict=True))
            )  # fmt: skip
            offsets.append(book.cursor)
        positions = [0] * len(books)
        for step in range(start, stop_at):
            now = int(timeline[step])
            present: list[tuple[_Book, tuple[int, float, float, float, float, float], int]] = []
            for number, book in enumerate(books):
                chunk = rows[number]
                at = positions[number]
                if at < len(chunk) and chunk[at][0] == now:
                    present.append((book, chunk[at], offsets[number] + at))
                    positions[number] = at + 1
            for book, (opened_at, opened, high, low, _, _), index in present:
                if book.state is None:
                    continue
                book.state, exit_price = candle_stop(
                    book.state, opened, high, low, stops, fee_rate,
                    first=index == book.entry_index + 1, now=float(opened_at),
                )  # fmt: skip
                if exit_price is not None:
                    activated = book.state.activated
                    reason = ExitReason.TRAILING_STOP if activated else ExitReason.STOP_LOSS
                    close(book, opened_at, exit_price, reason)
            for book, (opened_at, opened, high, low, close_price, volume), index in present:
                book.last_close = close_price
                book.cursor = index + 1
                analysis = book.analyzer.update(
                    Candle(opened_at, opened, high, low, close_price, volume)
                )
                last = index == len(book.candles) - 1
                if book.state is not None and last:
                    close(book, opened_at, close_price, ExitReason.END_OF_DATA)
                    continue
                if book.state is not None or analysis is None or last:
                    continue
                if not entry_signal(analysis):
                    continue
                free = sum(1 for other in books if other.state is None)
                amount = cash / free if free else 0.0
                if amount <= 0:
                    continue
                cash -= amount
                book.paid = amount
                book.quantity = amount / (close_price * (1.0 + fee_rate))
                book.entry_price, book.entry_time, book.entry_index = close_price, opened_at, index
                book.state = initial_state(close_price, stops, float(opened_at))
            held = cash
            for book in books:
                value = book.quantity * book.last_close * keep
                held += value
                profit_curves[book.symbol][step] = book.realised + value - book.paid
                if book.state is not None:
                    stop_lines[book.symbol][step] = book.state.stop_price
            equity[step] = held
        if progress is not None:
            progress(stop_at, steps)
    runs = {
        book.symbol: SymbolRun(
            book.symbol,
            len(book.candles),
            int(book.candles.open_time[0]),
            int(book.candles.open_time[-1]),
            float(book.candles.close[0]),
            float(book.candles.close[-1]),
            profit_curves[book.symbol],
            stop_lines[book.symbol],
        )
        for book in books
    }
    steps_ms = np.diff(timeline)
    interval = int(np.median(steps_ms)) if len(steps_ms) else 60_000
    return BacktestResult(stake, fee_rate, timeline, equity, runs, tuple(trades), interval)
