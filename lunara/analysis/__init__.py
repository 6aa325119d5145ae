"""Technical analysis: indicators (batch and streaming), symptoms and the entry rule."""

from lunara.analysis.analyzer import (
    Analysis,
    AnalyzerRegistry,
    InsufficientData,
    StreamingAnalyzer,
    analyze_candles,
    batch_series,
    entry_signal,
)
from lunara.analysis.candles import Candle, CandleFileError, CandleWindow, read_klines_csv
from lunara.analysis.params import AnalyzerParams, InvalidParams
from lunara.analysis.symptoms import Symptom

__all__ = [
    "Analysis",
    "AnalyzerParams",
    "AnalyzerRegistry",
    "Candle",
    "CandleFileError",
    "CandleWindow",
    "InsufficientData",
    "InvalidParams",
    "StreamingAnalyzer",
    "Symptom",
    "analyze_candles",
    "batch_series",
    "entry_signal",
    "read_klines_csv",
]
