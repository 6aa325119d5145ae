"""Where trailing stops live between ticks: Redis (hot) checkpointed to SQLite
(``redis``), or SQLite alone (``sqlite``); what every store holds and keeps (``model``);
what backups and restores read and clear (``backup``)."""

from __future__ import annotations

import aiosqlite
from redis.asyncio import Redis

from lunara.instance import Fence, StaleEpoch
from lunara.trading.stops.backup import clear_live_stops, read_live_stops, save_newer_stops
from lunara.trading.stops.model import (
    CHECKPOINT_INTERVAL_S,
    STORE_NAME,
    Advance,
    CorruptStopState,
    StopStore,
    TrackedStop,
    TriggeredStop,
)
from lunara.trading.stops.redis import (
    MAX_POSITIONS_PER_CALL,
    REDIS_OUTAGE,
    REDIS_RETRY_S,
    RedisStopStore,
    stop_key_prefix,
)
from lunara.trading.stops.sqlite import SqliteStopStore


def make_stop_store(
    *, name: str, db: aiosqlite.Connection, redis: Redis | None = None, fence: Fence | None = None
) -> StopStore:
    """Redis-backed when a client is given (``REDIS_URL`` set), SQLite alone otherwise;
    ``fence``: the instance lease's epoch every Redis write is checked against."""
    if redis is None:
        return SqliteStopStore(db)
    return RedisStopStore(redis, db, name=name, fence=fence)


__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "MAX_POSITIONS_PER_CALL",
    "REDIS_OUTAGE",
    "REDIS_RETRY_S",
    "STORE_NAME",
    "Advance",
    "CorruptStopState",
    "RedisStopStore",
    "SqliteStopStore",
    "StaleEpoch",
    "StopStore",
    "TrackedStop",
    "TriggeredStop",
    "clear_live_stops",
    "make_stop_store",
    "read_live_stops",
    "save_newer_stops",
    "stop_key_prefix",
]
