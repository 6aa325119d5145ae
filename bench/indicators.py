"""Batch indicators against TA-Lib over the same candles, measured alternately.

    .venv/bin/python bench/indicators.py [--candles 1000000] [--repeat 11] [--stream 200000]

Prints, per indicator and in total, our median time, TA-Lib's median time measured in
the same run (ours and TA-Lib's calls alternate, so both see the same machine load),
the ratio (target <= 2.0 in total), then the streaming analyzer's cost per candle.
Both sides run single-threaded (TA-Lib is; BLAS is pinned to one thread here), and
each of our results is checked against TA-Lib's before it is timed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import talib

from lunara.analysis import AnalyzerParams, StreamingAnalyzer
from lunara.analysis import indicators as ours
from lunara.analysis.candles import Candle

TARGET = 2.0


def _as_tuple(result: object) -> tuple[np.ndarray, ...]:
    values = result if isinstance(result, tuple) else (result,)
    return tuple(np.asarray(value) for value in values)


def _check(name: str, mine: object, reference: object) -> None:
    for our_values, their_values in zip(_as_tuple(mine), _as_tuple(reference), strict=True):
        if not np.array_equal(np.isnan(our_values), np.isnan(their_values)):
            raise SystemExit(f"{name}: warm-up differs from TA-Lib")
        mask = ~np.isnan(their_values)
        np.testing.assert_allclose(
            our_values[mask], their_values[mask], rtol=1e-9, atol=1e-9, err_msg=name
        )


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument(
        "--stream", type=int, default=200_000, help="candles for the streaming figure"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    close = np.abs(100 + np.cumsum(rng.normal(0, 1, args.candles))) + 1.0
    high = close + rng.random(args.candles)
    low = np.maximum(close - rng.random(args.candles), 0.01)

    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "RSI(14)": (lambda: ours.rsi(close, 14), lambda: talib.RSI(close, 14)),
        "EMA(12)": (lambda: ours.ema(close, 12), lambda: talib.EMA(close, 12)),
        "EMA(26)": (lambda: ours.ema(close, 26), lambda: talib.EMA(close, 26)),
        "MACD(12,26,9)": (lambda: ours.macd(close), lambda: talib.MACD(close, 12, 26, 9)),
        "BBANDS(20,2)": (
            lambda: ours.bbands(close, 20, 2.0),
            lambda: talib.BBANDS(close, 20, 2, 2),  # matype: SMA by default, as ours
        ),
        "ATR(14)": (
            lambda: ours.atr(high, low, close, 14),
            lambda: talib.ATR(high, low, close, 14),
        ),
    }
    print(
        f"{args.candles:,} candles, median of {args.repeat} alternating runs, "
        f"single-threaded (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})"
    )
    print(f"  {'indicator':<14} {'ours ms':>9} {'TA-Lib ms':>10} {'ratio':>6}")
    total_ours = total_talib = 0.0
    for name, (mine, reference) in pairs.items():
        _check(name, mine(), reference())
        ours_samples: list[float] = []
        reference_samples: list[float] = []
        for _ in range(args.repeat):
            ours_samples.append(_timed(mine))
            reference_samples.append(_timed(reference))
        ours_s = statistics.median(ours_samples)
        reference_s = statistics.median(reference_samples)
        total_ours += ours_s
        total_talib += reference_s
        print(
            f"  {name:<14} {ours_s * 1e3:9.2f} {reference_s * 1e3:10.2f} {ours_s / reference_s:6.2f}"
        )
    ratio = total_ours / total_talib
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"  {'total':<14} {total_ours * 1e3:9.2f} {total_talib * 1e3:10.2f} {ratio:6.2f}"
        f"  (target <= {TARGET}) {verdict}"
    )

    count = min(args.stream, args.candles)
    candles = [
        Candle(i * 60_000, float(close[i]), float(high[i]), float(low[i]), float(close[i]), 1.0)
        for i in range(count)
    ]
    analyzer = StreamingAnalyzer("BENCH", AnalyzerParams())
    started = time.perf_counter()
    for candle in candles:
        analyzer.update(candle)
    per_candle_us = (time.perf_counter() - started) / count * 1e6
    print(
        f"streaming update, all indicators + symptoms + Analysis: {per_candle_us:.2f} us per candle "
        f"({count:,} candles)"
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
