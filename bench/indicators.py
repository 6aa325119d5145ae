"""Batch indicators against TA-Lib over the same candles, measured alternately.

    .venv/bin/python bench/indicators.py [--candles 1000000] [--repeat 5]

Prints, per indicator and in total, our median time, TA-Lib's, and the ratio
(target <= 2.0), then the streaming analyzer's cost per candle.
"""

from __future__ import annotations

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


def median_s(function: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--stream", type=int, default=100_000, help="candles for the streaming figure"
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
            lambda: talib.BBANDS(close, 20, 2, 2, 0),
        ),
        "ATR(14)": (
            lambda: ours.atr(high, low, close, 14),
            lambda: talib.ATR(high, low, close, 14),
        ),
    }
    total_ours = total_talib = 0.0
    print(f"{args.candles:,} candles, median of {args.repeat}, alternating ours / TA-Lib")
    for name, (mine, reference) in pairs.items():
        ours_s = reference_s = 0.0
        ours_samples, reference_samples = [], []
        for _ in range(args.repeat):
            ours_samples.append(median_s(mine, 1))
            reference_samples.append(median_s(reference, 1))
        ours_s, reference_s = statistics.median(ours_samples), statistics.median(reference_samples)
        total_ours += ours_s
        total_talib += reference_s
        print(
            f"  {name:<14} ours {ours_s * 1000:8.1f} ms  TA-Lib {reference_s * 1000:7.1f} ms  ratio {ours_s / reference_s:5.2f}"
        )
    ratio = total_ours / total_talib
    print(
        f"  {'total':<14} ours {total_ours * 1000:8.1f} ms  TA-Lib {total_talib * 1000:7.1f} ms  ratio {ratio:5.2f} (target <= 2.0) -> {'PASS' if ratio <= 2.0 else 'FAIL'}"
    )

    candles = [
        Candle(i, float(close[i]), float(high[i]), float(low[i]), float(close[i]), 1.0)
        for i in range(min(args.stream, args.candles))
    ]
    analyzer = StreamingAnalyzer("BENCH", AnalyzerParams())
    started = time.perf_counter()
    for candle in candles:
        analyzer.update(candle)
    per_candle_us = (time.perf_counter() - started) / len(candles) * 1e6
    print(f"streaming update (all indicators + symptoms): {per_candle_us:.1f} us per candle")
    return 0 if ratio <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
