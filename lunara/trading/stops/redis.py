"""Live stops in Redis, checkpointed to SQLite: ``RedisStopStore``, its hash codec, and
the two Lua scripts it runs (``advance.lua``, ``fenced_write.lua``, package data loaded
with ``importlib.resources``).

Every tick advances the stops of *all* positions in one script call (``EVALSHA``), so
the round trips per tick do not grow with the number of positions. The script applies
exactly the rules of ``trailing.advance`` on the same IEEE doubles, so a stop computed
live equals the one the pure function computes, bit for bit.

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

Redis down (at start, or while running) never stops a stop: the store advances the
stops it holds in memory with the same ``trailing.advance`` and writes every change
through to SQLite, as the SQLite-only store does, and warns once. It asks Redis again
every ``REDIS_RETRY_S``; when Redis answers, the stops in memory (the truth while it was
away) are written back to it, hashes of positions closed meanwhile are deleted, and the
Lua script takes over again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, cast

import aiosqlite
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from lunara.instance import STALE_EPOCH_REPLY, Fence, StaleEpoch, lease_key
from lunara.trading.stops.model import (
    Advance,
    CorruptStopState,
    Moves,
    StopStore,
    Tick,
    TrackedStop,
    TriggeredStop,
    advance_held,
    newest,
    params_of,
    usable_prices,
)
from lunara.trading.stops.sqlite import Row, StopTable
from lunara.trading.trailing import StopState, TrailingParams

logger = logging.getLogger(__name__)

REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError)
"""Redis is down or restarting: what the store rides out instead of failing an order."""

REDIS_RETRY_S = 30.0
"""While Redis is down, how often it is asked again (each try may cost a timeout)."""

MAX_POSITIONS_PER_CALL = 5000
"""Positions advanced per Lua call; bounds how long one call blocks Redis."""

_CHANGED = "changed"
_TRIGGERED = "triggered"
_MISSING = "missing"
_NO_POSITIVE = "-"


def _script(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


ADVANCE_SCRIPT = _script("advance.lua")
"""Advances every position of a call, fenced by the instance lease; its header says how
arguments and reply are packed."""
_ADVANCE_SHA = hashlib.sha1(ADVANCE_SCRIPT.encode()).hexdigest()

FENCED_WRITE_SCRIPT = _script("fenced_write.lua")
"""Every other write of stop hashes, fenced like the advance."""


def stop_key_prefix(name: str) -> str:
    """The Redis keys of a store's stops: ``lunara:<name>:stop:<position_id>``."""
    return f"lunara:{name}:stop:"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _number(value: float) -> str:
    """Shortest text that parses back to the same double, in Python and in Lua."""
    return repr(float(value))


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


def _settings_fields(params: TrailingParams) -> str:
    """One settings slot of the script: five fields, see ``ADVANCE_SCRIPT``."""
    positive = params.trailing_stop_positive
    return " ".join(
        (
            _number(params.stoploss),
            "1" if params.trailing_stop else "0",
            _NO_POSITIVE if positive is None else _number(positive),
            _number(params.trailing_stop_positive_offset),
            "1" if params.trailing_only_offset_is_reached else "0",
        )
    )


def _escape_glob(text: str) -> str:
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


@dataclass(slots=True)
class _LiveStop:
    """A stop as the Redis store keeps it between ticks. Updated in place: a tick that
    moves thousands of stops leaves no objects behind for the garbage collector to trace,
    which would otherwise make the occasional full collection land inside a tick."""

    position_id: int
    user_id: int
    symbol: str
    entry_price: float
    peak_price: float
    stop_price: float
    activated: bool
    updated_at: float

    @classmethod
    def of(cls, stop: TrackedStop) -> _LiveStop:
        state = stop.state
        return cls(
            stop.position_id,
            stop.user_id,
            stop.symbol,
            state.entry_price,
            state.peak_price,
            state.stop_price,
            state.activated,
            state.updated_at,
        )

    @property
    def state(self) -> StopState:
        return StopState(
            self.entry_price, self.peak_price, self.stop_price, self.activated, self.updated_at
        )

    def tracked(self) -> TrackedStop:
        return TrackedStop(self.position_id, self.user_id, self.symbol, self.state)

    def row(self) -> Row:
        return (
            self.position_id,
            self.user_id,
            self.symbol,
            self.entry_price,
            self.peak_price,
            self.stop_price,
            int(self.activated),
            self.updated_at,
        )

    def move(self, peak: float, stop: float, activated: bool, now: float) -> None:
        self.peak_price = peak
        self.stop_price = stop
        self.activated = activated
        self.updated_at = now


def _advance_live(held: Mapping[int, _LiveStop], tick: Tick) -> Moves[_LiveStop]:
    """The tick in Python over stops held in memory, each one that moved updated in place:
    what the store runs while Redis is down, and for stops Redis has lost."""
    moves = advance_held(held, tick)
    for live, state in moves.changed:
        live.move(state.peak_price, state.stop_price, state.activated, state.updated_at)
    return moves


@dataclass(frozen=True)
class _Roster:
    """The positions a tick sends to the script, in position-id order, with the symbol slot
    of each; rebuilt only when a position comes or goes or a symbol gains or loses its price.
    """

    priced: frozenset[str]
    position_ids: list[int]
    user_ids: list[int]
    keys: list[bytes]
    symbols: list[str]
    symbol_slots: list[int]
    users: list[int]

    @classmethod
    def of(cls, tracked: Mapping[int, _LiveStop], priced: frozenset[str], prefix: str) -> _Roster:
        symbols = sorted(priced)
        slot_of = {symbol: slot for slot, symbol in enumerate(symbols, start=1)}
        stops = [tracked[i] for i in sorted(tracked) if tracked[i].symbol in slot_of]
        return cls(
            priced=priced,
            position_ids=[stop.position_id for stop in stops],
            user_ids=[stop.user_id for stop in stops],
            keys=[f"{prefix}{stop.position_id}".encode() for stop in stops],
            symbols=symbols,
            symbol_slots=[slot_of[stop.symbol] for stop in stops],
            users=sorted({stop.user_id for stop in stops}),
        )


@dataclass(frozen=True)
class _SettingsSlots:
    """The traders' settings as the script's settings slots (one per distinct setting, not
    per trader) and each position's pair of slots, packed per call; rebuilt only when the
    roster or someone's settings change."""

    roster: _Roster
    params: tuple[TrailingParams, ...]
    settings_text: str
    slots_per_call: list[str]

    @classmethod
    def of(cls, roster: _Roster, params: tuple[TrailingParams, ...], chunk: int) -> _SettingsSlots:
        slot_of: dict[TrailingParams, int] = {}
        user_slot = {
            user_id: slot_of.setdefault(user_params, len(slot_of) + 1)
            for user_id, user_params in zip(roster.users, params, strict=True)
        }
        pairs = [
            f"{symbol_slot} {user_slot[user_id]}"
            for symbol_slot, user_id in zip(roster.symbol_slots, roster.user_ids, strict=True)
        ]
        return cls(
            roster=roster,
            params=params,
            settings_text=" ".join(map(_settings_fields, slot_of)),
            slots_per_call=[
                " ".join(pairs[start : start + chunk]) for start in range(0, len(pairs), chunk)
            ],
        )


_Call = Callable[[Any], Awaitable[Any]]


async def _fenced(reply: Awaitable[Any]) -> Any:
    """The reply, or StaleEpoch when the script refused this instance's epoch."""
    try:
        return await reply
    except ResponseError as error:
        if str(error).startswith(STALE_EPOCH_REPLY):
            raise StaleEpoch(str(error)) from None
        raise


async def await_reply(reply: Awaitable[Any] | Any) -> Any:
    """A reply awaited as it is: the call of a tool beside the bot, which counts no
    round trips."""
    return await cast(Awaitable[Any], reply)


async def live_keys(redis: Redis, prefix: str, call: _Call) -> list[tuple[int, str]]:
    """(position id, key) of every stop hash under ``prefix``, found with SCAN."""
    keys: list[tuple[int, str]] = []
    pattern = _escape_glob(prefix) + "*"
    cursor: int = 0
    while True:
        cursor, batch = await call(redis.scan(cursor, match=pattern, count=1000))
        for raw_key in batch:
            key = _text(raw_key)
            suffix = key[len(prefix) :]
            if suffix.isdigit():
                keys.append((int(suffix), key))
        if int(cursor) == 0:
            return keys


async def read_live(redis: Redis, prefix: str, call: _Call) -> dict[int, TrackedStop]:
    keys = await live_keys(redis, prefix, call)
    if not keys:
        return {}
    pipe = redis.pipeline(transaction=False)
    for _, key in keys:
        pipe.hgetall(key)
    replies = await call(pipe.execute())
    live: dict[int, TrackedStop] = {}
    for (position_id, _), raw in zip(keys, replies, strict=True):
        if not raw:
            continue
        try:
            live[position_id] = _from_hash(position_id, raw)
        except CorruptStopState as error:
            logger.warning("ignoring unreadable Redis copy: %s", error)
    return live


class RedisStopStore(StopStore):
    """Live stops in Redis hashes ``lunara:<name>:stop:<position_id>``, checkpointed to SQLite."""

    def __init__(
        self,
        redis: Redis,
        db: aiosqlite.Connection,
        *,
        name: str,
        max_positions_per_call: int = MAX_POSITIONS_PER_CALL,
        retry_s: float = REDIS_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        fence: Fence | None = None,
    ) -> None:
        if max_positions_per_call < 1:
            raise ValueError("max_positions_per_call must be at least 1")
        self._retry_s = retry_s
        self._clock = clock
        self._down_since: float | None = None  # Redis unreachable since (clock)
        self._next_try = 0.0
        self._redis = redis
        self._table = StopTable(db)
        self._prefix = stop_key_prefix(name)
        # Without a lease (tools, tests) the writes are not fenced: epoch "".
        self._fence = fence if fence is not None else Fence(lease_key(name))
        self._fenced_write: Any = None
        self._chunk = max_positions_per_call
        self._tracked: dict[int, _LiveStop] = {}
        self._dirty: set[int] = set()
        self._round_trips = 0
        # Derived from who is tracked; dropped whenever a position comes or goes.
        self._symbols: set[str] | None = None
        self._roster: _Roster | None = None
        self._settings_slots: _SettingsSlots | None = None

    @property
    def round_trips(self) -> int:
        return self._round_trips

    @property
    def redis_down(self) -> bool:
        """Stops are advanced in memory and written to SQLite until Redis answers."""
        return self._down_since is not None

    def key(self, position_id: int) -> str:
        return f"{self._prefix}{position_id}"

    async def _write(self, sets: Sequence[TrackedStop] = (), deletes: Sequence[str] = ()) -> None:
        """Write stop hashes and delete others: one pipeline without a lease, one fenced
        script with one (refused, StaleEpoch, when this instance's epoch is stale)."""
        if not sets and not deletes:
            return
        epoch = self._fence.epoch
        if not epoch:
            pipe = self._redis.pipeline(transaction=False)
            for stop in sets:
                pipe.hset(self.key(stop.position_id), mapping=_to_hash(stop))
            for key in deletes:
                pipe.delete(key)
            await self._call(pipe.execute())
            return
        keys: list[str] = [self._fence.key]
        args: list[EncodableT] = [epoch]
        for stop in sets:
            keys.append(self.key(stop.position_id))
            fields = _to_hash(stop)
            args += ["set", len(fields)]
            for name, value in fields.items():
                args += [name, value]
        for key in deletes:
            keys.append(key)
            args.append("del")
        if self._fenced_write is None:
            # EVALSHA, loading the script when Redis does not have it (redis-py's Script).
            self._fenced_write = self._redis.register_script(FENCED_WRITE_SCRIPT)
        await _fenced(self._call(self._fenced_write(keys=keys, args=args)))

    def _went_down(self, error: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "Redis unavailable (%s): trailing stops run from memory, written through to "
                "SQLite, until it answers (asked again every %.0f s)",
                type(error).__name__,
                self._retry_s,
            )
        self._next_try = now + self._retry_s

    async def _back_if_answering(self) -> bool:
        """While down, ask Redis again when due; on an answer, write the stops held in
        memory back to it. True when Redis is in use again."""
        if self._down_since is None:
            return True
        if self._clock() < self._next_try:
            return False
        try:
            stale = [
                key
                for position_id, key in await live_keys(self._redis, self._prefix, self._call)
                if position_id not in self._tracked
            ]
            await self._write([live.tracked() for live in self._tracked.values()], stale)
        except StaleEpoch:
            return False  # the instance lease is not (yet) ours: Redis stays untouched
        except REDIS_OUTAGE as error:
            self._went_down(error)
            return False
        logger.info(
            "Redis answers again after %.0f s: %d trailing stops written back, %d stale removed",
            self._clock() - self._down_since,
            len(self._tracked),
            len(stale),
        )
        self._down_since = None
        return True

    async def _advance_in_memory(self, tick: Tick) -> Advance:
        """The tick without Redis: the same rules in Python, each change written to SQLite."""
        moves = _advance_live(self._tracked, tick)
        if moves.changed:
            rows = [live.row() for live, _ in moves.changed]
            self._round_trips += 1
            await self._table.upsert_rows(rows)
            self._dirty.difference_update(row[0] for row in rows)
        return Advance(moves.positions, moves.triggered)

    def tracked(self) -> list[TrackedStop]:
        return [self._tracked[position_id].tracked() for position_id in sorted(self._tracked)]

    def symbols(self) -> set[str]:
        if self._symbols is None:
            self._symbols = {stop.symbol for stop in self._tracked.values()}
        return set(self._symbols)

    def _members_changed(self) -> None:
        self._symbols = None
        self._roster = None
        self._settings_slots = None

    async def _call(self, reply: Awaitable[Any] | Any) -> Any:
        self._round_trips += 1
        return await cast(Awaitable[Any], reply)

    async def add(self, position_id: int, user_id: int, symbol: str, state: StopState) -> None:
        # SQLite first: an order that filled always leaves its stop somewhere durable.
        stop = TrackedStop(position_id, user_id, symbol, state)
        await self._table.upsert([stop])
        self._tracked[position_id] = _LiveStop.of(stop)
        self._dirty.discard(position_id)
        self._members_changed()
        await self._write_through("stop of position %d kept in SQLite", position_id, [stop])

    async def remove(self, position_id: int) -> None:
        self._tracked.pop(position_id, None)
        self._dirty.discard(position_id)
        self._members_changed()
        await self._table.delete(position_id)
        removed = "stop of closed position %d removed from SQLite"
        await self._write_through(removed, position_id, deletes=[self.key(position_id)])

    async def _write_through(
        self,
        change: str,
        position_id: int,
        sets: Sequence[TrackedStop] = (),
        deletes: Sequence[str] = (),
    ) -> None:
        """Carry over to Redis a change of one position that SQLite already holds; when
        Redis cannot take it, log ``change`` (a format of the position id) and go on.

        While Redis is down, or when it does not answer now, nothing is lost: the stops in
        memory are written back when it answers (the hashes of closed positions deleted as
        stale), the next tick writes back a stop it finds missing, and a closed position's
        hash left behind is dropped at the next start (no open position)."""
        if self.redis_down:
            return
        try:
            await self._write(sets, deletes)
        except StaleEpoch:
            logger.error("the instance lease is not ours: %s only", change % position_id)
        except REDIS_OUTAGE as error:
            name = type(error).__name__
            logger.warning(
                "Redis unavailable (%s): %s only, until it answers", name, change % position_id
            )

    async def get(self, position_id: int) -> StopState | None:
        if self.redis_down:
            live = self._tracked.get(position_id)
            return None if live is None else live.state
        raw = await self._call(self._redis.hgetall(self.key(position_id)))
        return _from_hash(position_id, raw).state if raw else None

    async def _evaluate(self, keys: list[bytes], args: list[str]) -> list[str]:
        keys = [self._fence.key.encode(), *keys]
        args = [*args, self._fence.epoch]
        try:
            reply = await _fenced(
                self._call(self._redis.evalsha(_ADVANCE_SHA, len(keys), *keys, *args))
            )
        except NoScriptError:
            # First call since Redis started (or its script cache was flushed).
            await self._call(self._redis.script_load(ADVANCE_SCRIPT))
            reply = await _fenced(
                self._call(self._redis.evalsha(_ADVANCE_SHA, len(keys), *keys, *args))
            )
        return _text(reply).splitlines()

    def _slots(
        self, usable: Mapping[str, float], params_by_user: Mapping[int, TrailingParams]
    ) -> _SettingsSlots:
        """The script's view of who is advanced with which settings, built again only when
        that changes: most ticks reuse the last one as it is."""
        priced = frozenset(usable)
        roster = self._roster
        if roster is None or roster.priced != priced:
            roster = self._roster = _Roster.of(self._tracked, priced, self._prefix)
        params = tuple(params_of(user_id, params_by_user) for user_id in roster.users)
        slots = self._settings_slots
        if slots is None or slots.roster is not roster or slots.params != params:
            slots = self._settings_slots = _SettingsSlots.of(roster, params, self._chunk)
        return slots

    async def _advance(self, tick: Tick) -> Advance:
        if not await self._back_if_answering():
            return await self._advance_in_memory(tick)
        try:
            return await self._advance_in_redis(tick)
        except REDIS_OUTAGE as error:
            self._went_down(error)
            return await self._advance_in_memory(tick)

    async def _advance_in_redis(self, tick: Tick) -> Advance:
        usable = usable_prices(self.symbols(), tick.prices)
        slots = self._slots(usable, tick.params_by_user)
        roster = slots.roster
        # As sent: a position removed or replaced meanwhile is recognised by identity.
        sent = [self._tracked[position_id] for position_id in roster.position_ids]
        now, fee = tick.now, tick.fee_rate
        fixed_args = [
            _number(now),
            " ".join(_number(usable[symbol]) for symbol in roster.symbols),
            slots.settings_text,
        ]
        triggered: list[TriggeredStop] = []
        lost: list[_LiveStop] = []
        for call, start in enumerate(range(0, len(sent), self._chunk)):
            keys = roster.keys[start : start + self._chunk]
            call_args = [*fixed_args, slots.slots_per_call[call], _number(fee)]
            lines = await self._evaluate(keys, call_args)
            for line in lines:
                fields = line.split(" ")
                before = sent[start + int(fields[0]) - 1]
                kind = fields[1]
                if kind == _MISSING:
                    lost.append(before)
                elif kind == _TRIGGERED:
                    triggered.append(
                        TriggeredStop(before.position_id, before.user_id, before.state)
                    )
                else:
                    _, _, peak_text, stop_text, flag, hit = fields
                    peak, stop, activated = float(peak_text), float(stop_text), flag == "1"
                    # A position removed or replaced while the call was in flight keeps
                    # its new value.
                    if self._tracked.get(before.position_id) is before:
                        before.move(peak, stop, activated, now)
                        self._dirty.add(before.position_id)
                    if hit == "1":
                        state = StopState(before.entry_price, peak, stop, activated, now)
                        triggered.append(TriggeredStop(before.position_id, before.user_id, state))
        if lost:
            params_of_user = dict(zip(roster.users, slots.params, strict=True))
            triggered.extend(await self._restore(lost, Tick(usable, params_of_user, now, fee)))
            triggered.sort(key=lambda stop: stop.position_id)
        return Advance(len(sent), triggered)

    async def _restore(self, lost: list[_LiveStop], tick: Tick) -> list[TriggeredStop]:
        """Rewrite stops Redis no longer holds (flushed, evicted) from the last known state.

        The last known state is at least as new as the SQLite checkpoint, so nothing is
        lost; the tick is applied here with the same rules the script applies.
        """
        logger.warning(
            "%d trailing stop(s) missing from Redis; restoring from the last known state",
            len(lost),
        )
        held = {
            live.position_id: live for live in lost if self._tracked.get(live.position_id) is live
        }
        moves = _advance_live(held, tick)
        # Every one is written back, moved or not: Redis no longer holds it.
        self._dirty.update(held)
        if held:
            await self._write([held[position_id].tracked() for position_id in sorted(held)])
        return moves.triggered

    async def checkpoint(self) -> int:
        rows = [self._tracked[i].row() for i in sorted(self._dirty) if i in self._tracked]
        self._dirty.intersection_update(self._tracked)
        if not rows:
            return 0
        await self._table.upsert_rows(rows)
        for row in rows:
            # Changed again while the transaction ran: stays dirty for the next checkpoint.
            live = self._tracked.get(row[0])
            if live is not None and live.row() == row:
                self._dirty.discard(row[0])
        return len(rows)

    async def _load_live(self) -> dict[int, TrackedStop]:
        return await read_live(self._redis, self._prefix, self._call)

    async def reconcile(self) -> int:
        saved = await self._table.load_all()
        try:
            live = await self._load_live()
        except REDIS_OUTAGE as error:
            # Start on SQLite alone: its checkpoint is at most 5 s behind what Redis held,
            # and Redis gets the stops back when it answers.
            self._went_down(error)
            self._tracked = {position_id: _LiveStop.of(stop) for position_id, stop in saved.items()}
            self._members_changed()
            self._dirty.clear()
            return len(saved)
        winners = {
            position_id: newest(live.get(position_id), saved.get(position_id))
            for position_id in live.keys() | saved.keys()
        }
        to_redis = [stop for i, stop in winners.items() if live.get(i) != stop]
        to_sqlite = [stop for i, stop in winners.items() if saved.get(i) != stop]
        if to_redis:
            await self._write(to_redis)
        if to_sqlite:
            await self._table.upsert(sorted(to_sqlite, key=lambda stop: stop.position_id))
        self._tracked = {position_id: _LiveStop.of(stop) for position_id, stop in winners.items()}
        self._members_changed()
        self._dirty.clear()
        if to_redis or to_sqlite:
            logger.info(
                "trailing stops reconciled: %d restored to Redis, %d saved to SQLite",
                len(to_redis),
                len(to_sqlite),
            )
        return len(winners)
