"""Analyzer behaviour: symptoms, the entry rule, insufficient data, parameters, CSV input."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunara.analysis import (
    AnalyzerParams,
    CandleFileError,
    InsufficientData,
    InvalidParams,
    Symptom,
    analyze_candles,
    entry_signal,
    read_klines_csv,
)
from lunara.analysis.candles import Candle


def candles_from(closes: list[float]) -> list[Candle]:
    return [
        Candle(i * 60_000, price, price * 1.001, price * 0.999, price, 10.0)
        for i, price in enumerate(closes)
    ]


def test_a_steady_fall_is_oversold_and_bearish() -> None:
    closes = [200.0 - i * 0.8 for i in range(60)]
    analysis = analyze_candles(candles_from(closes), symbol="BTCUSDT")
    assert Symptom.RSI_OVERSOLD in analysis.symptoms
    assert Symptom.EMA_BEARISH_TREND in analysis.symptoms
    assert analysis.rsi < 30


def test_a_steady_rise_is_overbought_and_bullish() -> None:
    closes = [100.0 + i * 0.8 for i in range(60)]
    analysis = analyze_candles(candles_from(closes))
    assert Symptom.RSI_OVERBOUGHT in analysis.symptoms
    assert Symptom.EMA_BULLISH_TREND in analysis.symptoms


def test_a_dip_after_a_range_triggers_the_entry_rule() -> None:
    closes = [100.0 + (i % 2) * 0.5 for i in range(50)] + [99.0, 97.0, 94.0, 90.0]
    analysis = analyze_candles(candles_from(closes))
    assert {Symptom.RSI_OVERSOLD, Symptom.PRICE_BELOW_LOWER_BAND} <= set(analysis.symptoms)
    assert entry_signal(analysis)


def test_insufficient_data_names_how_many_candles_are_needed() -> None:
    params = AnalyzerParams()
    with pytest.raises(InsufficientData) as raised:
        analyze_candles(candles_from([100.0] * 10), params)
    assert raised.value.needed == params.warmup == 34
    assert "34 candles are needed, 10 given" in str(raised.value)


def test_json_has_the_documented_keys() -> None:
    analysis = analyze_candles(candles_from([100 + (i % 7) for i in range(80)]), symbol="X")
    document = analysis.to_json()
    for key in (
        "symbol",
        "close",
        "rsi",
        "ema_fast",
        "ema_slow",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        "atr",
        "symptoms",
    ):
        assert key in document
    assert all(isinstance(value, str) for value in document["symptoms"])


@pytest.mark.parametrize(
    "changes",
    [
        {"rsi_period": 0},
        {"ema_fast": 30, "ema_slow": 26},
        {"bb_deviations": 0.0},
        {"rsi_oversold": 80.0},
    ],
)
def test_invalid_parameters_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidParams):
        AnalyzerParams(**changes)  # type: ignore[arg-type]


def test_csv_reader_reads_klines(tmp_path: Path) -> None:
    path = tmp_path / "klines.csv"
    path.write_text(
        "open_time,open,high,low,close,volume\n"
        "1700000000000,100,101,99,100.5,12\n"
        "1700000060000,100.5,102,100,101.5,8\n"
    )
    candles = read_klines_csv(path)
    assert [c.close for c in candles] == [100.5, 101.5]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("time,o,h,l,c,v\n", "line 1"),
        ("open_time,open,high,low,close,volume\n1,100,101,99,abc,1\n", "line 2: not a number"),
        ("open_time,open,high,low,close,volume\n1,100,99,98,100,1\n", "line 2: high/low"),
        (
            "open_time,open,high,low,close,volume\n2,1,1,1,1,1\n1,1,1,1,1,1\n",
            "line 3: open_time must increase",
        ),
    ],
)
def test_csv_reader_names_the_bad_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(CandleFileError, match=message):
        read_klines_csv(path)
