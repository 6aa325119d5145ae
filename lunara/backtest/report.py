"""The figures of a backtest, as freqtrade's backtesting summary shows them, per symbol and
in total; printed for people, as JSON for scripts, and the trades as CSV.

Definitions (freqtrade's, ``freqtrade/data/metrics.py``, unless said otherwise):

- a trade's profit ratio is its profit over what the position cost (entry fee included);
  the average profit is the mean of those ratios; the total profit % is the profit in
  quote over the starting balance (``stake``), for a symbol as for the total;
- a win has a profit above 0, a draw exactly 0, a loss below 0; the win rate is wins over
  trades;
- the profit factor is the sum of the wins over the sum of the losses (none without a
  loss); the expectancy is win rate x average win - loss rate x average loss (quote), its
  ratio (1 + average win / average loss) x win rate - 1 (none without a loss);
- the best and worst trades are those of the highest and lowest profit ratio;
- the market change is the last close over the first close, less 1 (in total, the mean
  over the symbols);
- the maximum drawdown is the largest fall in quote, from a running peak, of the balance
  marked to market at every candle (cash plus open positions at their close, less the
  exit fee; for a symbol, the starting balance plus that symbol's profit so far), with
  the dates of the peak and of the trough. freqtrade reads it from closed trades only,
  which hides the fall of a position that is still open; this one is the curve the plot
  draws. Its % is the fall over the balance at the peak.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from lunara.backtest.engine import BacktestResult, Trade

TOTAL = "TOTAL"


@dataclass(frozen=True)
class Drawdown:
    amount: float
    """The fall in quote currency."""
    fraction: float
    """The fall over the balance at the peak."""
    peak_time: int | None
    trough_time: int | None


@dataclass(frozen=True)
class TradeStats:
    trades: int
    wins: int
    draws: int
    losses: int
    average_profit_ratio: float | None
    profit: float
    profit_ratio: float
    """Profit over the starting balance."""
    average_duration_ms: float | None

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None


@dataclass(frozen=True)
class Summary:
    name: str
    candles: int
    stats: TradeStats
    best: Trade | None
    worst: Trade | None
    profit_factor: float | None
    expectancy: float
    expectancy_ratio: float | None
    drawdown: Drawdown
    market_change: float


@dataclass(frozen=True)
class GapNote:
    after: int
    before: int
    missing: int


@dataclass(frozen=True)
class DataNote:
    """What was read for a symbol, before the backtest (see ``lunara.data``)."""

    rows: int
    duplicates: int
    interval: str | None
    gaps: int
    largest_gap: GapNote | None
    sources: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    result: BacktestResult
    timeframe: str
    total: Summary
    per_symbol: dict[str, Summary]
    exit_reasons: dict[str, TradeStats]
    data: Mapping[str, DataNote]

    @property
    def first_time(self) -> int | None:
        return int(self.result.timeline[0]) if len(self.result.timeline) else None

    @property
    def last_time(self) -> int | None:
        return int(self.result.timeline[-1]) if len(self.result.timeline) else None

    def to_json(self) -> dict[str, Any]:
        result = self.result
        document: dict[str, Any] = {
            "symbol": result.symbol,
            "symbols": list(result.symbols),
            "timeframe": self.timeframe,
            "period": {"from": iso(self.first_time), "to": iso(self.last_time)},
            "stake": result.stake,
            "final_balance": result.final_balance,
            "candles": result.candles,
            "trades": [trade_json(trade) for trade in result.trades],
            "win_rate": result.win_rate,
            "profit": result.profit,
            "profit_percent": result.profit_percent,
            "max_drawdown": result.max_drawdown,
            "sharpe": result.sharpe,
            "total": summary_json(self.total),
            "per_symbol": {},
            "exit_reasons": {name: stats_json(stats) for name, stats in self.exit_reasons.items()},
        }
        for symbol, summary in self.per_symbol.items():
            entry = summary_json(summary)
            note = self.data.get(symbol)
            if note is not None:
                entry["data"] = data_json(note)
            document["per_symbol"][symbol] = entry
        return document


def drawdown_of(balance: np.ndarray, times: np.ndarray) -> Drawdown:
    """The largest fall in quote from a running peak of ``balance``, with its dates."""
    if len(balance) == 0:
        return Drawdown(0.0, 0.0, None, None)
    peaks = np.maximum.accumulate(balance)
    falls = peaks - balance
    trough = int(np.argmax(falls))
    if not falls[trough] > 0:
        return Drawdown(0.0, 0.0, None, None)
    peak = int(np.argmax(balance[: trough + 1]))
    fraction = float(falls[trough] / peaks[trough]) if peaks[trough] > 0 else 0.0
    return Drawdown(float(falls[trough]), fraction, int(times[peak]), int(times[trough]))


def trade_stats(trades: Sequence[Trade], stake: float) -> TradeStats:
    wins = sum(1 for trade in trades if trade.profit > 0)
    losses = sum(1 for trade in trades if trade.profit < 0)
    profit = sum(trade.profit for trade in trades)
    count = len(trades)
    return TradeStats(
        trades=count,
        wins=wins,
        draws=count - wins - losses,
        losses=losses,
        average_profit_ratio=(sum(t.profit_ratio for t in trades) / count) if count else None,
        profit=profit,
        profit_ratio=profit / stake if stake else 0.0,
        average_duration_ms=(sum(t.duration_ms for t in trades) / count) if count else None,
    )


def summarize(
    name: str,
    trades: Sequence[Trade],
    *,
    stake: float,
    candles: int,
    balance: np.ndarray,
    times: np.ndarray,
    market_change: float,
) -> Summary:
    stats = trade_stats(trades, stake)
    won = [trade.profit for trade in trades if trade.profit > 0]
    lost = [-trade.profit for trade in trades if trade.profit < 0]
    average_win = sum(won) / len(won) if won else 0.0
    average_loss = sum(lost) / len(lost) if lost else 0.0
    count = len(trades)
    expectancy = (
        (len(won) / count) * average_win - (len(lost) / count) * average_loss if count else 0.0
    )
    expectancy_ratio = (
        (1.0 + average_win / average_loss) * (len(won) / count) - 1.0 if average_loss else None
    )
    ranked = sorted(trades, key=lambda trade: trade.profit_ratio)
    return Summary(
        name=name,
        candles=candles,
        stats=stats,
        best=ranked[-1] if ranked else None,
        worst=ranked[0] if ranked else None,
        profit_factor=sum(won) / sum(lost) if lost else None,
        expectancy=expectancy,
        expectancy_ratio=expectancy_ratio,
        drawdown=drawdown_of(balance, times),
        market_change=market_change,
    )


def build_report(
    result: BacktestResult, timeframe: str, data: Mapping[str, DataNote] | None = None
) -> Report:
    per_symbol = {
        symbol: summarize(
            symbol,
            [trade for trade in result.trades if trade.symbol == symbol],
            stake=result.stake,
            candles=run.candles,
            balance=result.stake + run.profit,
            times=result.timeline,
            market_change=run.market_change,
        )
        for symbol, run in result.symbols.items()
    }
    changes = [run.market_change for run in result.symbols.values()]
    total = summarize(
        TOTAL,
        result.trades,
        stake=result.stake,
        candles=result.candles,
        balance=result.equity,
        times=result.timeline,
        market_change=sum(changes) / len(changes) if changes else 0.0,
    )
    reasons: dict[str, list[Trade]] = {}
    for trade in result.trades:
        reasons.setdefault(trade.reason, []).append(trade)
    exit_reasons = {
        reason: trade_stats(trades, result.stake) for reason, trades in sorted(reasons.items())
    }
    return Report(result, timeframe, total, per_symbol, exit_reasons, data or {})


# ---- JSON -----------------------------------------------------------------------------


def iso(milliseconds: int | None) -> str | None:
    """An open time as ISO 8601 UTC: 2024-01-31T23:59:00Z."""
    if milliseconds is None:
        return None
    moment = datetime.fromtimestamp(milliseconds / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{milliseconds % 1000:03d}Z" if milliseconds % 1000 else "Z"
    )


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else ratio * 100.0


def trade_json(trade: Trade) -> dict[str, Any]:
    return {
        "symbol": trade.symbol,
        "entry_time": iso(trade.entry_time),
        "entry_price": trade.entry_price,
        "exit_time": iso(trade.exit_time),
        "exit_price": trade.exit_price,
        "quantity": trade.quantity,
        "stake": trade.stake,
        "profit": trade.profit,
        "profit_ratio": trade.profit_ratio,
        "profit_percent": trade.profit_ratio * 100.0,
        "duration_s": trade.duration_ms / 1000,
        "reason": trade.reason,
    }


def stats_json(stats: TradeStats) -> dict[str, Any]:
    return {
        "trades": stats.trades,
        "wins": stats.wins,
        "draws": stats.draws,
        "losses": stats.losses,
        "win_rate": stats.win_rate,
        "avg_profit_percent": _percent(stats.average_profit_ratio),
        "profit": stats.profit,
        "profit_percent": stats.profit_ratio * 100.0,
        "avg_duration_s": (
            None if stats.average_duration_ms is None else stats.average_duration_ms / 1000
        ),
    }


def _best_json(trade: Trade | None) -> dict[str, Any] | None:
    if trade is None:
        return None
    return {
        "symbol": trade.symbol,
        "entry_time": iso(trade.entry_time),
        "profit": trade.profit,
        "profit_percent": trade.profit_ratio * 100.0,
    }


def summary_json(summary: Summary) -> dict[str, Any]:
    return {
        "candles": summary.candles,
        **stats_json(summary.stats),
        "best_trade": _best_json(summary.best),
        "worst_trade": _best_json(summary.worst),
        "profit_factor": summary.profit_factor,
        "expectancy": summary.expectancy,
        "expectancy_ratio": summary.expectancy_ratio,
        "max_drawdown": {
            "amount": summary.drawdown.amount,
            "percent": summary.drawdown.fraction * 100.0,
            "peak_at": iso(summary.drawdown.peak_time),
            "trough_at": iso(summary.drawdown.trough_time),
        },
        "market_change_percent": summary.market_change * 100.0,
        "strategy_change_percent": summary.stats.profit_ratio * 100.0,
    }


def data_json(note: DataNote) -> dict[str, Any]:
    gap = note.largest_gap
    return {
        "rows_read": note.rows,
        "duplicates": note.duplicates,
        "interval": note.interval,
        "gaps": note.gaps,
        "largest_gap": None
        if gap is None
        else {"after": iso(gap.after), "before": iso(gap.before), "missing_candles": gap.missing},
        "sources": list(note.sources),
        "skipped": list(note.skipped),
    }


# ---- CSV ------------------------------------------------------------------------------

CSV_COLUMNS = (
    "symbol", "entry_time", "entry_price", "exit_time", "exit_price", "quantity", "stake",
    "profit", "profit_percent", "duration", "reason",
)  # fmt: skip


def write_trades_csv(trades: Sequence[Trade], path: Path) -> None:
    """One row per trade; times in ISO 8601 UTC, numbers at their own precision."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for trade in trades:
            writer.writerow(
                [
                    trade.symbol,
                    iso(trade.entry_time),
                    number(trade.entry_price),
                    iso(trade.exit_time),
                    number(trade.exit_price),
                    number(trade.quantity),
                    number(trade.stake),
                    number(trade.profit),
                    number(trade.profit_ratio * 100.0),
                    duration(trade.duration_ms),
                    trade.reason,
                ]
            )


# ---- for people -----------------------------------------------------------------------


def number(value: float) -> str:
    """A price or an amount at its own precision (0.55115, 62422.18177), no binary tail."""
    return f"{value:.10g}"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100.0:.4g}%"


def when(milliseconds: int | None) -> str:
    if milliseconds is None:
        return "-"
    return datetime.fromtimestamp(milliseconds / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(milliseconds: float | None) -> str:
    """As freqtrade prints it: 1 day, 2:03:00."""
    if milliseconds is None:
        return "-"
    return str(timedelta(seconds=round(milliseconds / 1000)))


def _stats_row(name: str, stats: TradeStats) -> list[str]:
    return [
        name,
        str(stats.trades),
        percent(stats.average_profit_ratio),
        number(stats.profit),
        percent(stats.profit_ratio),
        duration(stats.average_duration_ms),
        f"{stats.wins} {stats.draws} {stats.losses}",
        percent(stats.win_rate),
    ]


STATS_COLUMNS = (
    "avg profit", "total profit", "total profit %", "avg duration", "win draw loss", "win rate",
)  # fmt: skip


def _best(trade: Trade | None, many: bool) -> str:
    if trade is None:
        return "-"
    where = f"{trade.symbol} " if many else ""
    return f"{where}{percent(trade.profit_ratio)} ({number(trade.profit)}) {when(trade.entry_time)}"


def sections(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report as titled tables: (title, header, rows)."""
    result = report.result
    many = len(result.symbols) > 1
    overview = [
        ["period", f"{when(report.first_time)} to {when(report.last_time)}"],
        ["timeframe", report.timeframe],
        ["starting balance", number(result.stake)],
        ["final balance", number(result.final_balance)],
        ["profit", f"{number(result.profit)} ({percent(result.profit / result.stake)})"],
        ["market change", percent(report.total.market_change)],
    ]
    for symbol, summary in report.per_symbol.items():
        overview.append(
            [f"candles {symbol}", _candles_text(summary.candles, report.data.get(symbol))]
        )
    if many:
        overview.append(["candles in total", str(result.candles)])
    for symbol, note in report.data.items():
        for skipped in note.skipped:
            overview.append([f"skipped {symbol}", skipped])
    table = [_stats_row(symbol, summary.stats) for symbol, summary in report.per_symbol.items()]
    table.append(_stats_row(TOTAL, report.total.stats))
    reasons = [_stats_row(reason, stats) for reason, stats in report.exit_reasons.items()]
    summaries = [*report.per_symbol.values(), report.total] if many else [report.total]
    metrics: list[list[str]] = [
        ["best trade", *(_best(s.best, many and s.name == TOTAL) for s in summaries)],
        ["worst trade", *(_best(s.worst, many and s.name == TOTAL) for s in summaries)],
        ["profit factor", *("-" if s.profit_factor is None else number(s.profit_factor) for s in summaries)],
        ["expectancy (ratio)", *(_expectancy(s) for s in summaries)],
        ["max drawdown", *(_drawdown(s.drawdown) for s in summaries)],
        ["drawdown from", *(when(s.drawdown.peak_time) for s in summaries)],
        ["drawdown to", *(when(s.drawdown.trough_time) for s in summaries)],
        ["market change", *(percent(s.market_change) for s in summaries)],
        ["strategy change", *(percent(s.stats.profit_ratio) for s in summaries)],
    ]  # fmt: skip
    return [
        ("backtest", ["", ""], overview),
        ("per symbol", ["symbol", "trades", *STATS_COLUMNS], table),
        ("exit reasons", ["exit reason", "exits", *STATS_COLUMNS], reasons),
        ("summary", ["metric", *(s.name for s in summaries)], metrics),
    ]


def _candles_text(candles: int, note: DataNote | None) -> str:
    if note is None:
        return str(candles)
    parts = [f"{candles} candles"]
    if note.rows != candles:
        parts.append(f"from {note.rows} read")
    if note.interval is not None:
        parts.append(f"of {note.interval}")
    text = " ".join(parts)
    text += f"; {note.duplicates} duplicates dropped; {note.gaps} gaps"
    if note.largest_gap is not None:
        gap = note.largest_gap
        text += (
            f", the largest {gap.missing} candles missing after {when(gap.after)} "
            f"(next {when(gap.before)})"
        )
    return text


def _expectancy(summary: Summary) -> str:
    ratio = summary.expectancy_ratio
    return f"{number(summary.expectancy)} ({'-' if ratio is None else f'{ratio:.4g}'})"


def _drawdown(drawdown: Drawdown) -> str:
    return f"{number(drawdown.amount)} ({percent(drawdown.fraction)})"


def print_report(report: Report, stream: TextIO | None = None) -> None:
    """Rich tables on a terminal; titled, aligned plain text otherwise (see
    ``blueprint.render.wants_plain``)."""
    from blueprint.render import wants_plain

    stream = stream if stream is not None else sys.stdout
    if wants_plain(stream):
        for title, header, rows in sections(report):
            stream.write(f"{title}\n")
            shown = rows if title == "backtest" else [header, *rows]
            widths = (
                [max(len(row[i]) for row in shown) for i in range(len(shown[0]))] if shown else []
            )
            for row in shown:
                cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
                stream.write(("  " + "  ".join(cells)).rstrip() + "\n")
            stream.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream)
    for title, header, rows in sections(report):
        table = Table(title=title, title_justify="left", show_header=title != "backtest")
        for index, column in enumerate(header):
            left = index == 0 or title == "backtest"
            table.add_column(column, justify="left" if left else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
