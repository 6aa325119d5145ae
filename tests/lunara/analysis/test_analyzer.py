"""Analyzer behaviour: symptoms on constructed markets, the entry rule, JSON, missing data."""

from __future__ import annotations

import dataclasses

import pytest

from lunara.analysis import (
    Analysis,
    AnalyzerParams,
    InsufficientData,
    Symptom,
    analyze_candles,
    entry_signal,
)
from lunara.analysis.candles import Candle

JSON_KEYS = {
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
    "candles_used",
}


def candles_from(closes: list[float], spread: float = 0.001) -> list[Candle]:
    return [
        Candle(i * 60_000, price, price * (1 + spread), price * (1 - spread), price, 10.0)
        for i, price in enumerate(closes)
    ]


def test_a_steady_fall_is_oversold_and_bearish() -> None:
    closes = [200.0 - i * 0.8 for i in range(60)]
    analysis = analyze_candles(candles_from(closes), symbol="BTCUSDT")
    assert analysis.rsi < 30
    assert Symptom.RSI_OVERSOLD in analysis.symptoms
    assert Symptom.EMA_BEARISH_TREND in analysis.symptoms
    assert Symptom.RSI_OVERBOUGHT not in analysis.symptoms


def test_a_steady_rise_is_overbought_and_bullish() -> None:
    closes = [100.0 + i * 0.8 for i in range(60)]
    analysis = analyze_candles(candles_from(closes))
    assert Symptom.RSI_OVERBOUGHT in analysis.symptoms
    assert Symptom.EMA_BULLISH_TREND in analysis.symptoms
    assert not entry_signal(analysis)


def test_a_spike_closes_above_the_upper_band() -> None:
    closes = [100.0 + (i % 2) * 0.5 for i in range(50)] + [104.0]
    analysis = analyze_candles(candles_from(closes))
    assert analysis.close > analysis.bb_upper
    assert Symptom.PRICE_ABOVE_UPPER_BAND in analysis.symptoms


def test_a_dip_after_a_range_triggers_the_entry_rule() -> None:
    closes = [100.0 + (i % 2) * 0.5 for i in range(50)] + [99.0, 97.0, 94.0, 90.0]
    analysis = analyze_candles(candles_from(closes))
    assert {Symptom.RSI_OVERSOLD, Symptom.PRICE_BELOW_LOWER_BAND} <= set(analysis.symptoms)
    assert entry_signal(analysis)


def test_a_turn_up_after_a_fall_is_a_bullish_macd_cross() -> None:
    closes = [150.0 - i for i in range(40)] + [110.0 + 3 * i for i in range(1, 12)]
    candles = candles_from(closes)
    crosses = [
        index
        for index in range(34, len(candles) + 1)
        if Symptom.MACD_BULLISH_CROSS in analyze_candles(candles[:index]).symptoms
    ]
    assert len(crosses) == 1
    at_cross = analyze_candles(candles[: crosses[0]])
    assert at_cross.previous_macd_hist is not None
    assert at_cross.previous_macd_hist <= 0 < at_cross.macd_hist


def test_wide_candles_are_high_volatility() -> None:
    closes = [100.0 + (i % 3) for i in range(40)]
    calm = analyze_candles(candles_from(closes, spread=0.001))
    wild = analyze_candles(candles_from(closes, spread=0.08))
    assert Symptom.HIGH_VOLATILITY not in calm.symptoms
    assert Symptom.HIGH_VOLATILITY in wild.symptoms
    assert wild.atr / wild.close > AnalyzerParams().high_volatility_atr_ratio


def test_thresholds_come_from_the_parameters() -> None:
    closes = [100.0 + (i % 5) * 0.3 - i * 0.05 for i in range(60)]
    analysis = analyze_candles(candles_from(closes))
    below = AnalyzerParams(rsi_oversold=analysis.rsi + 1, rsi_overbought=99.0)
    above = AnalyzerParams(rsi_oversold=1.0, rsi_overbought=analysis.rsi - 1)
    assert Symptom.RSI_OVERSOLD in analyze_candles(candles_from(closes), below).symptoms
    assert Symptom.RSI_OVERBOUGHT in analyze_candles(candles_from(closes), above).symptoms


def _with(analysis: Analysis, *symptoms: Symptom) -> Analysis:
    return dataclasses.replace(analysis, symptoms=tuple(symptoms))


@pytest.mark.parametrize(
    ("symptoms", "enters"),
    [
        ((Symptom.MACD_BULLISH_CROSS, Symptom.EMA_BULLISH_TREND), True),
        ((Symptom.RSI_OVERSOLD, Symptom.PRICE_BELOW_LOWER_BAND), True),
        ((Symptom.MACD_BULLISH_CROSS, Symptom.EMA_BEARISH_TREND), False),
        ((Symptom.RSI_OVERSOLD,), False),
        ((Symptom.PRICE_BELOW_LOWER_BAND, Symptom.HIGH_VOLATILITY), False),
        ((), False),
    ],
)
def test_the_entry_rule(symptoms: tuple[Symptom, ...], enters: bool) -> None:
    base = analyze_candles(candles_from([100.0 + (i % 7) for i in range(80)]))
    assert entry_signal(_with(base, *symptoms)) is enters


def test_insufficient_data_names_how_many_candles_are_needed() -> None:
    params = AnalyzerParams()
    with pytest.raises(InsufficientData) as raised:
        analyze_candles(candles_from([100.0] * 10), params)
    assert raised.value.needed == params.warmup == 34
    assert raised.value.given == 10
    assert "34 candles are needed, 10 given" in str(raised.value)


def test_exactly_the_warm_up_is_enough() -> None:
    params = AnalyzerParams()
    analysis = analyze_candles(candles_from([100.0 + (i % 4) for i in range(params.warmup)]))
    assert analysis.candles_used == params.warmup


def test_json_has_exactly_the_documented_keys() -> None:
    analysis = analyze_candles(candles_from([100 + (i % 7) for i in range(80)]), symbol="X")
    document = analysis.to_json()
    assert set(document) == JSON_KEYS
    assert document["symbol"] == "X"
    assert document["candles_used"] == 80
    assert document["symptoms"] == [symptom.value for symptom in analysis.symptoms]
    assert all(isinstance(value, str) for value in document["symptoms"])
    assert all(
        isinstance(document[key], float)
        for key in JSON_KEYS - {"symbol", "symptoms", "candles_used"}
    )
