"""One request-weight budget for every caller of the Binance REST API.

Binance counts request weight per IP, not per API key: all traders served by this bot
share one budget. A 429 (rate limit) or 418 (IP ban) carries ``Retry-After``; while it
runs, *every* caller must wait, not only the one that was told, or the ban grows.
The limiter therefore keeps one "blocked until" instant for everybody, and an
``aiolimiter`` leaky bucket that spaces requests within the budget.

Our idea of the weight spent can be wrong (another process on the same IP, an endpoint
weighing more than our table says), so every reply's ``X-MBX-USED-WEIGHT-1M`` (what
Binance counted for this IP in the current minute) is fed back with ``observe_used``:
a request that would take Binance's count past the budget waits for the next minute.
The budget itself comes from ``exchangeInfo.rateLimits`` (``set_limit``), less a safety
margin; until that was read a conservative default applies.

A 418 is an IP ban of 2 minutes to 3 days: sleeping through it inside a request would
hang every command, so while banned ``acquire`` raises ``IpBanned`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from lunara.trading.exchange import ExchangeBusy, IpBanned

logger = logging.getLogger(__name__)

# Binance spot: 6,000 weight per minute per IP. Until exchangeInfo says, stay well inside it.
DEFAULT_WEIGHT_PER_MINUTE = 3000.0
# Binance spot's published REQUEST_WEIGHT per minute, assumed for Binance's own count
# until exchangeInfo has been read.
ASSUMED_BINANCE_LIMIT = 6000.0
# The share of Binance's published limit the bot plans to use (the rest is headroom for
# in-flight requests and anything else on this IP).
SAFETY_MARGIN = 0.8
# Used when a 429/418 comes without a readable Retry-After.
DEFAULT_RETRY_AFTER_S = 5.0
# A 429's Retry-After is the wait that avoids a ban: never believe more than this.
MAX_RETRY_AFTER_S = 300.0
# A 418 ban lasts until its Retry-After, which Binance scales up to 3 days.
MAX_BAN_S = 3 * 86400.0
# A minute boundary on our clock may be a little early on Binance's.
WINDOW_SLACK_S = 1.0

INTERVAL_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


class RateLimitKind:
    """``rateLimitType`` values of ``exchangeInfo.rateLimits``."""

    REQUEST_WEIGHT = "REQUEST_WEIGHT"
    ORDERS = "ORDERS"
    RAW_REQUESTS = "RAW_REQUESTS"


@dataclass(frozen=True)
class RateLimit:
    """One entry of ``exchangeInfo.rateLimits``: ``limit`` per ``interval_s`` seconds."""

    kind: str
    interval_s: int
    limit: int


def parse_rate_limits(entries: object) -> list[RateLimit]:
    """``exchangeInfo["rateLimits"]`` → the entries the bot understands; malformed or
    unknown ones are skipped (all limits are optional in Binance's reply)."""
    found: list[RateLimit] = []
    if not isinstance(entries, list):
        return found
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        unit = INTERVAL_SECONDS.get(str(entry.get("interval")))
        number, limit = entry.get("intervalNum"), entry.get("limit")
        if unit is None or not isinstance(number, int) or not isinstance(limit, int):
            continue
        if number <= 0 or limit <= 0 or isinstance(number, bool) or isinstance(limit, bool):
            continue
        found.append(RateLimit(str(entry.get("rateLimitType")), unit * number, limit))
    return found


def weight_per_minute(limits: list[RateLimit]) -> float | None:
    """The tightest REQUEST_WEIGHT limit, as weight per minute; ``None`` if none is given."""
    rates = [
        limit.limit * 60.0 / limit.interval_s
        for limit in limits
        if limit.kind == RateLimitKind.REQUEST_WEIGHT
    ]
    return min(rates) if rates else None


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def parse_retry_after(value: str | None, *, longest: float = MAX_RETRY_AFTER_S) -> float:
    """Seconds from a ``Retry-After`` header (Binance sends integer seconds), at most
    ``longest`` (pass ``MAX_BAN_S`` for a 418: the ban lasts that long, whatever we wish)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(value.strip())
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    if seconds != seconds or seconds < 0:  # NaN or negative
        return DEFAULT_RETRY_AFTER_S
    return min(seconds, longest)


class WindowCounter:
    """Counts events in Binance's fixed windows (``12:34:00-12:34:10`` for 10 s), several
    intervals at once; one trader's ORDERS limits are kept with it."""

    def __init__(self, wall: Clock = time.time) -> None:
        self.wall = wall
        self._limits: list[RateLimit] = []
        self._counts: dict[int, tuple[int, int]] = {}  # interval_s -> (window index, count)

    def set_limits(self, limits: list[RateLimit]) -> None:
        self._limits = list(limits)

    def seconds_until_allowed(self) -> float:
        """0 when one more event fits every window; else how long until it does."""
        now = self.wall()
        wait = 0.0
        for limit in self._limits:
            window, count = self._counts.get(limit.interval_s, (-1, 0))
            if window == int(now // limit.interval_s) and count >= limit.limit:
                wait = max(wait, (window + 1) * limit.interval_s - now)
        return wait

    def record(self) -> None:
        now = self.wall()
        for limit in self._limits:
            index = int(now // limit.interval_s)
            window, count = self._counts.get(limit.interval_s, (index, 0))
            self._counts[limit.interval_s] = (index, count + 1 if window == index else 1)


class WeightLimiter:
    """Shared by every Binance client of the process; pass the same instance to all."""

    def __init__(
        self,
        weight_per_minute: float = DEFAULT_WEIGHT_PER_MINUTE,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if weight_per_minute <= 0:
            raise ValueError("weight_per_minute must be positive")
        self._bucket = AsyncLimiter(weight_per_minute, 60.0)
        self._capacity = weight_per_minute
        self.clock = clock
        self.wall = wall
        self._sleep = sleep
        self._blocked_until = 0.0
        self._banned_until = 0.0
        self._queued = 0.0  # weight waiting for the bucket
        self._used = 0.0  # Binance's count for `_used_minute`, plus what we sent since
        self._used_minute = -1
        self.binance_limit: float | None = None  # per minute, once exchangeInfo was read
        self.penalties = 0
        self.bans = 0
        self.waited_s = 0.0

    @property
    def budget(self) -> float:
        """The weight per minute this process plans to use."""
        return self._capacity

    def set_limit(self, binance_weight_per_minute: float) -> None:
        """Binance's published REQUEST_WEIGHT limit (``exchangeInfo``): plan for
        ``SAFETY_MARGIN`` of it."""
        if binance_weight_per_minute <= 0:
            return
        self.binance_limit = binance_weight_per_minute
        budget = binance_weight_per_minute * SAFETY_MARGIN
        if budget != self._capacity:
            # A fresh bucket starts empty; the minute window (fed by Binance's own count)
            # still keeps the burst inside the limit.
            self._bucket = AsyncLimiter(budget, 60.0)
            self._capacity = budget
            logger.info("Binance request weight: %.0f/min published, planning %.0f/min",
                        binance_weight_per_minute, budget)  # fmt: skip

    @property
    def used_weight(self) -> float:
        """Binance's weight count for this IP in the current minute, as last reported and
        kept up with what was sent since (0 in a new minute)."""
        if self._used_minute != self._minute():
            return 0.0
        return self._used

    def observe_used(self, used: float) -> None:
        """``X-MBX-USED-WEIGHT-1M`` from a reply: Binance's count replaces ours."""
        if used < 0 or used != used:
            return
        minute = self._minute()
        limit = self.window_limit
        if used > limit and (minute != self._used_minute or self._used <= limit):
            logger.warning("Binance counts %.0f request weight this minute, over our budget "
                           "of %.0f: requests wait for the next minute", used, limit)  # fmt: skip
        self._used, self._used_minute = used, minute

    def _minute(self) -> int:
        return int(self.wall() // 60)

    @property
    def window_limit(self) -> float:
        """How far Binance's own count may go this minute: the margin of its published
        limit (of the usual 6,000 before exchangeInfo was read). Our bucket paces what we
        send; this bounds what Binance counted, other processes and earlier lives of this
        bot included, so a restart after a busy minute is not held back by the start-up
        budget alone."""
        return max(self._capacity, (self.binance_limit or ASSUMED_BINANCE_LIMIT) * SAFETY_MARGIN)

    def _window_wait_s(self, amount: float) -> float:
        if self.used_weight + amount <= self.window_limit:
            return 0.0
        return 60.0 - self.wall() % 60 + WINDOW_SLACK_S

    @property
    def banned_for_s(self) -> float:
        """How long Binance's 418 ban still runs; 0 when not banned."""
        return max(0.0, self._banned_until - self.clock())

    @property
    def banned_until(self) -> float | None:
        """When the ban ends (Unix time), ``None`` when not banned."""
        remaining = self.banned_for_s
        return None if remaining <= 0 else self.wall() + remaining

    def ban(self, retry_after_s: float) -> None:
        """A 418: no request is sent for ``retry_after_s``; logged once per ban."""
        until = self.clock() + max(0.0, retry_after_s)
        if until <= self._banned_until:
            return
        was_banned = self.banned_for_s > 0
        self._banned_until = until
        if not was_banned:
            self.bans += 1
            ends = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.wall() + retry_after_s))
            logger.warning("Binance banned this server's IP for %.0f s (until %s): every "
                           "Binance request fails until then", retry_after_s, ends)  # fmt: skip

    def _raise_if_banned(self) -> None:
        remaining = self.banned_for_s
        if remaining > 0:
            raise IpBanned(
                f"Binance has banned this server's IP for another {_duration(remaining)}; "
                "nothing is sent until the ban ends",
                remaining,
            )

    @property
    def blocked_for_s(self) -> float:
        """How long callers will be held back from now; 0 when requests may flow."""
        return max(0.0, self._blocked_until - self.clock())

    def penalize(self, retry_after_s: float) -> None:
        """Hold every caller back for ``retry_after_s`` (never shortens a longer block)."""
        until = self.clock() + max(0.0, retry_after_s)
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
        return self.blocked_for_s + max(queue_s, self._window_wait_s(amount))

    async def acquire(self, weight: float = 1.0, max_wait_s: float | None = None) -> None:
        """Wait out any Retry-After block, then take ``weight`` from the budget.

        With ``max_wait_s``, raise ``ExchangeBusy`` instead of queueing when the wait would
        be longer: an interactive read then fails fast instead of piling up behind the
        budget (trading calls pass no bound: they wait their turn). While Binance's IP ban
        runs, every caller gets ``IpBanned`` at once.
        """
        self._raise_if_banned()
        if max_wait_s is not None and self.expected_wait_s(weight) > max_wait_s:
            raise ExchangeBusy("Binance's request budget is used up for now")
        while True:
            remaining = self._blocked_until - self.clock()
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
        while (wait := self._window_wait_s(amount)) > 0:
            self.waited_s += wait
            await self._sleep(wait)
        self._raise_if_banned()  # a 418 may have come in while this one waited
        if self._used_minute != self._minute():
            self._used, self._used_minute = 0.0, self._minute()
        self._used += amount


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
