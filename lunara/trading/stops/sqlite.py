"""Stops in SQLite: the ``trailing_stops`` table, its row codec, and the store that keeps
stops there alone (no Redis), writing each tick's changes through at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from lunara.storage.database import transaction
from lunara.trading.stops.model import Advance, StopStore, Tick, TrackedStop, advance_held
from lunara.trading.trailing import StopState

TABLE = "trailing_stops"
_COLUMNS = (
    "position_id",
    "user_id",
    "symbol",
    "entry_price",
    "peak_price",
    "stop_price",
    "activated",
    "updated_at",
)
_UPSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT(position_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[1:])
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}"

Row = tuple[int, int, str, float, float, float, int, float]


def _row(tracked: TrackedStop) -> Row:
    state = tracked.state
    return (
        tracked.position_id,
        tracked.user_id,
        tracked.symbol,
        state.entry_price,
        state.peak_price,
        state.stop_price,
        int(state.activated),
        state.updated_at,
    )


def _from_row(row: Sequence[Any]) -> TrackedStop:
    position_id, user_id, symbol, entry, peak, stop, activated, updated_at = row
    return TrackedStop(
        position_id=int(position_id),
        user_id=int(user_id),
        symbol=str(symbol),
        state=StopState(
            entry_price=float(entry),
            peak_price=float(peak),
            stop_price=float(stop),
            activated=bool(activated),
            updated_at=float(updated_at),
        ),
    )


class StopTable:
    """The ``trailing_stops`` table; every write is one transaction, committed on return."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        # Traders of one tick write concurrently on this connection: the writer lock
        # makes their transactions take turns (a task already inside one joins it).
        async with transaction(self._db):
            await self._db.executemany(sql, rows)

    async def upsert(self, stops: Sequence[TrackedStop]) -> None:
        await self._write(_UPSERT, [_row(stop) for stop in stops])

    async def upsert_rows(self, rows: Sequence[Row]) -> None:
        await self._write(_UPSERT, rows)

    async def delete(self, position_id: int) -> None:
        await self._write(f"DELETE FROM {TABLE} WHERE position_id = ?", [(position_id,)])

    async def load_all(self) -> dict[int, TrackedStop]:
        async with self._db.execute(_SELECT) as cursor:
            rows = await cursor.fetchall()
        return {stop.position_id: stop for stop in map(_from_row, rows)}

    async def load(self, position_id: int) -> TrackedStop | None:
        async with self._db.execute(f"{_SELECT} WHERE position_id = ?", (position_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _from_row(row)


class SqliteStopStore(StopStore):
    """Stops in SQLite alone (no Redis): each tick's changes are written through at once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._table = StopTable(db)
        self._tracked: dict[int, TrackedStop] = {}
        self._round_trips = 0

    @property
    def round_trips(self) -> int:
        """Transactions written; reads are local to the process and not counted."""
        return self._round_trips

    def tracked(self) -> list[TrackedStop]:
        return [self._tracked[position_id] for position_id in sorted(self._tracked)]

    def symbols(self) -> set[str]:
        return {stop.symbol for stop in self._tracked.values()}

    async def add(self, position_id: int, user_id: int, symbol: str, state: StopState) -> None:
        stop = TrackedStop(position_id, user_id, symbol, state)
        self._round_trips += 1
        await self._table.upsert([stop])
        self._tracked[position_id] = stop

    async def remove(self, position_id: int) -> None:
        self._tracked.pop(position_id, None)
        self._round_trips += 1
        await self._table.delete(position_id)

    async def get(self, position_id: int) -> StopState | None:
        stop = await self._table.load(position_id)
        return None if stop is None else stop.state

    async def _advance(self, tick: Tick) -> Advance:
        moves = advance_held(self._tracked, tick)
        changed = [
            (before, TrackedStop(before.position_id, before.user_id, before.symbol, state))
            for before, state in moves.changed
        ]
        if changed:
            self._round_trips += 1
            await self._table.upsert([after for _, after in changed])
            for before, after in changed:
                # Kept in memory only once durable; a concurrent remove/add wins.
                if self._tracked.get(before.position_id) is before:
                    self._tracked[before.position_id] = after
        return Advance(moves.positions, moves.triggered)

    async def checkpoint(self) -> int:
        """Nothing is pending: every change was written when it happened."""
        return 0

    async def reconcile(self) -> int:
        self._tracked = await self._table.load_all()
        return len(self._tracked)
