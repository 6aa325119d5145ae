"""One year of 1-minute candles for three symbols, read from files and backtested.

    .venv/bin/python bench/backtest_year.py [--symbols 3] [--days 365] [--data DIR]

Writes (or reuses, with --data) Binance's monthly kline zips for a year of 1-minute
candles per symbol (525,600 each; January to June with millisecond open times as
Binance wrote them before 2025, July to December in microseconds as it has since), then
prints:

- the read time of our reader (pandas: unzip, parse, check, sort, deduplicate, gaps)
  beside reading the same zips with plain ``csv`` into candle objects with the row
  checks of today's CSV reader, measured in the same run, and the ratio;
- the backtest's candles per second (every symbol over one stake);
- the store: the same candles written and read back as feather (what the store keeps)
  and as parquet, sizes and read times side by side;
- the peak RSS of the real CLI (``lunara backtest --data DIR``) against the goal of 400
  MiB, beside the peak RSS of the plain ``csv`` read of the same files, each its own
  process (peak RSS from wait4), and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import io
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import bench_env, write_manifest  # noqa: E402

RSS_GOAL_MIB = 400
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
STARTS = {"BTCUSDT": 42000.0, "ETHUSDT": 2300.0, "SOLUSDT": 100.0, "BNBUSDT": 310.0}
MINUTE = 60_000
MICROSECONDS_FROM = 7  # months from July on are written in microseconds
YEAR = 2024

PLAIN_CSV_READER = """
import csv, io, sys, time, zipfile
from pathlib import Path
from lunara.analysis.candles import _parse_row
started = time.perf_counter()
series = {}
for path in sorted(Path(sys.argv[1]).glob("*.zip")):
    symbol = path.name.split("-", 1)[0]
    candles = series.setdefault(symbol, [])
    with zipfile.ZipFile(path) as archive:
        member = archive.namelist()[0]
        with archive.open(member) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            for line, row in enumerate(csv.reader(text), start=1):
                time_ = int(row[0])
                row = [str(time_ // 1000 if time_ > 10**13 else time_), *row[1:6]]
                candles.append(_parse_row(path, line, row, candles[-1] if candles else None))
elapsed = time.perf_counter() - started
print(elapsed, sum(len(c) for c in series.values()))
"""


def write_year(folder: Path, symbols: list[str], days: int, seed: int = 7) -> int:
    """Binance's monthly zips of `days` of 1-minute candles from 2024-01-01 per symbol."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    start = int(datetime(YEAR, 1, 1, tzinfo=UTC).timestamp() * 1000)
    count = days * 1440
    rng = np.random.default_rng(seed)
    for symbol in symbols:
        base = STARTS.get(symbol, 1.5)
        steps = rng.normal(0.0, 0.0008, count)
        close = np.round(base * np.exp(np.cumsum(steps)), 2 if base > 10 else 4)
        opened = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0.0, 0.0004, count))
        high = np.round(np.maximum(opened, close) * (1 + spread), 2 if base > 10 else 4)
        low = np.round(np.minimum(opened, close) * (1 - spread), 2 if base > 10 else 4)
        volume = np.round(rng.gamma(2.0, 5.0, count), 5)
        times = start + np.arange(count, dtype="int64") * MINUTE
        month_of = (times.astype("datetime64[ms]").astype("datetime64[M]").astype(int) % 12) + 1
        for month in range(1, 13):
            chosen = month_of == month
            if not chosen.any():
                continue
            scale = 1000 if month >= MICROSECONDS_FROM else 1
            open_time = times[chosen] * scale
            frame = pd.DataFrame(
                {
                    "open_time": open_time,
                    "open": opened[chosen],
                    "high": high[chosen],
                    "low": low[chosen],
                    "close": close[chosen],
                    "volume": volume[chosen],
                    "close_time": open_time + MINUTE * scale - 1,
                    "quote_volume": volume[chosen] * close[chosen],
                    "count": 100,
                    "taker_buy_volume": volume[chosen] / 2,
                    "taker_buy_quote_volume": volume[chosen] * close[chosen] / 2,
                    "ignore": 0,
                }
            )
            name = f"{symbol}-1m-{YEAR}-{month:02d}"
            text = frame.to_csv(header=False, index=False, float_format="%.8f")
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{name}.csv", text)
            (folder / f"{name}.zip").write_bytes(buffer.getvalue())
    return count


LAUNCHER = """
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
errors = child.stderr.read().decode()
_, status, usage = os.wait4(child.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(code, usage.ru_maxrss, time.perf_counter() - started, flush=True)
sys.stderr.write(errors[-500:])
"""


def peak_rss_mib(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run `command`; its peak RSS (MiB) and wall time. A small launcher starts it, since
    Linux keeps a process's peak RSS across exec: forked from this (big) process, the
    child would start with this one's."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], env=env, cwd=cwd,
                              capture_output=True, text=True, check=True)  # fmt: skip
    code, peak_kib, elapsed = launched.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{command[:4]} failed ({code}): {launched.stderr.strip()}")
    return int(peak_kib) / 1024.0, float(elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--symbols", type=int, default=3, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--data", type=Path, help="reuse (or keep) the zips in this folder")
    args = parser.parse_args()
    symbols = list(SYMBOLS[: args.symbols])
    scratch = Path(tempfile.mkdtemp(prefix="lunara-bench-year-"))
    try:
        folder = args.data or scratch / "zips"
        if not (folder.exists() and any(folder.glob("*.zip"))):
            started = time.perf_counter()
            count = write_year(folder, symbols, args.days)
            print(f"wrote {len(list(folder.glob('*.zip')))} zips, {count} candles per symbol, "
                  f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        return run(folder, symbols, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(folder: Path, symbols: list[str], scratch: Path) -> int:
    from lunara.backtest import CandleArrays, run_portfolio
    from lunara.data.load import load_paths
    from lunara.data.store import CandleStore

    env = bench_env(scratch)
    started = time.perf_counter()
    loaded = load_paths([folder], symbols)
    ours_read = time.perf_counter() - started
    candles = sum(len(item.frame) for item in loaded.values())
    plain = subprocess.run([sys.executable, "-c", PLAIN_CSV_READER, str(folder)], env=env,
                           cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    plain_read, plain_candles = plain.stdout.split()
    if int(plain_candles) != candles:
        raise SystemExit(f"the readers disagree: {plain_candles} against {candles} candles")
    print(f"candles: {candles} ({len(symbols)} symbols x {candles // len(symbols)})")
    print(f"read:     pandas {ours_read:6.2f} s   plain csv {float(plain_read):6.2f} s   "
          f"ratio {ours_read / float(plain_read):.2f}")  # fmt: skip

    series = {name: CandleArrays.of_frame(item.frame) for name, item in loaded.items()}
    gc.collect()
    started = time.perf_counter()
    result = run_portfolio(series, stake=1000.0, fee_rate=0.001)
    elapsed = time.perf_counter() - started
    print(f"backtest: {candles / elapsed:,.0f} candles/s ({elapsed:.1f} s, "
          f"{len(result.trades)} trades, profit {result.profit_percent:+.2f}%)")  # fmt: skip

    store = CandleStore(scratch / "store")
    frame = loaded[symbols[0]].frame
    feather = store.merge(symbols[0], "1m", frame).path
    parquet = scratch / "store" / "same.parquet"
    frame.assign(date=frame["open_time"].astype("datetime64[ms, UTC]")).drop(
        columns="open_time"
    ).to_parquet(parquet)
    feather_s = _best_of(3, lambda: store.read(feather))
    parquet_s = _best_of(3, lambda: store.read(parquet))
    print(f"store:    feather {feather.stat().st_size / 1048576:5.1f} MiB read {feather_s * 1000:5.0f} ms"
          f"   parquet {parquet.stat().st_size / 1048576:5.1f} MiB read {parquet_s * 1000:5.0f} ms"
          f"   read ratio {feather_s / parquet_s:.2f}   (one symbol)")  # fmt: skip

    home = scratch / "home"
    home.mkdir(mode=0o700)
    manifest = write_manifest(home)
    command = [sys.executable, "-m", "lunara.cli", "--home", str(home), "--manifest",
               str(manifest), "backtest", "--data", str(folder), "--stake", "1000", "--json"]  # fmt: skip
    for name in symbols:
        command += ["--symbol", name]
    cli_rss, cli_s = peak_rss_mib(command, {**bench_env(home), "PYTHONPATH": str(ROOT)}, home)
    plain_rss, _ = peak_rss_mib([sys.executable, "-c", PLAIN_CSV_READER, str(folder)], env, ROOT)
    verdict = "PASS" if cli_rss <= RSS_GOAL_MIB else "MISS"
    print(f"CLI:      lunara backtest peak RSS {cli_rss:6.1f} MiB ({cli_s:.1f} s end to end)   "
          f"plain csv read peak RSS {plain_rss:6.1f} MiB   ratio {cli_rss / plain_rss:.2f}   "
          f"goal <= {RSS_GOAL_MIB} MiB: {verdict}")  # fmt: skip
    return 0 if verdict == "PASS" else 1


def _best_of(times: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
