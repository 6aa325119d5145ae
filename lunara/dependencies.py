"""What the bot finds of Telegram, Redis, the exchange and Gemini, for `lunara status`.

Each client marks its dependency from the requests it makes anyway (a getUpdates that
answered, a Binance request that failed to connect), so what status says is what the
bot lives with, not a separate check that could disagree. Where the bot may go a long
time without a request, the reporter asks on its own: Redis with a PING (an idle stop
store sends nothing), the exchange with Binance's ping when no request went through
for a while (an idle live bot sends nothing). Gemini is asked only when a trader asks
for commentary, so it keeps what the last answer said.

The reporter writes the board to LUNARA_HOME/dependencies.json when it changes
(blueprint.dependencies); the watchdog and the CLI read it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from blueprint.dependencies import write_dependencies
from blueprint.states import Dependency, Reachability

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0
REDIS_PROBE_EVERY_S = 5.0
REDIS_PROBE_TIMEOUT_S = 3.0
EXCHANGE_PROBE_AFTER_S = 10.0
"""An exchange with no request through for this long is asked (Binance's ping, weight 1)."""
EXCHANGE_PROBE_TIMEOUT_S = 15.0


@dataclass
class Watch:
    """One dependency as the bot last found it; `off` when it is not configured.

    Down when a request could not reach it (`down`), and also while the bot, though it
    reaches it, cannot use it yet (`wait`: Telegram answers, but polling waits for the
    poller lease Redis keeps): status then tells what the bot lives with, not only what
    answers. The reason says which."""

    configured: bool
    clock: Callable[[], float] = time.time
    last_ok_at: float | None = None
    down_since: float | None = None
    reason: str | None = None
    waiting_since: float | None = None
    waiting_for: str | None = None

    @property
    def state(self) -> Reachability:
        if not self.configured:
            return Reachability.OFF
        unusable = self.down_since is not None or self.waiting_since is not None
        return Reachability.DOWN if unusable else Reachability.OK

    def ok(self) -> None:
        """A request went through."""
        self.last_ok_at = self.clock()
        self.down_since = None
        self.reason = None

    def down(self, reason: str) -> None:
        """A request could not reach it; `reason` is shown to operators (no secrets)."""
        if self.down_since is None:
            self.down_since = self.clock()
        self.reason = reason

    def wait(self, reason: str) -> None:
        """The bot does not use it yet, reachable or not (`reason`: what it waits for)."""
        if self.waiting_since is None:
            self.waiting_since = self.clock()
        self.waiting_for = reason

    def resume(self) -> None:
        """What the bot waited for came: it uses the dependency again."""
        self.waiting_since = None
        self.waiting_for = None

    def report(self) -> dict[str, Any]:
        unreachable = self.down_since is not None
        return {
            "state": self.state.value,
            "last_ok_at": self.last_ok_at,
            "down_since": self.down_since if unreachable else self.waiting_since,
            "reason": self.reason if unreachable else self.waiting_for,
        }


@dataclass
class Dependencies:
    """The bot's four dependencies; each client is handed its own Watch."""

    telegram: Watch = field(default_factory=lambda: Watch(False))
    redis: Watch = field(default_factory=lambda: Watch(False))
    exchange: Watch = field(default_factory=lambda: Watch(False))
    ai: Watch = field(default_factory=lambda: Watch(False))

    def report(self) -> dict[str, dict[str, Any]]:
        return {
            Dependency.TELEGRAM.value: self.telegram.report(),
            Dependency.REDIS.value: self.redis.report(),
            Dependency.EXCHANGE.value: self.exchange.report(),
            Dependency.AI.value: self.ai.report(),
        }


class DependencyReporter:
    """The runtime Service that asks the idle dependencies and writes the board."""

    name = "dependencies"

    def __init__(
        self,
        path: Path,
        board: Dependencies,
        *,
        redis: Redis | None = None,
        stops_on_sqlite: Callable[[], bool] | None = None,
        exchange_ping: Callable[[], Awaitable[Any]] | None = None,
        stops_retry_s: float = 30.0,
    ) -> None:
        self.path = path
        self.board = board
        self.redis = redis
        self.stops_on_sqlite = stops_on_sqlite
        self.exchange_ping = exchange_ping
        self.stops_retry_s = stops_retry_s
        self._written: dict[str, dict[str, Any]] | None = None
        self._redis_probed_at = float("-inf")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.probe()
            self.write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY_S)

    async def probe(self) -> None:
        now = time.monotonic()
        if self.redis is not None and now - self._redis_probed_at >= REDIS_PROBE_EVERY_S:
            self._redis_probed_at = now
            await self._probe_redis(self.redis)
        exchange = self.board.exchange
        if self.exchange_ping is not None and exchange.configured:
            seen = exchange.last_ok_at
            if seen is None or exchange.clock() - seen >= EXCHANGE_PROBE_AFTER_S:
                # The gateway marks the Watch itself, from the answer or the failure.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.exchange_ping(), EXCHANGE_PROBE_TIMEOUT_S)

    async def _probe_redis(self, redis: Redis) -> None:
        watch = self.board.redis
        try:
            await asyncio.wait_for(redis.ping(), REDIS_PROBE_TIMEOUT_S)
        except (RedisError, OSError) as error:  # no answer is the outage operators need to see
            reached = False
            cause = type(error).__name__
        else:
            reached = True
        on_sqlite = self.stops_on_sqlite is not None and self.stops_on_sqlite()
        if reached and not on_sqlite:
            watch.ok()
            return
        every = f"{self.stops_retry_s:g} s"
        if reached:
            # Answering, but the stops are not back in it yet: still down for the bot.
            watch.down(
                "Redis answers again; trailing stops run from SQLite until the stop store's "
                f"next try (every {every}) moves them back"
            )
            watch.last_ok_at = watch.clock()
        else:
            watch.down(
                f"unreachable ({cause}); trailing stops run from SQLite, checkpointed there, "
                f"and Redis is asked again every {every}"
            )

    def write(self) -> None:
        report = self.board.report()
        if report == self._written:
            return
        try:
            write_dependencies(self.path, report)
        except OSError as error:  # status then shows the last report; the bot goes on
            logger.warning("could not write %s: %s", self.path, error)
            return
        self._written = report
