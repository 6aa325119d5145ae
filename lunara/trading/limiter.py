"""One request-weight budget for every caller of the Binance REST API.

Binance counts request weight per IP, not per API key: all traders served by this bot
share one budget. A 429 (rate limit) or 418 (IP ban) carries ``Retry-After``; while it
runs, *every* caller must wait, not only the one that was told, or the ban grows.
The limiter therefore keeps one "blocked until" instant for everybody, and an
``aiolimiter`` leaky bucket that spaces requests within the budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from lunara.trading.exchange import ExchangeBusy

logger = logging.getLogger(__name__)

# Binance spot: 6,000 weight per minute per IP. Stay well inside it.
DEFAULT_WEIGHT_PER_MINUTE = 3000.0
# Used when a 429/418 comes without a readable Retry-After.
DEFAULT_RETRY_AFTER_S = 5.0
# Never believe a Retry-After longer than this (a ban is reported, not slept through).
MAX_RETRY_AFTER_S = 300.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (Binance sends integer seconds)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(value.strip())
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    if seconds != seconds or seconds < 0:  # NaN or negative
        return DEFAULT_RETRY_AFTER_S
    return min(seconds, MAX_RETRY_AFTER_S)


class WeightLimiter:
    """Shared by every Binance client of the process; pass the same instance to all."""

    def __init__(
        self,
        weight_per_minute: float = DEFAULT_WEIGHT_PER_MINUTE,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if weight_per_minute <= 0:
            raise ValueError("weight_per_minute must be positive")
        self._bucket = AsyncLimiter(weight_per_minute, 60.0)
        self._capacity = weight_per_minute
        self._clock = clock
        self._sleep = sleep
        self._blocked_until = 0.0
        self._queued = 0.0  # weight waiting for the bucket
        self.penalties = 0
        self.waited_s = 0.0

    @property
    def blocked_for_s(self) -> float:
        """How long callers will be held back from now; 0 when requests may flow."""
        return max(0.0, self._blocked_until - self._clock())

    def penalize(self, retry_after_s: float) -> None:
        """Hold every caller back for ``retry_after_s`` (never shortens a longer block)."""
        until = self._clock() + max(0.0, retry_after_s)
        if until > self._blocked_until:
            self._blocked_until = until
        self.penalties += 1
        logger.warning("Binance asked to slow down: all requests paused for %.1f s", retry_after_s)

    def expected_wait_s(self, weight: float) -> float:
        """Roughly how long a request of ``weight`` would wait now (block plus queue)."""
        amount = min(weight, self._capacity)
        queue_s = 0.0
        if not self._bucket.has_capacity(amount):
            queue_s = (self._queued + amount) / (self._capacity / 60.0)
        return self.blocked_for_s + queue_s

    async def acquire(self, weight: float = 1.0, max_wait_s: float | None = None) -> None:
        """Wait out any Retry-After block, then take ``weight`` from the budget.

        With ``max_wait_s``, raise ``ExchangeBusy`` instead of queueing when the wait would
        be longer: an interactive read then fails fast instead of piling up behind the
        budget (trading calls pass no bound: they wait their turn).
        """
        if max_wait_s is not None and self.expected_wait_s(weight) > max_wait_s:
            raise ExchangeBusy("Binance's request budget is used up for now")
        while True:
            remaining = self._blocked_until - self._clock()
            if remaining <= 0:
                break
            self.waited_s += remaining
            await self._sleep(remaining)
        amount = min(weight, self._capacity)
        self._queued += amount
        try:
            await self._bucket.acquire(amount)
        finally:
            self._queued -= amount
