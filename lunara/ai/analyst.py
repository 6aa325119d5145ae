"""A short market commentary from Gemini, built from what the analyzer already computed.

The model is asked to explain the indicators, not to predict prices: the prompt holds
the numbers and the symptoms and nothing else about the trader. Answers are cached
per symbol and candle: until a new candle closes the inputs are the same, so is the
answer, and asking again costs neither quota nor a request. Each plan has a daily
quota, counted in ``usage_counters`` only when an answer was actually produced; the
first question of a day drops the counters of the days before it.

Without ``GEMINI_API_KEY`` the feature reports itself off and google-genai is never
imported. Every failure becomes a one-line note for the trader; details go to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from lunara.dependencies import Watch
from lunara.storage import users

logger = logging.getLogger(__name__)

USAGE_KIND = "ai_analysis"
API_VERSION = "v1beta"
DEFAULT_TIMEOUT_MS = 20_000
DEFAULT_ATTEMPTS = 3
CACHE_SIZE = 512
MAX_ANSWER_CHARS = 1500

NOTE_OFF = "AI commentary is off on this bot (no Gemini key is configured)."
NOTE_QUOTA = "You have used all {limit} AI analyses of your {plan} plan today; try again tomorrow."
NOTE_NOT_IN_PLAN = "AI commentary is not included in your {plan} plan."
NOTE_BUSY = "The AI service is busy right now; try again in a few minutes."
NOTE_UNAVAILABLE = "The AI commentary is unavailable right now."
NOTE_EMPTY = "The AI service gave no answer for this market."

Clock = Callable[[], float]


@dataclass(frozen=True)
class MarketSummary:
    """The analyzer's view of one symbol at one closed candle: the whole prompt input."""

    symbol: str
    interval: str
    candle_open_time: int
    price: float | None
    indicators: Mapping[str, float | None]
    symptoms: Sequence[str]


@dataclass(frozen=True)
class Commentary:
    text: str | None
    note: str | None = None
    cached: bool = False


def build_prompt(summary: MarketSummary) -> str:
    """Plain text, numbers rounded to what a reader can use; no trader data."""
    lines = [
        "You are a careful crypto market analyst. In at most 120 words, explain what the "
        "indicators below say about the market right now. Mention risks. Do not promise "
        "profits and do not give financial advice; describe, do not predict.",
        "",
        f"Symbol: {summary.symbol} ({summary.interval} candles)",
    ]
    if summary.price is not None:
        lines.append(f"Last price: {summary.price:.8g}")
    lines.append("Indicators:")
    for name in sorted(summary.indicators):
        value = summary.indicators[name]
        shown = "n/a" if value is None else f"{value:.6g}"
        lines.append(f"- {name}: {shown}")
    signals = ", ".join(summary.symptoms) if summary.symptoms else "none"
    lines.append(f"Signals detected: {signals}")
    return "\n".join(lines)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


class Analyst:
    """Gemini through google-genai's async client; one instance per bot."""

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str,
        base_url: str | None,
        db: aiosqlite.Connection,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        attempts: int = DEFAULT_ATTEMPTS,
        retry_initial_delay_s: float = 1.0,
        clock: Clock = time.time,
        cache_size: int = CACHE_SIZE,
        watch: Watch | None = None,
    ) -> None:
        self._api_key = api_key
        self._model = model
        self._base_url = base_url
        self._db = db
        self._timeout_ms = timeout_ms
        self._attempts = attempts
        self._retry_initial_delay_s = retry_initial_delay_s
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._cache_size = cache_size
        self._inflight: dict[tuple[str, str, int], asyncio.Future[str]] = {}
        self._client: Any = None
        # The last day whose earlier counters were dropped: only today's count decides a
        # quota, so each new day prunes the days before it once (the table stays one day).
        self._pruned_before: str | None = None
        self.requests_sent = 0
        # Reachability for `lunara status`, marked by every request's outcome.
        self.watch = watch if watch is not None else Watch(configured=bool(api_key))

    @property
    def enabled(self) -> bool:
        return bool(self._api_key)

    def _genai(self) -> Any:
        if self._client is None:
            from google import genai  # heavy; only when a key is configured
            from google.genai import types

            self._client = genai.Client(
                api_key=self._api_key,
                http_options=types.HttpOptions(
                    base_url=self._base_url,
                    api_version=API_VERSION,
                    timeout=self._timeout_ms,
                    retry_options=types.HttpRetryOptions(
                        attempts=self._attempts,
                        initial_delay=self._retry_initial_delay_s,
                        max_delay=max(self._retry_initial_delay_s, 10.0),
                        http_status_codes=[408, 429, 500, 502, 503, 504],
                    ),
                ),
            )
        return self._client

    async def comment(
        self, user_id: int, plan: str, summary: MarketSummary, *, limit: int
    ) -> Commentary:
        """Commentary for ``summary`` within ``limit`` answers a day (the plan's quota);
        never raises for service or quota problems."""
        if not self.enabled:
            return Commentary(None, NOTE_OFF)
        key = (summary.symbol, summary.interval, summary.candle_open_time)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return Commentary(cached, cached=True)
        if limit <= 0:
            return Commentary(None, NOTE_NOT_IN_PLAN.format(plan=plan))
        day = _day(self._clock())
        if self._pruned_before != day:
            await users.prune_usage(self._db, day)
            self._pruned_before = day
        if await users.usage(self._db, user_id, USAGE_KIND, day) >= limit:
            return Commentary(None, NOTE_QUOTA.format(limit=limit, plan=plan))
        try:
            text = await self._answer(key, summary)
        except Exception as error:  # the trader gets a note; the log gets the cause
            return Commentary(None, self._note_for(error, summary.symbol))
        await users.increment_usage_and_check(self._db, user_id, USAGE_KIND, day, limit)
        return Commentary(text)

    async def _answer(self, key: tuple[str, str, int], summary: MarketSummary) -> str:
        """One request per key even when several traders ask at once."""
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            text = await self._generate(summary)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # marked retrieved: only the waiters re-raise it
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(text)
        self._cache[key] = text
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return text

    async def _generate(self, summary: MarketSummary) -> str:
        client = self._genai()
        self.requests_sent += 1
        try:
            response = await client.aio.models.generate_content(
                model=self._model, contents=build_prompt(summary)
            )
        except Exception as error:
            self._mark_failure(error)
            raise
        self.watch.ok()
        text = (getattr(response, "text", None) or "").strip()
        if not text:
            raise _EmptyAnswer()
        return text[:MAX_ANSWER_CHARS]

    def _mark_failure(self, error: Exception) -> None:
        """Gemini is down for us when it cannot be reached or fails on its side (no HTTP
        code, 408, 5xx); a refusal or a quota answer (4xx, 429) means it answered."""
        code = getattr(error, "code", None)
        if not isinstance(code, int) or code == 408 or code >= 500:
            shown = type(error).__name__ if not isinstance(code, int) else f"HTTP {code}"
            self.watch.down(f"Gemini did not answer ({shown})")
        else:
            self.watch.ok()

    def _note_for(self, error: Exception, symbol: str) -> str:
        if isinstance(error, _EmptyAnswer):
            logger.warning("Gemini returned no text for %s", symbol)
            return NOTE_EMPTY
        code = getattr(error, "code", None)
        logger.warning(
            "Gemini request for %s failed: %s %s",
            symbol,
            type(error).__name__,
            code if code is not None else "",
        )
        if code in (429, 503):
            return NOTE_BUSY
        return NOTE_UNAVAILABLE

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()
            self._client = None


class _EmptyAnswer(Exception):
    """The response carried no text (blocked or empty)."""
