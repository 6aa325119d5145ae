"""Pieces the Binance-facing trading tests share: a clock that passes only when slept on,
and an order path over a fresh SQLite database."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.orders import OrderPath
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams

TRADER = 5


async def notices_to(db: aiosqlite.Connection, user_id: int) -> list[str]:
    """The texts the outbox holds for `user_id` (queued or sent), oldest first: where a
    stop's exit notice is written, in the exit's own transaction."""
    async with db.execute(
        "SELECT text FROM outbox WHERE chat_id = ? AND text IS NOT NULL ORDER BY id", (user_id,)
    ) as cursor:
        return [str(row[0]) for row in await cursor.fetchall()]


class FakeClock:
    """Time that passes only when someone sleeps: waits are observed, not endured."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def order_path(
    tmp_path: Path,
) -> tuple[aiosqlite.Connection, aiosqlite.Connection, OrderPath]:
    """An order path for trader 5 (registered, live) with stops in SQLite; the caller
    closes both connections."""
    db = await open_database(tmp_path / "lunara.db")
    stop_db = await open_database(tmp_path / "lunara.db")
    await users.register(db, TRADER, "live")

    async def params(user_id: int) -> TrailingParams:
        return TrailingParams(stoploss=-0.05, trailing_stop=True)

    return db, stop_db, OrderPath(db, SqliteStopStore(stop_db), default_stop_params=params)
