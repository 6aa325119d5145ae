"""Exactly one poller per bot token.

Telegram answers 409 Conflict when two clients poll one token; the first version of
this bot did exactly that after every platform restart. Here the poller must hold a
lease first: with Redis, a key set with `SET NX PX` and renewed well before it expires
(so a killed holder frees it within one TTL); without Redis, an exclusive lock on a
file in LUNARA_HOME (freed by the kernel when the holder dies). A second instance
waits for the lease instead of polling. The lease key is derived from a hash of the
token, never the token itself.

With Redis configured but unreachable (at start, or later before the lease is held)
the poller waits for Redis rather than falling back to the file lock, which another
host would not see: two pollers on one token is the failure this module exists to
prevent. Trading does not wait (the stop store runs on SQLite meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from blueprint.trust import try_exclusive_lock

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

LEASE_TTL_MS = 6_000  # a SIGKILLed holder frees the lease within this
RENEW_EVERY_S = 2.0
RETRY_EVERY_S = 1.0

# Renew only our own lease; take it back if it vanished (Redis flushed or restarted
# empty); release only our own lease.
_RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class PollLease:
    """`await acquire(stop)` → True once held (False if stopped while waiting)."""

    def __init__(self, token: str, home: Path, redis: Redis | None = None) -> None:
        self.fingerprint = token_fingerprint(token)
        self.key = f"lunara:poller:{self.fingerprint}"
        self.path = home / f"poller-{self.fingerprint}.lock"
        self.redis = redis
        self._owner = secrets.token_hex(16)
        self._fd: int | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()

    async def _try_once(self) -> bool:
        if self.redis is not None:
            return bool(await self.redis.set(self.key, self._owner, nx=True, px=LEASE_TTL_MS))
        self._fd = try_exclusive_lock(self.path)
        return self._fd is not None

    async def acquire(
        self, stop: asyncio.Event, waiting: Callable[[str], None] | None = None
    ) -> bool:
        """Try until the lease is held (True) or `stop` is set (False); after each try
        that fails, `waiting` is told why, in words for `lunara status`."""
        redis_down = False
        while not stop.is_set():
            try:
                held = await self._try_once()
            except (RedisError, OSError) as error:
                if not redis_down:
                    logger.warning(
                        "Redis unavailable (%s): Telegram polling waits for its lease until "
                        "Redis answers; trading goes on",
                        type(error).__name__,
                    )
                redis_down = True
                held = False
                why = (
                    f"Redis, which keeps the poller lease, does not answer "
                    f"({type(error).__name__}); commands wait until it does"
                    if self.redis is not None
                    else f"the poller lock {self.path} cannot be taken ({type(error).__name__})"
                )
            else:
                why = (
                    "another poller of this bot token holds the poller lease and gets the commands"
                )
            if held:
                if redis_down:
                    logger.info("Redis answers again: Telegram poller lease taken")
                if self.redis is not None:
                    self._renewer = asyncio.create_task(self._renew_forever(self.redis))
                return True
            if waiting is not None:
                waiting(f"not polling: {why}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_EVERY_S)
        return False

    async def _renew_forever(self, redis: Redis) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                renewed = await redis.eval(_RENEW, 1, self.key, self._owner, LEASE_TTL_MS)
            except (RedisError, OSError):  # Redis hiccup: keep polling; the TTL leaves a margin
                continue
            if not renewed:  # another instance holds it now
                self.lost.set()
                return

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.eval(_RELEASE, 1, self.key, self._owner)
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
