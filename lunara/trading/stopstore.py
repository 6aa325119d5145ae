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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiosqlite
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from lunara.instance import STALE_EPOCH_REPLY, Fence, StaleEpoch, lease_key
from lunara.storage.database import transaction
from lunara.trading.trailing import (
    StopState,
    TrailingParams,
    advance,
    is_triggered,
    validated_fee_rate,
)

logger = logging.getLogger(__name__)

REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError)
REDIS_RETRY_S = 30.0
"""While Redis is down, how often it is asked again (each try may cost a timeout)."""
"""Redis is down or restarting: what the store rides out instead of failing an order."""

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

_CHANGED = "changed"
_TRIGGERED = "triggered"
_MISSING = "missing"
_NO_POSITIVE = "-"

# Mirrors trailing.advance operation for operation (same order, same doubles): the stop is
# proposed from the current price, so settings sent on a tick after a trader changed them
# apply from that price on and never sell by themselves. Numbers
# travel as round-trip exact text: Python's repr in, "%.17g" out. Lua's own number to
# string conversion keeps only 14 digits, so every stored number is formatted here.
#
# KEYS[1]: the deployment's instance lease (``lunara.instance``); then one hash per
# position. ARGV[6]: the fencing epoch of the caller, "" when no lease is in use: a
# caller whose epoch is not the lease's (it lost the lease while paused) moves nothing.
# ARGV[1]: now. ARGV[2]: the price of each symbol slot,
# space-separated. ARGV[3]: five fields per settings slot: stoploss, trailing_stop (1|0),
# trailing_stop_positive ("-" for none), offset, trailing_only_offset_is_reached (1|0).
# ARGV[4]: two numbers per position, its symbol slot and its settings slot. ARGV[5]: the
# fee rate, for the fee-inclusive profit the offset is compared with. Prices and
# settings are shared by many positions, so each is sent and parsed once, not once per
# position. The reply has one line per position that needs the client's attention,
# "<i> changed peak stop activated triggered", "<i> triggered" (levels unchanged) or
# "<i> missing"; a position whose levels held and whose stop was not hit is left out.
# Packing arguments and reply into single strings keeps encoding and RESP parsing off
# the client's CPU: a nested reply per position costs more to parse than the script to run.
ADVANCE_SCRIPT = """
if ARGV[6] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[6] then
  return redis.error_reply('LUNARA_STALE_EPOCH the instance lease has another epoch')
end
local now = ARGV[1]
local fee = tonumber(ARGV[5])
local prices = {}
for token in string.gmatch(ARGV[2], '%S+') do prices[#prices + 1] = tonumber(token) end
local tokens = {}
for token in string.gmatch(ARGV[3], '%S+') do tokens[#tokens + 1] = token end
local settings = {}
for slot = 1, #tokens / 5 do
  local base = (slot - 1) * 5
  settings[slot] = {
    stoploss = tonumber(tokens[base + 1]),
    trailing = tokens[base + 2] == '1',
    positive = tonumber(tokens[base + 3]),
    offset = tonumber(tokens[base + 4]),
    only_offset = tokens[base + 5] == '1',
  }
end
local lines = {}
local i = 0
for symbol_slot, settings_slot in string.gmatch(ARGV[4], '(%d+) (%d+)') do
  i = i + 1
  local price = prices[tonumber(symbol_slot)]
  local params = settings[tonumber(settings_slot)]
  local row = redis.call('HMGET', KEYS[i + 1],
    'entry_price', 'peak_price', 'stop_price', 'activated', 'updated_at')
  local entry = tonumber(row[1])
  local old_peak = tonumber(row[2])
  local old_stop = tonumber(row[3])
  if not (entry and old_peak and old_stop and row[5]) then
    lines[#lines + 1] = i .. ' missing'
  else
    local old_activated = row[4] == '1'
    local peak = old_peak
    if price > old_peak then peak = price end
    local activated = old_activated
    local stop = old_stop
    if params.trailing then
      local ratio = (price * (1.0 - fee)) / (entry * (1.0 + fee)) - 1.0
      local profit = tonumber(string.format('%.8f', ratio))
      local candidate = nil
      if not (params.only_offset and profit < params.offset) then
        if params.positive ~= nil and profit > params.offset then
          candidate = price * (1.0 - params.positive)
        else
          candidate = price * (1.0 + params.stoploss)
        end
      end
      if candidate ~= nil and candidate > old_stop then
        stop = candidate
        activated = true
      end
    end
    local triggered = '0'
    if price <= stop then triggered = '1' end
    if peak ~= old_peak or stop ~= old_stop or activated ~= old_activated then
      local flag = '0'
      if activated then flag = '1' end
      local peak_text = string.format('%.17g', peak)
      local stop_text = string.format('%.17g', stop)
      redis.call('HSET', KEYS[i + 1], 'peak_price', peak_text, 'stop_price', stop_text,
        'activated', flag, 'updated_at', now)
      lines[#lines + 1] = i .. ' changed ' .. peak_text .. ' ' .. stop_text .. ' ' ..
        flag .. ' ' .. triggered
    elseif triggered == '1' then
      lines[#lines + 1] = i .. ' triggered'
    end
  end
end
return table.concat(lines, '\\n')
"""
_ADVANCE_SHA = hashlib.sha1(ADVANCE_SCRIPT.encode()).hexdigest()

# Every other write of stop hashes, fenced like the advance: KEYS[1] the lease, then the
# stop hashes; ARGV[1] the epoch, then per hash "del", or "set", a field count and the
# fields and values.
FENCED_WRITE_SCRIPT = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then
  return redis.error_reply('LUNARA_STALE_EPOCH the instance lease has another epoch')
end
local a = 2
for i = 2, #KEYS do
  local op = ARGV[a]
  a = a + 1
  if op == 'del' then
    redis.call('DEL', KEYS[i])
  else
    local n = tonumber(ARGV[a]) * 2
    a = a + 1
    redis.call('HSET', KEYS[i], unpack(ARGV, a, a + n - 1))
    a = a + n
  end
end
return #KEYS - 1
"""


class CorruptStopState(ValueError):
    """A stored stop cannot be read back (hand-edited or truncated)."""


@dataclass(frozen=True, slots=True)
class TriggeredStop:
    """A position whose stop the market reached this tick: sell now."""

    position_id: int
    user_id: int
    state: StopState


@dataclass(frozen=True)
class Advance:
    """What one tick did to the stops: how many advanced, and which must sell."""

    positions: int
    triggered: list[TriggeredStop]


@dataclass(frozen=True, slots=True)
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

    def symbols(self) -> set[str]:
        """The symbols of every position with a stop."""
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
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        *,
        fee_rate: float,
    ) -> Advance:
        """Advance every position whose symbol has a price (settings are per trader).

        ``fee_rate`` is paid on each side; the trailing offset is compared with the
        profit after both fees, as in ``trailing.advance``.

        Reports how many advanced and, ordered by position id, those whose stop the price
        reached. A priced position whose trader is missing from ``params_by_user``, or an
        unusable price (0, NaN, inf), is a ``ValueError`` raised before anything moves."""
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


_Row = tuple[int, int, str, float, float, float, int, float]


def _row(tracked: TrackedStop) -> _Row:
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


def _newest(live: TrackedStop | None, saved: TrackedStop | None) -> TrackedStop:
    if live is None:
        assert saved is not None
        return saved
    if saved is None or live.state.updated_at >= saved.state.updated_at:
        return live
    return saved


def _escape_glob(text: str) -> str:
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


def _usable_prices(symbols: Iterable[str], prices: Mapping[str, float]) -> dict[str, float]:
    """The price of each tracked symbol that has one, checked before any I/O so that a bad
    input changes nothing."""
    usable: dict[str, float] = {}
    for symbol in sorted(symbols):
        if symbol not in prices:
            continue
        price = prices[symbol]
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise ValueError(f"price of {symbol} must be a number, got {price!r}")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price of {symbol} must be positive and finite, got {price!r}")
        usable[symbol] = float(price)
    return usable


def _params_of(user_id: int, params_by_user: Mapping[int, TrailingParams]) -> TrailingParams:
    try:
        return params_by_user[user_id]
    except KeyError:
        raise ValueError(f"no trailing-stop settings for trader {user_id}") from None


@dataclass(frozen=True)
class _Step:
    tracked: TrackedStop
    price: float
    params: TrailingParams


def _plan(
    tracked: Mapping[int, TrackedStop],
    prices: Mapping[str, float],
    params_by_user: Mapping[int, TrailingParams],
) -> list[_Step]:
    """The positions a tick moves, validated before any I/O so a bad input changes nothing."""
    usable = _usable_prices({stop.symbol for stop in tracked.values()}, prices)
    steps: list[_Step] = []
    for position_id in sorted(tracked):
        stop = tracked[position_id]
        price = usable.get(stop.symbol)
        if price is not None:
            steps.append(_Step(stop, price, _params_of(stop.user_id, params_by_user)))
    return steps


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

    def state(self) -> StopState:
        return StopState(
            self.entry_price, self.peak_price, self.stop_price, self.activated, self.updated_at
        )

    def tracked(self) -> TrackedStop:
        return TrackedStop(self.position_id, self.user_id, self.symbol, self.state())

    def row(self) -> _Row:
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


async def _send(reply: Awaitable[Any] | Any) -> Any:
    return await cast(Awaitable[Any], reply)


async def _live_keys(redis: Redis, prefix: str, call: _Call) -> list[tuple[int, str]]:
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


async def _read_live(redis: Redis, prefix: str, call: _Call) -> dict[int, TrackedStop]:
    keys = await _live_keys(redis, prefix, call)
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


class _StopTable:
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

    async def upsert_rows(self, rows: Sequence[_Row]) -> None:
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


class RedisStopStore:
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
        self._table = _StopTable(db)
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
                for position_id, key in await _live_keys(self._redis, self._prefix, self._call)
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

    async def _advance_in_memory(
        self,
        prices: Mapping[str, float],
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        fee: float,
    ) -> Advance:
        """The tick without Redis: the same rules in Python, each change written to SQLite."""
        usable = _usable_prices(self.symbols(), prices)
        steps = [
            (live, usable[live.symbol], _params_of(live.user_id, params_by_user))
            for position_id, live in sorted(self._tracked.items())
            if live.symbol in usable
        ]
        triggered: list[TriggeredStop] = []
        changed: list[_LiveStop] = []
        for live, price, params in steps:
            before = live.state()
            state = advance(before, price, params, now, fee)
            if state is not before:
                live.move(state.peak_price, state.stop_price, state.activated, state.updated_at)
                changed.append(live)
            if is_triggered(state, price):
                triggered.append(TriggeredStop(live.position_id, live.user_id, state))
        if changed:
            rows = [live.row() for live in changed]
            self._round_trips += 1
            await self._table.upsert_rows(rows)
            self._dirty.difference_update(row[0] for row in rows)
        return Advance(len(steps), triggered)

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
        if self.redis_down:
            return  # written back to Redis with the others when it answers
        try:
            await self._write([stop])
        except StaleEpoch:
            logger.error("the instance lease is not ours: stop of position %d kept in SQLite "
                         "only", position_id)  # fmt: skip
        except REDIS_OUTAGE as error:
            # The next tick finds it missing from Redis and writes it back from memory.
            logger.warning("Redis unavailable (%s): stop of position %d kept in SQLite until "
                           "it answers", type(error).__name__, position_id)  # fmt: skip

    async def remove(self, position_id: int) -> None:
        self._tracked.pop(position_id, None)
        self._dirty.discard(position_id)
        self._members_changed()
        await self._table.delete(position_id)
        if self.redis_down:
            return  # its hash is deleted as stale when Redis answers
        try:
            await self._write(deletes=[self.key(position_id)])
        except StaleEpoch:
            logger.error("the instance lease is not ours: stop of closed position %d removed "
                         "from SQLite only", position_id)  # fmt: skip
        except REDIS_OUTAGE as error:
            # Left behind in Redis, it is dropped at the next start (no open position).
            logger.warning("Redis unavailable (%s): stop of closed position %d removed from "
                           "SQLite only", type(error).__name__, position_id)  # fmt: skip

    async def get(self, position_id: int) -> StopState | None:
        if self.redis_down:
            live = self._tracked.get(position_id)
            return None if live is None else live.state()
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
        params = tuple(_params_of(user_id, params_by_user) for user_id in roster.users)
        slots = self._settings_slots
        if slots is None or slots.roster is not roster or slots.params != params:
            slots = self._settings_slots = _SettingsSlots.of(roster, params, self._chunk)
        return slots

    async def advance_all(
        self,
        prices: Mapping[str, float],
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        *,
        fee_rate: float,
    ) -> Advance:
        fee = validated_fee_rate(fee_rate)
        if not await self._back_if_answering():
            return await self._advance_in_memory(prices, params_by_user, float(now), fee)
        try:
            return await self._advance_in_redis(prices, params_by_user, now, fee)
        except REDIS_OUTAGE as error:
            self._went_down(error)
            return await self._advance_in_memory(prices, params_by_user, float(now), fee)

    async def _advance_in_redis(
        self,
        prices: Mapping[str, float],
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        fee: float,
    ) -> Advance:
        usable = _usable_prices(self.symbols(), prices)
        slots = self._slots(usable, params_by_user)
        roster = slots.roster
        # As sent: a position removed or replaced meanwhile is recognised by identity.
        sent = [self._tracked[position_id] for position_id in roster.position_ids]
        now = float(now)
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
                        TriggeredStop(before.position_id, before.user_id, before.state())
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
            triggered.extend(await self._restore(lost, usable, params_of_user, now, fee))
            triggered.sort(key=lambda stop: stop.position_id)
        return Advance(len(sent), triggered)

    async def _restore(
        self,
        lost: list[_LiveStop],
        prices: Mapping[str, float],
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        fee_rate: float,
    ) -> list[TriggeredStop]:
        """Rewrite stops Redis no longer holds (flushed, evicted) from the last known state.

        The last known state is at least as new as the SQLite checkpoint, so nothing is
        lost; the tick is applied here with the same rules the script applies.
        """
        logger.warning(
            "%d trailing stop(s) missing from Redis; restoring from the last known state",
            len(lost),
        )
        triggered: list[TriggeredStop] = []
        rewritten: list[TrackedStop] = []
        for before in lost:
            if self._tracked.get(before.position_id) is not before:
                continue
            price = prices[before.symbol]
            state = advance(before.state(), price, params_by_user[before.user_id], now, fee_rate)
            before.move(state.peak_price, state.stop_price, state.activated, state.updated_at)
            rewritten.append(before.tracked())
            self._dirty.add(before.position_id)
            if is_triggered(state, price):
                triggered.append(TriggeredStop(before.position_id, before.user_id, state))
        if rewritten:
            await self._write(rewritten)
        return triggered

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
        return await _read_live(self._redis, self._prefix, self._call)

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
            position_id: _newest(live.get(position_id), saved.get(position_id))
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

    async def advance_all(
        self,
        prices: Mapping[str, float],
        params_by_user: Mapping[int, TrailingParams],
        now: float,
        *,
        fee_rate: float,
    ) -> Advance:
        fee = validated_fee_rate(fee_rate)
        steps = _plan(self._tracked, prices, params_by_user)
        triggered: list[TriggeredStop] = []
        changed: list[tuple[TrackedStop, TrackedStop]] = []
        for step in steps:
            before = step.tracked
            state = advance(before.state, step.price, step.params, now, fee)
            if state != before.state:
                after = TrackedStop(before.position_id, before.user_id, before.symbol, state)
                changed.append((before, after))
            if is_triggered(state, step.price):
                triggered.append(TriggeredStop(before.position_id, before.user_id, state))
        if changed:
            self._round_trips += 1
            await self._table.upsert([after for _, after in changed])
            for before, after in changed:
                # Kept in memory only once durable; a concurrent remove/add wins.
                if self._tracked.get(before.position_id) is before:
                    self._tracked[before.position_id] = after
        return Advance(len(steps), triggered)

    async def checkpoint(self) -> int:
        """Nothing is pending: every change was written when it happened."""
        return 0

    async def reconcile(self) -> int:
        self._tracked = await self._table.load_all()
        return len(self._tracked)


def make_stop_store(
    *, name: str, db: aiosqlite.Connection, redis: Redis | None = None, fence: Fence | None = None
) -> StopStore:
    """Redis-backed when a client is given (``REDIS_URL`` set), SQLite alone otherwise;
    ``fence``: the instance lease's epoch every Redis write is checked against."""
    if redis is None:
        return SqliteStopStore(db)
    return RedisStopStore(redis, db, name=name, fence=fence)


# For backups and restores (`lunara backup|restore`), which run beside the bot, not in it.

STORE_NAME = "lunara"
"""The name the engine gives its stop store (``open_trading``)."""


def stop_key_prefix(name: str) -> str:
    """The Redis keys of a store's stops: ``lunara:<name>:stop:<position_id>``."""
    return f"lunara:{name}:stop:"


async def read_live_stops(redis: Redis, *, name: str = STORE_NAME) -> dict[int, TrackedStop]:
    """Every stop Redis holds, read as ``reconcile`` reads them (unreadable ones skipped).

    Not one atomic read: each hash is read whole, and a stop that moves meanwhile is
    taken at one of its states, which the newest-wins merge handles like any other.
    """
    return await _read_live(redis, stop_key_prefix(name), _send)


async def clear_live_stops(redis: Redis, *, name: str = STORE_NAME) -> int:
    """Delete every stop hash, so the next start reloads the stops from SQLite alone.

    After a restore the restored checkpoint must win; left in Redis, the stops of the
    replaced database would be newer and ``reconcile`` would keep them.
    """
    keys = [key for _, key in await _live_keys(redis, stop_key_prefix(name), _send)]
    deleted = 0
    for start in range(0, len(keys), 1000):
        deleted += int(await _send(redis.delete(*keys[start : start + 1000])))
    return deleted


async def save_newer_stops(db: aiosqlite.Connection, live: Mapping[int, TrackedStop]) -> int:
    """Write each live stop newer than its checkpoint (or without one) into ``trailing_stops``.

    The rule is ``reconcile``'s (newest ``updated_at`` wins, the live copy on a tie), in
    one transaction; returns how many rows were written.
    """
    table = _StopTable(db)
    saved = await table.load_all()
    newer = [
        stop
        for position_id, stop in sorted(live.items())
        if stop != saved.get(position_id) and _newest(stop, saved.get(position_id)) is stop
    ]
    if newer:
        await table.upsert(newer)
    return len(newer)
