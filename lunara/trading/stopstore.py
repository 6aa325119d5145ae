"""Where trailing stops live between ticks: Redis (hot) checkpointed to SQLite, or SQLite alone.

With Redis, every tick advances the stops of *all* positions in one Lua script call
(``EVALSHA``), so the round trips per tick do not grow with the number of positions. The
script applies exactly the rules of ``trailing.advance`` on the same IEEE doubles, so a
stop computed live equals the one the pure function computes, bit for bit.

A batch is split into calls of at most ``MAX_POSITIONS_PER_CALL`` positions: a script
blocks Redis while it runs, and 5,000 positions keep that to a few milliseconds so the
ledger mirror and other clients are not held up. Up to that size a tick costs one round
trip; beyond it, one per 5,000 positions.

Redis holds the live state; ``checkpoint()`` copies the stops that changed since the last
checkpoint into the ``trailing_stops`` table in one transaction. The executor calls it
at least every ``CHECKPOINT_INTERVAL_S`` seconds, so the checkpoint lag is at most 5 s:
if Redis loses its data, a stop can fall back to where it stood at most 5 s earlier,
never below the initial stop (stops only move up). ``add`` and ``remove`` write both
sides at once, so a position is never lost or resurrected by a checkpoint gap.

On start ``reconcile()`` loads both sides and keeps, per position, the state with the
newest ``updated_at`` (Redis on a tie: it is written first), then writes the winners to
whichever side differs.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiosqlite
from redis.asyncio import Redis
from redis.exceptions import NoScriptError
from redis.typing import EncodableT, FieldT

from lunara.trading.trailing import StopState, TrailingParams, advance, is_triggered

logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 5.0
"""The executor checkpoints at least this often: SQLite lags Redis by at most 5 s."""

MAX_POSITIONS_PER_CALL = 5000
"""Positions advanced per Lua call; bounds how long one call blocks Redis."""

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

_STATUS_OK = "ok"
_NO_POSITIVE = "-"

# Mirrors trailing.advance operation for operation (same order, same doubles); numbers
# travel as round-trip exact text: Python's repr in, "%.17g" out. Lua's own number to
# string conversion keeps only 14 digits, so every stored number is formatted here.
#
# KEYS: one hash per position. ARGV[1]: now. ARGV[2]: six space-separated fields per
# position: price, stoploss, trailing_stop (1|0), trailing_stop_positive ("-" for none),
# offset, trailing_only_offset_is_reached (1|0). The reply is one line per position,
# "ok peak stop activated updated_at triggered" or "missing". Packing arguments and
# reply into single strings keeps encoding and RESP parsing off the client's CPU: a
# nested reply of six items per position costs more to parse than the script to run.
ADVANCE_SCRIPT = """
local now = ARGV[1]
local fields = {}
for token in string.gmatch(ARGV[2], '%S+') do fields[#fields + 1] = token end
local lines = {}
for i = 1, #KEYS do
  local base = (i - 1) * 6
  local price = tonumber(fields[base + 1])
  local stoploss = tonumber(fields[base + 2])
  local trailing = fields[base + 3] == '1'
  local positive = tonumber(fields[base + 4])
  local offset = tonumber(fields[base + 5])
  local only_offset = fields[base + 6] == '1'
  local row = redis.call('HMGET', KEYS[i],
    'entry_price', 'peak_price', 'stop_price', 'activated', 'updated_at')
  local entry = tonumber(row[1])
  local old_peak = tonumber(row[2])
  local old_stop = tonumber(row[3])
  if not (entry and old_peak and old_stop and row[5]) then
    lines[i] = 'missing'
  else
    local old_activated = row[4] == '1'
    local peak = old_peak
    if price > old_peak then peak = price end
    local activated = old_activated
    local candidate = old_stop
    if trailing then
      local threshold = entry * (1.0 + offset)
      if peak > threshold then activated = true end
      if activated and positive ~= nil then
        candidate = peak * (1.0 - positive)
      elseif (not only_offset) or peak >= threshold then
        candidate = peak * (1.0 + stoploss)
      end
    end
    local stop = old_stop
    if candidate > old_stop then stop = candidate end
    local flag = '0'
    if activated then flag = '1' end
    local updated_at = row[5]
    local peak_text = string.format('%.17g', peak)
    local stop_text = string.format('%.17g', stop)
    if peak ~= old_peak or stop ~= old_stop or activated ~= old_activated then
      updated_at = now
      redis.call('HSET', KEYS[i], 'peak_price', peak_text, 'stop_price', stop_text,
        'activated', flag, 'updated_at', now)
    end
    local triggered = '0'
    if price <= stop then triggered = '1' end
    lines[i] = 'ok ' .. peak_text .. ' ' .. stop_text .. ' ' .. flag .. ' ' ..
      updated_at .. ' ' .. triggered
  end
end
return table.concat(lines, '\\n')
"""
_ADVANCE_SHA = hashlib.sha1(ADVANCE_SCRIPT.encode()).hexdigest()


class CorruptStopState(ValueError):
    """A stored stop cannot be read back (hand-edited or truncated)."""


@dataclass(frozen=True)
class StopUpdate:
    """One position's stop after a tick; ``triggered`` means sell now."""

    position_id: int
    state: StopState
    triggered: bool


@dataclass(frozen=True)
class TrackedStop:
    """A position's stop together with whose position it is."""

    position_id: int
    user_id: int
    symbol: str
    state: StopState


class StopStore(Protocol):
    """What the executor needs from the stop state, whatever holds it."""

    @property
    def round_trips(self) -> int:
        """Requests sent to the backing server so far (Redis, or SQLite without Redis)."""
        ...

    def tracked(self) -> list[TrackedStop]:
        """Every position with a stop, as last seen, ordered by position id."""
        ...

    async def add(self, position_id: int, user_id: int, symbol: str, state: StopState) -> None:
        """Start (or replace) the stop of a freshly filled position; durable on return."""
        ...

    async def remove(self, position_id: int) -> None:
        """Forget a closed position on every side; a no-op for an unknown id."""
        ...

    async def advance_all(
        self,
        prices: Mapping[str, float],
        params_by_position: Mapping[int, TrailingParams],
        now: float,
    ) -> list[StopUpdate]:
        """Advance every position whose symbol has a price; one update per such position,
        ordered by position id. A priced position missing from ``params_by_position``, or
        an unusable price (0, NaN, inf), is a ``ValueError`` raised before anything moves."""
        ...

    async def get(self, position_id: int) -> StopState | None:
        """The stored state, read from the live side."""
        ...

    async def checkpoint(self) -> int:
        """Persist changed stops to SQLite in one transaction; returns how many."""
        ...

    async def reconcile(self) -> int:
        """Load and merge both sides on start (newest wins); returns positions tracked."""
        ...


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _number(value: float) -> str:
    """Shortest text that parses back to the same double, in Python and in Lua."""
    return repr(float(value))


def _row(tracked: TrackedStop) -> tuple[int, int, str, float, float, float, int, float]:
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


def _to_hash(tracked: TrackedStop) -> dict[FieldT, EncodableT]:
    state = tracked.state
    return {
        "user_id": str(tracked.user_id),
        "symbol": tracked.symbol,
        "entry_price": _number(state.entry_price),
        "peak_price": _number(state.peak_price),
        "stop_price": _number(state.stop_price),
        "activated": "1" if state.activated else "0",
        "updated_at": _number(state.updated_at),
    }


def _from_hash(position_id: int, raw: Mapping[Any, Any]) -> TrackedStop:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    try:
        tracked = TrackedStop(
            position_id=position_id,
            user_id=int(fields["user_id"]),
            symbol=fields["symbol"],
            state=StopState(
                entry_price=float(fields["entry_price"]),
                peak_price=float(fields["peak_price"]),
                stop_price=float(fields["stop_price"]),
                activated=fields["activated"] == "1",
                updated_at=float(fields["updated_at"]),
            ),
        )
    except (KeyError, ValueError) as error:
        raise CorruptStopState(f"stop of position {position_id}: {error!r}") from None
    state = tracked.state
    if not all(
        math.isfinite(value)
        for value in (state.entry_price, state.peak_price, state.stop_price, state.updated_at)
    ):
        raise CorruptStopState(f"stop of position {position_id} holds a non-finite number")
    return tracked


def _script_fields(price: float, params: TrailingParams) -> str:
    positive = params.trailing_stop_positive
    return " ".join(
        (
            _number(price),
            _number(params.stoploss),
            "1" if params.trailing_stop else "0",
            _NO_POSITIVE if positive is None else _number(positive),
            _number(params.trailing_stop_positive_offset),
            "1" if params.trailing_only_offset_is_reached else "0",
        )
    )


def _newest(live: TrackedStop | None, saved: TrackedStop | None) -> TrackedStop:
    if live is None:
        assert saved is not None
        return saved
    if saved is None or live.state.updated_at >= saved.state.updated_at:
        return live
    return saved


def _escape_glob(text: str) -> str:
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


@dataclass(frozen=True)
class _Step:
    tracked: TrackedStop
    price: float
    params: TrailingParams


def _plan(
    tracked: Mapping[int, TrackedStop],
    prices: Mapping[str, float],
    params_by_position: Mapping[int, TrailingParams],
) -> list[_Step]:
    """The positions a tick moves, validated before any I/O so a bad input changes nothing."""
    steps: list[_Step] = []
    for position_id in sorted(tracked):
        entry = tracked[position_id]
        if entry.symbol not in prices:
            continue
        price = prices[entry.symbol]
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValueError(f"price of {entry.symbol} must be a number, got {price!r}")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price of {entry.symbol} must be positive and finite, got {price!r}")
        params = params_by_position.get(position_id)
        if params is None:
            raise ValueError(f"no trailing-stop settings for position {position_id}")
        steps.append(_Step(entry, float(price), params))
    return steps


class _StopTable:
    """The ``trailing_stops`` table; every write is one transaction, committed on return."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        began = not self._db.in_transaction
        if began:
            await self._db.execute("BEGIN")
        try:
            await self._db.executemany(sql, rows)
        except BaseException:
            if began:
                await self._db.rollback()
            raise
        await self._db.commit()

    async def upsert(self, stops: Sequence[TrackedStop]) -> None:
        await self._write(_UPSERT, [_row(stop) for stop in stops])

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


class RedisStopStore:
    """Live stops in Redis hashes ``lunara:<name>:stop:<position_id>``, checkpointed to SQLite."""

    def __init__(
        self,
        redis: Redis,
        db: aiosqlite.Connection,
        *,
        name: str,
        max_positions_per_call: int = MAX_POSITIONS_PER_CALL,
    ) -> None:
        if max_positions_per_call < 1:
            raise ValueError("max_positions_per_call must be at least 1")
        self._redis = redis
        self._table = _StopTable(db)
        self._prefix = f"lunara:{name}:stop:"
        self._chunk = max_positions_per_call
        self._tracked: dict[int, TrackedStop] = {}
        self._dirty: set[int] = set()
        self._round_trips = 0

    @property
    def round_trips(self) -> int:
        return self._round_trips

    def key(self, position_id: int) -> str:
        return f"{self._prefix}{position_id}"

    def tracked(self) -> list[TrackedStop]:
        return [self._tracked[position_id] for position_id in sorted(self._tracked)]

    async def _call(self, reply: Awaitable[Any] | Any) -> Any:
        self._round_trips += 1
        return await cast(Awaitable[Any], reply)

    async def add(self, position_id: int, user_id: int, symbol: str, state: StopState) -> None:
        stop = TrackedStop(position_id, user_id, symbol, state)
        await self._call(self._redis.hset(self.key(position_id), mapping=_to_hash(stop)))
        await self._table.upsert([stop])
        self._tracked[position_id] = stop
        self._dirty.discard(position_id)

    async def remove(self, position_id: int) -> None:
        self._tracked.pop(position_id, None)
        self._dirty.discard(position_id)
        await self._call(self._redis.delete(self.key(position_id)))
        await self._table.delete(position_id)

    async def get(self, position_id: int) -> StopState | None:
        raw = await self._call(self._redis.hgetall(self.key(position_id)))
        return _from_hash(position_id, raw).state if raw else None

    async def _evaluate(self, keys: list[str], args: list[str]) -> list[str]:
        try:
            reply = await self._call(self._redis.evalsha(_ADVANCE_SHA, len(keys), *keys, *args))
        except NoScriptError:
            # First call since Redis started (or its script cache was flushed).
            await self._call(self._redis.script_load(ADVANCE_SCRIPT))
            reply = await self._call(self._redis.evalsha(_ADVANCE_SHA, len(keys), *keys, *args))
        return _text(reply).split("\n")

    async def advance_all(
        self,
        prices: Mapping[str, float],
        params_by_position: Mapping[int, TrailingParams],
        now: float,
    ) -> list[StopUpdate]:
        steps = _plan(self._tracked, prices, params_by_position)
        updates: list[StopUpdate] = []
        lost: list[_Step] = []
        for start in range(0, len(steps), self._chunk):
            chunk = steps[start : start + self._chunk]
            keys = [self.key(step.tracked.position_id) for step in chunk]
            packed = " ".join(_script_fields(step.price, step.params) for step in chunk)
            lines = await self._evaluate(keys, [_number(now), packed])
            for step, line in zip(chunk, lines, strict=True):
                fields = line.split(" ")
                if fields[0] != _STATUS_OK:
                    lost.append(step)
                    continue
                _, peak, stop, activated, updated_at, triggered = fields
                state = StopState(
                    entry_price=step.tracked.state.entry_price,
                    peak_price=float(peak),
                    stop_price=float(stop),
                    activated=activated == "1",
                    updated_at=float(updated_at),
                )
                self._remember(step.tracked, state)
                updates.append(StopUpdate(step.tracked.position_id, state, triggered == "1"))
        if lost:
            updates.extend(await self._restore(lost, now))
            updates.sort(key=lambda update: update.position_id)
        return updates

    def _remember(self, before: TrackedStop, state: StopState) -> None:
        # A position removed or replaced while the call was in flight keeps its new value.
        if self._tracked.get(before.position_id) is not before or state == before.state:
            return
        self._tracked[before.position_id] = TrackedStop(
            before.position_id, before.user_id, before.symbol, state
        )
        self._dirty.add(before.position_id)

    async def _restore(self, lost: list[_Step], now: float) -> list[StopUpdate]:
        """Rewrite stops Redis no longer holds (flushed, evicted) from the last known state.

        The last known state is at least as new as the SQLite checkpoint, so nothing is
        lost; the tick is applied here with the same rules the script applies.
        """
        logger.warning(
            "%d trailing stop(s) missing from Redis; restoring from the last known state",
            len(lost),
        )
        updates: list[StopUpdate] = []
        pipe = self._redis.pipeline(transaction=False)
        for step in lost:
            if self._tracked.get(step.tracked.position_id) is not step.tracked:
                continue
            state = advance(step.tracked.state, step.price, step.params, now)
            restored = TrackedStop(
                step.tracked.position_id, step.tracked.user_id, step.tracked.symbol, state
            )
            pipe.hset(self.key(restored.position_id), mapping=_to_hash(restored))
            self._tracked[restored.position_id] = restored
            self._dirty.add(restored.position_id)
            updates.append(StopUpdate(restored.position_id, state, is_triggered(state, step.price)))
        if updates:
            await self._call(pipe.execute())
        return updates

    async def checkpoint(self) -> int:
        stops = [self._tracked[i] for i in sorted(self._dirty) if i in self._tracked]
        self._dirty.intersection_update(self._tracked)
        if not stops:
            return 0
        await self._table.upsert(stops)
        for stop in stops:
            # Changed again while the transaction ran: stays dirty for the next checkpoint.
            if self._tracked.get(stop.position_id) is stop:
                self._dirty.discard(stop.position_id)
        return len(stops)

    async def _load_live(self) -> dict[int, TrackedStop]:
        keys: list[tuple[int, str]] = []
        pattern = _escape_glob(self._prefix) + "*"
        cursor: int = 0
        while True:
            cursor, batch = await self._call(self._redis.scan(cursor, match=pattern, count=1000))
            for raw_key in batch:
                key = _text(raw_key)
                suffix = key[len(self._prefix) :]
                if suffix.isdigit():
                    keys.append((int(suffix), key))
            if int(cursor) == 0:
                break
        if not keys:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for _, key in keys:
            pipe.hgetall(key)
        replies = await self._call(pipe.execute())
        live: dict[int, TrackedStop] = {}
        for (position_id, _), raw in zip(keys, replies, strict=True):
            if not raw:
                continue
            try:
                live[position_id] = _from_hash(position_id, raw)
            except CorruptStopState as error:
                logger.warning("ignoring unreadable Redis copy: %s", error)
        return live

    async def reconcile(self) -> int:
        live = await self._load_live()
        saved = await self._table.load_all()
        winners = {
            position_id: _newest(live.get(position_id), saved.get(position_id))
            for position_id in live.keys() | saved.keys()
        }
        to_redis = [stop for i, stop in winners.items() if live.get(i) != stop]
        to_sqlite = [stop for i, stop in winners.items() if saved.get(i) != stop]
        if to_redis:
            pipe = self._redis.pipeline(transaction=False)
            for stop in to_redis:
                pipe.hset(self.key(stop.position_id), mapping=_to_hash(stop))
            await self._call(pipe.execute())
        if to_sqlite:
            await self._table.upsert(sorted(to_sqlite, key=lambda stop: stop.position_id))
        self._tracked = winners
        self._dirty.clear()
        if to_redis or to_sqlite:
            logger.info(
                "trailing stops reconciled: %d restored to Redis, %d saved to SQLite",
                len(to_redis),
                len(to_sqlite),
            )
        return len(winners)


class SqliteStopStore:
    """Stops in SQLite alone (no Redis): each tick's changes are written through at once."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._table = _StopTable(db)
        self._tracked: dict[int, TrackedStop] = {}
        self._round_trips = 0

    @property
    def round_trips(self) -> int:
        """Transactions written; reads are local to the process and not counted."""
        return self._round_trips

    def tracked(self) -> list[TrackedStop]:
        return [self._tracked[position_id] for position_id in sorted(self._tracked)]

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

    async def advance_all(
        self,
        prices: Mapping[str, float],
        params_by_position: Mapping[int, TrailingParams],
        now: float,
    ) -> list[StopUpdate]:
        steps = _plan(self._tracked, prices, params_by_position)
        updates: list[StopUpdate] = []
        changed: list[tuple[TrackedStop, TrackedStop]] = []
        for step in steps:
            before = step.tracked
            state = advance(before.state, step.price, step.params, now)
            if state != before.state:
                after = TrackedStop(before.position_id, before.user_id, before.symbol, state)
                changed.append((before, after))
            updates.append(StopUpdate(before.position_id, state, is_triggered(state, step.price)))
        if changed:
            self._round_trips += 1
            await self._table.upsert([after for _, after in changed])
            for before, after in changed:
                # Kept in memory only once durable; a concurrent remove/add wins.
                if self._tracked.get(before.position_id) is before:
                    self._tracked[before.position_id] = after
        return updates

    async def checkpoint(self) -> int:
        """Nothing is pending: every change was written when it happened."""
        return 0

    async def reconcile(self) -> int:
        self._tracked = await self._table.load_all()
        return len(self._tracked)


def make_stop_store(
    *, name: str, db: aiosqlite.Connection, redis: Redis | None = None
) -> StopStore:
    """Redis-backed when a client is given (``REDIS_URL`` set), SQLite alone otherwise."""
    if redis is None:
        return SqliteStopStore(db)
    return RedisStopStore(redis, db, name=name)
