"""The stop store's model: what a store holds and reports, the contract every store
keeps (``StopStore``, which also checks each tick's inputs for every store), and the one
tick over stops held in memory that the SQLite store, and the Redis store while Redis is
down or has lost some stops, all run."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from lunara.trading.trailing import (
    StopState,
    TrailingParams,
    advance,
    is_triggered,
    validated_fee_rate,
)

CHECKPOINT_INTERVAL_S = 5.0
"""The executor checkpoints at least this often: SQLite lags Redis by at most 5 s."""

STORE_NAME = "lunara"
"""The name of a deployment run without a manifest: a store's stops live in Redis under
its deployment's name (the manifest's ``name``, ``lunara.app.serve``), so deployments
sharing one Redis never share a stop."""


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


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick's inputs as a store advances its stops with them: the fee rate checked,
    the time a float."""

    prices: Mapping[str, float]
    params_by_user: Mapping[int, TrailingParams]
    now: float
    fee_rate: float


class StopStore(ABC):
    """What the executor needs from the stop state, whatever holds it."""

    @property
    @abstractmethod
    def round_trips(self) -> int:
        """Requests sent to the backing server so far (Redis, or SQLite without Redis)."""

    @abstractmethod
    def tracked(self) -> list[TrackedStop]:
        """Every position with a stop, as last seen, ordered by position id."""

    @abstractmethod
    def symbols(self) -> set[str]:
        """The symbols of every position with a stop."""

    @abstractmethod
    async def add(self, position_id: int, user_id: int, symbol: str, state: StopState) -> None:
        """Start (or replace) the stop of a freshly filled position; durable on return."""

    @abstractmethod
    async def remove(self, position_id: int) -> None:
        """Forget a closed position on every side; a no-op for an unknown id."""

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
        unusable price (0, NaN, inf) or fee rate, is a ``ValueError`` raised before
        anything moves."""
        fee = validated_fee_rate(fee_rate)
        return await self._advance(Tick(prices, params_by_user, float(now), fee))

    @abstractmethod
    async def _advance(self, tick: Tick) -> Advance:
        """``advance_all`` with its fee rate checked."""

    @abstractmethod
    async def get(self, position_id: int) -> StopState | None:
        """The stored state, read from the live side."""

    @abstractmethod
    async def checkpoint(self) -> int:
        """Persist changed stops to SQLite in one transaction; returns how many."""

    @abstractmethod
    async def reconcile(self) -> int:
        """Load and merge both sides on start (newest wins); returns positions tracked."""


def newest(live: TrackedStop | None, saved: TrackedStop | None) -> TrackedStop:
    """Of a live (Redis) copy and a saved (SQLite) one, the newer; the live one on a tie:
    it is written first."""
    if live is None:
        assert saved is not None
        return saved
    if saved is None or live.state.updated_at >= saved.state.updated_at:
        return live
    return saved


def usable_prices(symbols: Iterable[str], prices: Mapping[str, float]) -> dict[str, float]:
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


def params_of(user_id: int, params_by_user: Mapping[int, TrailingParams]) -> TrailingParams:
    try:
        return params_by_user[user_id]
    except KeyError:
        raise ValueError(f"no trailing-stop settings for trader {user_id}") from None


class HeldStop(Protocol):
    """A stop as a store holds it in memory: a ``TrackedStop``, or the Redis store's
    mutable copy."""

    @property
    def position_id(self) -> int: ...

    @property
    def user_id(self) -> int: ...

    @property
    def symbol(self) -> str: ...

    @property
    def state(self) -> StopState: ...


Held = TypeVar("Held", bound=HeldStop)


@dataclass(frozen=True)
class Moves(Generic[Held]):
    """One tick over stops held in memory: how many had a price, each stop whose levels
    moved with its new state (for the store to keep and write), and, ordered by position
    id, the stops the price reached."""

    positions: int
    changed: list[tuple[Held, StopState]]
    triggered: list[TriggeredStop]


def advance_held(held: Mapping[int, Held], tick: Tick) -> Moves[Held]:
    """Advance every held stop whose symbol has a price with ``trailing.advance``, the
    rules the Lua script mirrors. Pure: the store decides how the changes are kept and
    written. Every input is checked before anything is computed, so a bad price or a
    trader without settings (``ValueError``) changes nothing."""
    usable = usable_prices({stop.symbol for stop in held.values()}, tick.prices)
    steps = [
        (stop, usable[stop.symbol], params_of(stop.user_id, tick.params_by_user))
        for _, stop in sorted(held.items())
        if stop.symbol in usable
    ]
    changed: list[tuple[Held, StopState]] = []
    triggered: list[TriggeredStop] = []
    for stop, price, params in steps:
        before = stop.state
        state = advance(before, price, params, tick.now, tick.fee_rate)
        if state is not before:  # unchanged levels come back as the same object
            changed.append((stop, state))
        if is_triggered(state, price):
            triggered.append(TriggeredStop(stop.position_id, stop.user_id, state))
    return Moves(len(steps), changed, triggered)
