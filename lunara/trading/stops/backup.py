"""The stops as backups and restores see them (`lunara backup|restore`), which run beside
the bot, not in it: read or clear what Redis holds for one deployment (its manifest's
name; never another's), save what is newer than the checkpoint."""

from __future__ import annotations

from collections.abc import Mapping

import aiosqlite
from redis.asyncio import Redis

from lunara.trading.stops.model import TrackedStop, newest
from lunara.trading.stops.redis import await_reply, live_keys, read_live, stop_key_prefix
from lunara.trading.stops.sqlite import StopTable


async def read_live_stops(redis: Redis, *, name: str) -> dict[int, TrackedStop]:
    """Every stop Redis holds for the deployment ``name``, read as ``reconcile`` reads
    them (unreadable ones skipped).

    Not one atomic read: each hash is read whole, and a stop that moves meanwhile is
    taken at one of its states, which the newest-wins merge handles like any other.
    """
    return await read_live(redis, stop_key_prefix(name), await_reply)


async def clear_live_stops(redis: Redis, *, name: str) -> int:
    """Delete every stop hash of the deployment ``name`` (another's stay), so its next
    start reloads the stops from SQLite alone.

    After a restore the restored checkpoint must win; left in Redis, the stops of the
    replaced database would be newer and ``reconcile`` would keep them.
    """
    keys = [key for _, key in await live_keys(redis, stop_key_prefix(name), await_reply)]
    deleted = 0
    for start in range(0, len(keys), 1000):
        deleted += int(await await_reply(redis.delete(*keys[start : start + 1000])))
    return deleted


async def save_newer_stops(db: aiosqlite.Connection, live: Mapping[int, TrackedStop]) -> int:
    """Write each live stop newer than its checkpoint (or without one) into ``trailing_stops``.

    The rule is ``reconcile``'s (newest ``updated_at`` wins, the live copy on a tie), in
    one transaction; returns how many rows were written.
    """
    table = StopTable(db)
    saved = await table.load_all()
    newer = [
        stop
        for position_id, stop in sorted(live.items())
        if stop != saved.get(position_id) and newest(stop, saved.get(position_id)) is stop
    ]
    if newer:
        await table.upsert(newer)
    return len(newer)
