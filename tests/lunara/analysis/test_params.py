"""Analyzer parameters: the usual defaults, and clear refusals of unusable values."""

from __future__ import annotations

import pytest

from lunara.analysis import AnalyzerParams, InvalidParams


def test_defaults_are_the_textbook_periods() -> None:
    params = AnalyzerParams()
    assert (params.rsi_period, params.ema_fast, params.ema_slow, params.macd_signal) == (
        14,
        12,
        26,
        9,
    )
    assert (params.bb_period, params.bb_deviations, params.atr_period) == (20, 2.0, 14)
    assert (params.rsi_oversold, params.rsi_overbought) == (30.0, 70.0)


def test_parameters_are_frozen() -> None:
    params = AnalyzerParams()
    with pytest.raises(AttributeError):
        params.rsi_period = 7  # type: ignore[misc]


def test_the_warm_up_follows_the_longest_lookback() -> None:
    assert AnalyzerParams().warmup == 34  # MACD: 25 + 8 + 1
    assert AnalyzerParams(bb_period=50).warmup == 50
    assert AnalyzerParams(rsi_period=40).warmup == 41


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rsi_period": 0}, "rsi_period must be a whole number >= 2"),
        ({"atr_period": -3}, "atr_period"),
        ({"bb_period": 2.5}, "bb_period"),
        ({"macd_signal": True}, "macd_signal"),
        ({"ema_fast": 30, "ema_slow": 26}, r"ema_fast \(30\) must be shorter than ema_slow \(26\)"),
        ({"ema_fast": 26, "ema_slow": 26}, "must be shorter"),
        ({"bb_deviations": 0.0}, "bb_deviations must be positive"),
        ({"rsi_oversold": 80.0}, "rsi_oversold < rsi_overbought"),
        ({"rsi_overbought": 100.0}, "rsi_overbought < 100"),
        ({"high_volatility_atr_ratio": 0.0}, "high_volatility_atr_ratio"),
    ],
)
def test_invalid_parameters_are_refused_with_a_clear_message(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidParams, match=message):
        AnalyzerParams(**changes)  # type: ignore[arg-type]
