"""Analyzer parameters: one frozen value per user or plan, with the usual defaults."""

from __future__ import annotations

from dataclasses import dataclass


class InvalidParams(ValueError):
    """Parameters that cannot produce indicators (a period of zero, fast >= slow...)."""


@dataclass(frozen=True)
class AnalyzerParams:
    rsi_period: int = 14
    ema_fast: int = 12
    ema_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_deviations: float = 2.0
    atr_period: int = 14
    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    high_volatility_atr_ratio: float = 0.05  # ATR / close above this is "high volatility"

    def __post_init__(self) -> None:
        for name in (
            "rsi_period",
            "ema_fast",
            "ema_slow",
            "macd_signal",
            "bb_period",
            "atr_period",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise InvalidParams(f"{name} must be a whole number >= 2 (got {value!r})")
        if self.ema_fast >= self.ema_slow:
            raise InvalidParams(
                f"ema_fast ({self.ema_fast}) must be shorter than ema_slow ({self.ema_slow})"
            )
        if not self.bb_deviations > 0:
            raise InvalidParams("bb_deviations must be positive")
        if not 0 < self.rsi_oversold < self.rsi_overbought < 100:
            raise InvalidParams("need 0 < rsi_oversold < rsi_overbought < 100")
        if not self.high_volatility_atr_ratio > 0:
            raise InvalidParams("high_volatility_atr_ratio must be positive")

    @property
    def warmup(self) -> int:
        """Candles needed before every indicator has a value (TA-Lib's lookbacks + 1)."""
        macd_lookback = (self.ema_slow - 1) + (self.macd_signal - 1)
        return 1 + max(self.rsi_period, macd_lookback, self.bb_period - 1, self.atr_period)
