"""The CLI's commands over candle data: ``data download`` and ``backtest``.

They are the only commands that load pandas (through ``lunara.data``), and only inside
their bodies: registering them on the app imports nothing heavy, and the supervised bot
never imports this module.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from blueprint.commands import JsonOption, app, guarded
from blueprint.errors import BlueprintError, ExitCode
from blueprint.manifest import Permission
from blueprint.session import Session
from blueprint.units import MIB
from lunara.command_settings import settings_of

T = TypeVar("T")

if TYPE_CHECKING:
    from lunara.backtest import BacktestResult, CandleArrays
    from lunara.backtest.report import DataNote
    from lunara.data.download import Progress, SymbolSummary
    from lunara.data.load import SymbolData

data_app = typer.Typer(help="Candle data for backtests.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DEFAULT_SIM_DAYS = 7
PLOT_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "webp", "tif", "tiff", "eps", "ps", "gif")
"""What matplotlib writes without extra packages, named by the file's suffix."""
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _day_bound(option: str, text: str, *, end: bool) -> int:
    """--from/--to as epoch ms: a day (YYYY-MM-DD) or a month (YYYY-MM), the last day or
    month included in --to."""
    try:
        if match := _DAY.match(text.strip()):
            day = date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
            if end:
                day = date.fromordinal(day.toordinal() + 1)
        elif match := _MONTH.match(text.strip()):
            year, month = int(match.group(1)), int(match.group(2))
            day = date(year, month, 1)
            if end:
                day = date.fromordinal(day.toordinal() + calendar.monthrange(year, month)[1])
        else:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"{option} {text}: expected a date, YYYY-MM-DD (or a month, YYYY-MM)"
        ) from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def _check_output_path(option: str, path: Path) -> None:
    if not path.parent.resolve().is_dir():
        raise typer.BadParameter(f"{option} {path}: the folder {path.parent} does not exist")


def _check_plot_path(plot: Path) -> None:
    """Refused before the backtest runs rather than after it: a suffix matplotlib cannot
    write, or a folder that does not exist."""
    suffix = plot.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise typer.BadParameter(
            f"--plot {plot}: the file's suffix picks the image format; use one of "
            + ", ".join(f".{name}" for name in PLOT_FORMATS)
        )
    _check_output_path("--plot", plot)


def _symbols(raw: list[str], option: str = "--symbol ") -> list[str]:
    from lunara.telegram.parsing import UsageError, parse_symbol

    names: list[str] = []
    for text in raw:
        try:
            name = parse_symbol(text)
        except UsageError as error:
            raise typer.BadParameter(f"{option}{text}: {error}") from None
        if name not in names:
            names.append(name)
    return names


MIN_STAKE = Decimal(1)


def _checked_stake(stake: float) -> float:
    """`--stake` as `/buy`'s amount is checked, within what a paper account may start with
    (click's own range check lets `nan` through, and `inf` or 1e300 ran)."""
    from lunara.config import MAX_START_BALANCE
    from lunara.telegram.parsing import UsageError, check_amount

    try:
        check_amount(Decimal(stake), MAX_START_BALANCE, least=MIN_STAKE)
    except UsageError:
        raise typer.BadParameter(
            f"--stake must be a finite amount from {MIN_STAKE} to {MAX_START_BALANCE}, "
            f"got {stake:g}"
        ) from None
    return stake


@app.command()
def backtest(
    ctx: typer.Context,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            help="A trading pair, e.g. BTCUSDT; repeat for several sharing the stake. "
            "Alone: its candles stored by `lunara data download`.",
        ),
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="A candle file or a directory of them (our CSV, Binance kline CSV or zip, "
            "freqtrade feather/parquet/json); repeatable.",
        ),
    ] = None,
    sim: Annotated[bool, typer.Option("--sim", help="Use the seeded simulated market.")] = False,
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, max=365, help="Days of sim candles (default 7)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First day to replay, YYYY-MM-DD (UTC)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="Last day to replay (included), YYYY-MM-DD (UTC)."),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option("--timeframe", help="Resample to 5m, 15m, 1h, 4h, 1d... (default: as read)."),
    ] = None,
    stake: Annotated[
        float,
        typer.Option(
            "--stake", callback=_checked_stake, help="Quote currency the run starts with, shared."
        ),
    ] = 100.0,
    as_json: JsonOption = False,
    export: Annotated[
        Path | None, typer.Option("--export", help="Write one CSV row per trade to this file.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Draw prices, trades, stops, equity and drawdown (.png...)."),
    ] = None,
) -> None:
    """Replay the analyzer, entry rule and trailing stops over candles; report like freqtrade."""
    symbols = _symbols(symbol or [])
    paths = list(data or [])
    selects = bool(start or end or timeframe)
    _check_sources(paths, symbols, sim=sim, days=days, selects=selects)
    start_ms, end_ms, timeframe_ms = _selection(start, end, timeframe)
    if plot is not None:
        _check_plot_path(plot)
    if export is not None:
        _check_output_path("--export", export)

    def body(session: Session) -> int:
        settings = settings_of(session)
        if sim:
            series, notes, interval = _simulated(symbols, days or DEFAULT_SIM_DAYS)
        else:
            series, notes, interval = _read(
                paths, symbols, settings.paths.data, start_ms, end_ms, timeframe_ms
            )
        from lunara.analysis import AnalyzerParams

        _check_enough_candles(series, paths, AnalyzerParams().warmup + 1)
        result = _run(series, stake, float(settings.paper_fee_rate), quiet=as_json)
        from lunara.backtest.report import build_report, print_report, write_trades_csv
        from lunara.data.timeframes import timeframe_name

        report = build_report(result, timeframe_name(interval), notes)
        if plot is not None:
            from lunara.backtest.plot import plot_backtest

            plot_backtest(result, series, plot)
        if export is not None:
            write_trades_csv(result.trades, export)
        session.outcome("ok", {"trades": len(result.trades), "symbols": list(series)})
        if as_json:
            from blueprint.render import print_json

            print_json(report.to_json())
        else:
            print_report(report)
        return 0

    guarded(ctx, Permission.BACKTEST, "backtest", body)


def _check_sources(
    paths: list[Path],
    symbols: list[str],
    *,
    sim: bool,
    days: int | None,
    selects: bool,
) -> None:
    """The candles come from files, the store or the sim, and exactly one of them."""
    if paths and sim:
        raise typer.BadParameter("give --data PATH or --sim, not both")
    if days is not None and not sim:
        raise typer.BadParameter("--days sets how much the sim makes; a --data file has its own")
    if not paths and not symbols:
        raise typer.BadParameter("give --symbol (its stored candles, or with --sim) or --data")
    if sim and selects:
        raise typer.BadParameter("--from, --to and --timeframe select read candles, not the sim's")


def _selection(
    start: str | None, end: str | None, timeframe: str | None
) -> tuple[int | None, int | None, int | None]:
    """`--from`, `--to` and `--timeframe` as milliseconds, checked."""
    start_ms = None if start is None else _day_bound("--from", start, end=False)
    end_ms = None if end is None else _day_bound("--to", end, end=True)
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise typer.BadParameter(f"--from {start} is after --to {end}")
    timeframe_ms = None
    if timeframe is not None:
        from lunara.data.timeframes import parse_timeframe

        try:
            timeframe_ms = parse_timeframe(timeframe)
        except ValueError as error:
            raise typer.BadParameter(f"--timeframe: {error}") from None
    return start_ms, end_ms, timeframe_ms


def _check_enough_candles(
    series: Mapping[str, CandleArrays], paths: list[Path], needed: int
) -> None:
    """Every symbol has the analyzer's warm-up and one candle more to trade on."""
    for name, candles in series.items():
        if len(candles) < needed:
            where = " ".join(str(path) for path in paths) or name
            raise BlueprintError(
                f"a backtest needs at least {needed} candles (the analyzer's warm-up and one "
                f"to trade on); {where} has {len(candles)} for {name}",
                ExitCode.USAGE,
            )


def _simulated(
    symbols: list[str], days: int
) -> tuple[dict[str, CandleArrays], dict[str, DataNote], int]:
    from lunara.backtest import CandleArrays
    from lunara.trading.market import DEFAULT_INTERVAL_S, simulated_candles

    series = {name: CandleArrays.of(simulated_candles(name, days * 1440)) for name in symbols}
    return series, {}, DEFAULT_INTERVAL_S * 1000


def _read(
    paths: list[Path],
    symbols: list[str],
    store_root: Path,
    start_ms: int | None,
    end_ms: int | None,
    timeframe_ms: int | None,
) -> tuple[dict[str, CandleArrays], dict[str, DataNote], int]:
    """The candles asked for, from --data or the store; a bad file or selection is a usage
    error naming what was expected."""
    from lunara.backtest import CandleArrays
    from lunara.data.formats import DataFileError
    from lunara.data.load import DataSelectionError, load_paths
    from lunara.data.store import CandleStore, load_stored
    from lunara.data.timeframes import timeframe_name

    try:
        if paths:
            loaded = load_paths(
                paths, symbols, start_ms=start_ms, end_ms=end_ms, timeframe_ms=timeframe_ms
            )
        else:
            loaded = load_stored(
                CandleStore(store_root),
                symbols,
                start_ms=start_ms,
                end_ms=end_ms,
                timeframe_ms=timeframe_ms,
            )
    except (DataFileError, DataSelectionError) as error:
        raise BlueprintError(str(error), ExitCode.USAGE) from None
    intervals = {name: item.timeframe_ms for name, item in loaded.items()}
    if len(set(intervals.values())) > 1:
        shown = ", ".join(f"{name} {timeframe_name(ms)}" for name, ms in intervals.items())
        longest = timeframe_name(max(intervals.values()))
        raise BlueprintError(
            f"the symbols' candles differ ({shown}): give --timeframe {longest} to run them "
            "together",
            ExitCode.USAGE,
        )
    series = {name: CandleArrays.of_frame(item.frame) for name, item in loaded.items()}
    notes = {name: _note(item) for name, item in loaded.items()}
    return series, notes, next(iter(intervals.values()))


def _note(item: SymbolData) -> DataNote:
    from lunara.backtest.report import DataNote, GapNote

    quality = item.quality
    gap = quality.largest_gap
    return DataNote(
        rows=quality.rows,
        duplicates=quality.duplicates,
        interval=quality.interval,
        gaps=quality.gaps,
        largest_gap=None if gap is None else GapNote(gap.after_ms, gap.before_ms, gap.missing),
        sources=item.sources,
        skipped=item.skipped,
    )


def _run(
    series: dict[str, CandleArrays], stake: float, fee: float, *, quiet: bool
) -> BacktestResult:
    from blueprint.render import wants_plain
    from lunara.backtest import run_portfolio

    if quiet or wants_plain():
        return run_portfolio(series, stake=stake, fee_rate=fee)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("backtest " + ", ".join(series), total=None)
        return run_portfolio(
            series, stake=stake, fee_rate=fee,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip


def _month(option: str, text: str) -> tuple[int, int]:
    match = _MONTH.match(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise typer.BadParameter(f"{option} {text}: expected a month, YYYY-MM")
    return int(match.group(1)), int(match.group(2))


def _check_base_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise typer.BadParameter(f"--base-url {url}: expected an http:// or https:// URL")
    return url.strip().rstrip("/")


@data_app.command("download")
def data_download(
    ctx: typer.Context,
    symbols: Annotated[list[str], typer.Argument(help="Trading pairs, e.g. BTCUSDT ETHUSDT.")],
    interval: Annotated[
        str, typer.Option("--interval", help="Kline interval: 1s, 1m, 3m, 5m, ..., 1d.")
    ] = "1m",
    start: Annotated[
        str | None,
        typer.Option("--from", help="First month, YYYY-MM (default: the month before --to)."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last month, YYYY-MM (default: this month).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="Where the files are (default: $LUNARA_PUBLIC_DATA_URL or Binance)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch Binance's public spot klines, verify their checksums, store them for backtests."""
    from lunara.data.timeframes import BINANCE_INTERVALS

    names = _symbols(symbols, option="")
    if interval not in BINANCE_INTERVALS:
        raise typer.BadParameter(
            f"--interval {interval}: expected one of {', '.join(BINANCE_INTERVALS)}"
        )
    today = datetime.now(UTC).date()
    current = (today.year, today.month)
    last = current if end is None else _month("--to", end)
    if last > current:
        raise typer.BadParameter(f"--to {end}: that month has not begun")
    first = (last[0] - 1, 12) if last[1] == 1 else (last[0], last[1] - 1)
    if start is not None:
        first = _month("--from", start)
    if first > last:
        raise typer.BadParameter(f"--from {start} is after --to {end or 'this month'}")
    chosen_url = None if base_url is None else _check_base_url(base_url)

    def body(session: Session) -> int:
        from lunara.data.download import PublicData, download
        from lunara.data.store import CandleStore

        settings = settings_of(session)
        root = settings.paths.data
        url = chosen_url or settings.public_data_url
        quiet = as_json or _plain()
        summaries = _with_progress(
            quiet,
            lambda progress: download(
                PublicData(url, root / "binance", progress=progress),
                CandleStore(root),
                names,
                interval,
                first,
                last,
                today,
            ),
        )
        ok = all(summary.ok for summary in summaries)
        session.outcome("ok" if ok else "error", {"symbols": names, "interval": interval})
        document = _download_json(summaries, url, interval, first, last)
        if as_json:
            from blueprint.render import print_json

            print_json(document)
        else:
            for summary in summaries:
                typer.echo(_download_text(summary))
        return 0 if ok else int(ExitCode.FAILURE)

    guarded(ctx, Permission.DATA, "data download", body)


def _plain() -> bool:
    from blueprint.render import wants_plain

    return wants_plain()


def _with_progress(quiet: bool, run: Callable[[Progress | None], T]) -> T:
    """Run ``run`` with a rich bar of files and bytes on a terminal, silently otherwise."""
    if quiet:
        return run(None)
    from rich.progress import BarColumn, TextColumn
    from rich.progress import Progress as Bar

    from lunara.data.download import FileResult

    with Bar(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
        transient=True,
    ) as bar:  # fmt: skip
        files = bar.add_task("files", total=0, amount="")
        data = bar.add_task("bytes", total=None, amount="")

        def show() -> None:
            count, size = bar.tasks[files], bar.tasks[data]
            bar.update(files, amount=f"{count.completed:.0f}/{count.total or 0:.0f} files")
            known = f"/{(size.total or 0) / MIB:.1f}" if size.total else ""
            bar.update(data, amount=f"{size.completed / MIB:.1f}{known} MiB")

        class Shown:
            def planned(self, count: int) -> None:
                bar.update(files, total=(bar.tasks[files].total or 0) + count)
                show()

            def expecting(self, size: int) -> None:
                bar.update(data, total=(bar.tasks[data].total or 0) + size)
                show()

            def received(self, size: int) -> None:
                bar.advance(data, size)
                show()

            def finished(self, result: FileResult) -> None:
                bar.advance(files)
                bar.update(files, description=f"files ({result.archive.name})")
                show()

        return run(Shown())


def _download_json(
    summaries: list[SymbolSummary],
    url: str,
    interval: str,
    first: tuple[int, int],
    last: tuple[int, int],
) -> dict[str, Any]:
    from lunara.backtest.report import iso
    from lunara.data.download import Outcome

    symbols: dict[str, Any] = {}
    for summary in summaries:
        stored = summary.stored
        symbols[summary.symbol] = {
            **{
                outcome.value: [
                    {"file": result.archive.name, "reason": result.reason}
                    if result.reason
                    else {"file": result.archive.name}
                    for result in summary.of(outcome)
                ]
                for outcome in Outcome
            },
            "bytes": summary.received,
            "stored": None
            if stored is None
            else {
                "path": str(stored.path),
                "added": stored.added,
                "candles": stored.total,
                "first": iso(stored.first_ms),
                "last": iso(stored.last_ms),
            },
        }
    return {
        "base_url": url,
        "interval": interval,
        "from": f"{first[0]:04d}-{first[1]:02d}",
        "to": f"{last[0]:04d}-{last[1]:02d}",
        "ok": all(summary.ok for summary in summaries),
        "symbols": symbols,
    }


def _download_text(summary: SymbolSummary) -> str:
    """One symbol's download in sentences: counts, then what went wrong, by file."""
    from lunara.backtest.report import when
    from lunara.data.download import Outcome

    fetched, kept = summary.of(Outcome.FETCHED), summary.of(Outcome.KEPT)
    parts = [f"{len(fetched)} files fetched ({summary.received / MIB:.1f} MiB)"]
    if kept:
        parts.append(f"{len(kept)} already there")
    lines = [f"{summary.symbol} {summary.interval}: " + ", ".join(parts)]
    for outcome in (Outcome.MISSING, Outcome.REFUSED, Outcome.FAILED):
        for result in summary.of(outcome):
            lines.append(f"  {outcome.value}: {result.archive.name}: {result.reason}")
    stored = summary.stored
    if stored is None:
        lines.append("  nothing stored: no file of the range was there")
    else:
        lines.append(
            f"  stored {stored.path}: {stored.total} candles from {when(stored.first_ms)} "
            f"to {when(stored.last_ms)} ({stored.added} new)"
        )
    return "\n".join(lines)
