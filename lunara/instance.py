"""One live instance per deployment: the instance lease and its fencing epoch.

A deployment is its manifest `name` plus its database (`lunara.storage.deployment`).
Two bots of one deployment must never both poll Telegram or trade, yet a start-first
rolling deploy runs the new one beside the old one for a while. So the bot holds a lease
before it does anything, and one that cannot get it waits as `standby`:

- In the home, an exclusive lock on `instance.lock` (the kernel frees it when the holder
  dies): one bot per home, with or without Redis.
- With Redis, the hash `lunara:<name>:instance` (deployment_id, host, home, pid, epoch),
  set with a TTL of `TTL_S` and renewed every `RENEW_EVERY_S` (Kubernetes' leader
  election defaults): one bot per deployment, across hosts. A holder that dies frees it
  within one TTL; the standby then takes it.
- A holder of *another* deployment under the same name (another home with its own
  database) is a configuration error: `InstanceConflict`, exit 6, naming the holder.

A lease alone is not enough: a holder paused past its TTL (a stopped container, a VM
migrated, a long GC) wakes up believing it still holds it. Taking the lease increments
`lunara:<name>:instance:epoch`, which has no TTL; the holder's epoch is its fencing
token. Every Redis stop write checks it in its Lua script (`Fence`), and a holder that
has not heard from Redis for `SAFE_FOR_S` (⅔ of the TTL) places no order and sends no
message (`may_act`) until its next renewal says the lease is still its own.

Redis unreachable (at start, or later): the bot runs on the home's lock alone, as it
runs its stops on SQLite alone, and takes the Redis lease when Redis answers. If another
instance of the deployment took it meanwhile, this one steps down (`LeaseLost`); if
another deployment did, it is refused as at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from blueprint.errors import BlueprintError, ConfigError
from blueprint.mirror import MirrorKeys
from blueprint.trust import try_exclusive_lock

logger = logging.getLogger(__name__)

TTL_S = 15.0
RENEW_EVERY_S = 2.0
SAFE_FOR_S = TTL_S * 2 / 3
"""A holder that has not heard from Redis for this long stops acting until it does."""
REDIS_CALL_TIMEOUT_S = 1.5
"""One lease call waits this long for Redis (a hung Redis counts as unreachable)."""
STANDBY_RETRY_S = 1.0
STANDBY_SEEN_S = 5.0
"""A waiting bot's record in Redis outlives its last retry by this much."""
LOCK_FILE = "instance.lock"

# KEYS[1] the lease hash, KEYS[2] the epoch counter. ARGV: owner, deployment_id, host,
# home, pid, ttl_ms, now. Taken: {1, epoch}; held by someone: {0, field, value, ...}.
# A lease held in this very home on this host is taken over at once: the caller holds
# the home's lock, so the bot that holds the lease is dead (a crash, a SIGKILL) and need
# not be waited out for a whole TTL.
_ACQUIRE = """
local held = redis.call('hgetall', KEYS[1])
if #held > 0 then
  local fields = {}
  for i = 1, #held, 2 do fields[held[i]] = held[i + 1] end
  if not (fields['deployment_id'] == ARGV[2] and fields['host'] == ARGV[3]
          and fields['home'] == ARGV[4]) then
    return {0, unpack(held)}
  end
  redis.call('del', KEYS[1])
end
local epoch = redis.call('incr', KEYS[2])
redis.call('hset', KEYS[1], 'owner', ARGV[1], 'deployment_id', ARGV[2], 'host', ARGV[3],
  'home', ARGV[4], 'pid', ARGV[5], 'epoch', epoch, 'since', ARGV[7])
redis.call('pexpire', KEYS[1], ARGV[6])
return {1, epoch}
"""

# ARGV: owner, epoch, ttl_ms, deployment_id, host, home, pid, now. 1: still ours (the TTL
# starts again); 0: another instance took it. A lease that vanished (it expired while we
# were slow, or Redis restarted empty) is ours again only if no one took it since.
_RENEW = """
local owner = redis.call('hget', KEYS[1], 'owner')
if owner == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[3])
  return 1
end
if owner then return 0 end
local last = tonumber(redis.call('get', KEYS[2]) or '0')
if last > tonumber(ARGV[2]) then return 0 end
redis.call('set', KEYS[2], ARGV[2])
redis.call('hset', KEYS[1], 'owner', ARGV[1], 'deployment_id', ARGV[4], 'host', ARGV[5],
  'home', ARGV[6], 'pid', ARGV[7], 'epoch', ARGV[2], 'since', ARGV[8])
redis.call('pexpire', KEYS[1], ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('hget', KEYS[1], 'owner') == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_key(name: str) -> str:
    """The instance lease of deployment `name` (every key of it lives under `lunara:<name>:`)."""
    return MirrorKeys.for_name(name).instance


class InstanceConflict(ConfigError):
    """Another deployment (another database) holds the lease of this name: exit 6."""


class LeaseLost(BlueprintError):
    """Another instance of this deployment took the lease: this one must stop acting."""


@dataclass(frozen=True)
class Holder:
    """Who holds the lease, as the lease hash says."""

    deployment_id: str
    host: str
    home: str
    pid: int
    epoch: int

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Holder:
        pid = fields.get("pid", "0")
        epoch = fields.get("epoch", "0")
        return cls(
            deployment_id=fields.get("deployment_id", ""),
            host=fields.get("host", "?"),
            home=fields.get("home", "?"),
            pid=int(pid) if pid.isdigit() else 0,
            epoch=int(epoch) if epoch.isdigit() else 0,
        )

    def describe(self) -> str:
        return f"host {self.host}, home {self.home}, pid {self.pid}"


def conflict_message(name: str, holder: Holder) -> str:
    return (
        f"another deployment named {name!r} is running (host {holder.host}, home "
        f"{holder.home}) on this Redis, with its own database: give this one its own "
        "`name` in its manifest"
    )


class Fence:
    """The fencing epoch the Redis stop writes carry (`lunara.trading.stops`).

    `epoch` is "" when no lease is in use (no Redis): writes are not checked. With a
    lease it is "0" until the lease is held (so nothing is written on Redis meanwhile),
    then the holder's epoch, which the script compares with the lease's.
    """

    def __init__(self, key: str, epoch: str = "") -> None:
        self.key = key
        self.epoch = epoch


class StaleEpoch(RedisError):
    """Redis refused a write: this instance's epoch is not the lease's any more."""


STALE_EPOCH_REPLY = "LUNARA_STALE_EPOCH"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class HomeLock:
    """The exclusive lock on `instance.lock` in the home; the kernel frees it on death."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_take(self) -> bool:
        self._fd = try_exclusive_lock(self.path)
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class InstanceLease:
    """This bot's claim to be the one live instance of its deployment."""

    def __init__(
        self,
        *,
        name: str,
        deployment_id: str,
        home: Path,
        redis: Any = None,
        host: str | None = None,
        pid: int | None = None,
        ttl_s: float = TTL_S,
        renew_every_s: float = RENEW_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.deployment_id = deployment_id
        self.home = home
        self.redis = redis
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s
        self.safe_for_s = ttl_s * 2 / 3
        self._clock = clock
        self.key = lease_key(name)
        self.epoch_key = f"{self.key}:epoch"
        self.fence = Fence(self.key, "" if redis is None else "0")
        self.home_lock = HomeLock(home)
        self._owner = secrets.token_hex(16)
        self.epoch: int | None = None  # held in Redis with this epoch
        self.heard_at: float | None = None  # when Redis last confirmed it (or was down)
        self.redis_down = False
        self.standby_for: Holder | None = None  # who holds it while this one waits
        self.lost = asyncio.Event()
        self.lost_to: Holder | None = None

    # -- taking it ---------------------------------------------------------------

    async def _call(self, script: str, *args: Any) -> Any:
        return await asyncio.wait_for(
            self.redis.eval(script, 2, self.key, self.epoch_key, *args), REDIS_CALL_TIMEOUT_S
        )

    def _fields(self) -> tuple[str, str, str, str]:
        return self.deployment_id, self.host, str(self.home), str(self.pid)

    async def try_redis(self) -> Holder | None:
        """Take the Redis lease if free: None when it is ours now, else who holds it.

        Raises InstanceConflict when another deployment holds it; RedisError, OSError or
        TimeoutError when Redis does not answer."""
        ttl_ms = int(self.ttl_s * 1000)
        reply = await self._call(
            _ACQUIRE, self._owner, *self._fields(), ttl_ms, f"{time.time():.3f}"
        )
        if int(reply[0]) == 1:
            self._held(int(reply[1]))
            return None
        holder = Holder.from_fields(_pairs(list(reply[1:])))
        if holder.deployment_id != self.deployment_id:
            raise InstanceConflict(conflict_message(self.name, holder))
        return holder

    def _held(self, epoch: int) -> None:
        self.epoch = epoch
        self.fence.epoch = str(epoch)
        self.heard_at = self._clock()
        self.redis_down = False
        self.standby_for = None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this instance may run (True), or `stop` is set (False).

        The home's lock first, then the Redis lease; while either is held by another
        instance of the deployment, `standby_for` names it. Redis not answering does not
        hold the bot back: it runs on the home's lock and the keeper takes the Redis lease
        later."""
        told = False
        while not stop.is_set():
            if not self.home_lock.held and not self.home_lock.try_take():
                self.standby_for = Holder(self.deployment_id, self.host, str(self.home), 0, 0)
            elif self.redis is None:
                self.standby_for = None
                self.heard_at = self._clock()
                return True
            else:
                try:
                    holder = await self.try_redis()
                except (RedisError, OSError, TimeoutError) as error:
                    self._went_down(error)
                    self.standby_for = None
                    return True
                if holder is None:
                    logger.info("instance lease taken (epoch %d): this instance is active",
                                self.epoch)  # fmt: skip
                    return True
                self.standby_for = holder
                await self._say_waiting()
            if not told:
                told = True
                logger.warning("standby: another instance of this deployment is active (%s); "
                               "waiting to take over", self.describe_holder())  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STANDBY_RETRY_S)
        return False

    async def _say_waiting(self) -> None:
        """Name this standby where the active instance's `status` finds it (short TTL)."""
        key = MirrorKeys.for_name(self.name).standby
        fields = {"host": self.host, "home": str(self.home), "pid": str(self.pid)}
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, int(STANDBY_SEEN_S * 1000))
            await asyncio.wait_for(pipe.execute(), REDIS_CALL_TIMEOUT_S)

    def describe_holder(self) -> str:
        holder = self.standby_for
        if holder is None:
            return "no one"
        if holder.pid == 0:
            return f"another bot holds {self.home_lock.path}"
        return holder.describe()

    def _went_down(self, error: BaseException) -> None:
        # Info, not a warning: the outage itself is warned of once, by the stop store.
        if not self.redis_down:
            logger.info(
                "instance lease: Redis does not answer (%s); this instance holds the home's "
                "lock (%s) and takes the lease when Redis answers",
                type(error).__name__,
                self.home_lock.path,
            )
        self.redis_down = True
        self.heard_at = self._clock()

    # -- keeping it --------------------------------------------------------------

    async def renew_once(self) -> None:
        """Renew (or, after an outage, take) the Redis lease; LeaseLost when another
        instance has it, InstanceConflict when another deployment has it."""
        if self.redis is None:
            self.heard_at = self._clock()
            return
        try:
            if self.epoch is None:
                holder = await self.try_redis()
                if holder is not None:
                    self._lose(holder)
                logger.info("Redis answers: instance lease taken (epoch %s)", self.epoch)
                return
            renewed = await self._call(
                _RENEW,
                self._owner,
                self.epoch,
                int(self.ttl_s * 1000),
                *self._fields(),
                f"{time.time():.3f}",
            )
        except (RedisError, OSError, TimeoutError) as error:
            self._went_down(error)
            return
        if not int(renewed):
            self._lose(await self.holder())
        if self.redis_down:
            logger.info("Redis answers again: instance lease renewed (epoch %s)", self.epoch)
        self.redis_down = False
        self.heard_at = self._clock()

    def _lose(self, holder: Holder | None) -> None:
        self.lost_to = holder
        self.fence.epoch = "0"
        self.lost.set()
        who = "another instance" if holder is None else holder.describe()
        raise LeaseLost(f"the instance lease was taken by {who}: this instance stops acting")

    async def holder(self) -> Holder | None:
        """Who holds the lease now (None: no one, or Redis did not say)."""
        if self.redis is None:
            return None
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            raw = await asyncio.wait_for(self.redis.hgetall(self.key), REDIS_CALL_TIMEOUT_S)
            if raw:
                return Holder.from_fields({_text(k): _text(v) for k, v in raw.items()})
        return None

    def may_act(self) -> bool:
        """Whether this instance may place an order, move a stop or send a message now:
        it holds the lease and has heard from Redis (or learnt it is down) recently. A
        holder that was paused past that waits for its next renewal to say."""
        if self.lost.is_set() or self.heard_at is None:
            return False
        return self._clock() - self.heard_at < self.safe_for_s

    def check(self) -> None:
        """LeaseLost unless `may_act` (for the order path)."""
        if not self.may_act():
            raise LeaseLost(
                "this instance has not confirmed its instance lease within "
                f"{self.safe_for_s:g} s (or lost it): no order is placed"
            )

    async def release(self) -> None:
        if self.redis is not None and self.epoch is not None and not self.lost.is_set():
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._call(_RELEASE, self._owner)
        self.epoch = None
        self.home_lock.release()


class LeaseKeeper:
    """The runtime Service that keeps the lease: renews it every `renew_every_s`, and ends
    the bot's run when it is lost (the bot exits; restarted, it waits as standby)."""

    name = "instance-lease"

    def __init__(self, lease: InstanceLease, on_lost: Callable[[BlueprintError], None]) -> None:
        self.lease = lease
        self.on_lost = on_lost

    async def run(self, stop: asyncio.Event) -> None:
        # Not released here: the bot's other services may still finish orders under
        # way after the stop; the bot releases the lease once they are closed.
        lease = self.lease
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), lease.renew_every_s)
            if stop.is_set():
                return
            try:
                await lease.renew_once()
            except (LeaseLost, InstanceConflict) as error:
                logger.error("%s", error.message)
                self.on_lost(error)
                stop.set()
                return


class Standby:
    """The runtime Service while the bot waits for the lease: it reports `standby` (and
    who holds the lease) in the heartbeat, and ends once the lease is ours."""

    name = "standby"

    def __init__(self, lease: InstanceLease) -> None:
        self.lease = lease
        self.acquired = False
        self.refused: InstanceConflict | None = None
        # Never set: a bot that waits for the lease is not up (`start --wait` waits on).
        self.ready = asyncio.Event()

    @property
    def standby_of(self) -> str | None:
        return None if self.lease.standby_for is None else self.lease.describe_holder()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            self.acquired = await self.lease.acquire(stop)
        except InstanceConflict as error:
            self.refused = error
