"""What the indicators say, as named symptoms rather than strings scattered around."""

from __future__ import annotations

from enum import StrEnum


class Symptom(StrEnum):
    RSI_OVERSOLD = "rsi_oversold"
    RSI_OVERBOUGHT = "rsi_overbought"
    MACD_BULLISH_CROSS = "macd_bullish_cross"
    MACD_BEARISH_CROSS = "macd_bearish_cross"
    PRICE_ABOVE_UPPER_BAND = "price_above_upper_band"
    PRICE_BELOW_LOWER_BAND = "price_below_lower_band"
    EMA_BULLISH_TREND = "ema_bullish_trend"
    EMA_BEARISH_TREND = "ema_bearish_trend"
    HIGH_VOLATILITY = "high_volatility"
