"""Trailing stop-loss maths for long positions, free of I/O.

The semantics are the ones traders know from freqtrade:

* ``stoploss`` (e.g. ``-0.10``) places the first stop 10 % below the entry price.
* With ``trailing_stop`` the stop follows the highest price seen (the peak) at the
  ``stoploss`` distance.
* With ``trailing_stop_positive`` the distance tightens to that fraction once the peak
  has passed ``entry * (1 + trailing_stop_positive_offset)`` (strictly: with an offset
  of 0 the position must be in profit, as freqtrade's ``profit > offset``). That moment is
  the *activation*.
* With ``trailing_only_offset_is_reached`` the stop stays at the initial stop until the
  peak reaches the offset (``>=``, as freqtrade's ``not profit < offset``); only then
  does it start to trail.
* Without ``trailing_stop`` the stop is static and the other trailing settings are
  ignored, as in freqtrade.
* The stop of a long position only ever moves up.

Prices and levels are IEEE-754 doubles on purpose: the live state is advanced by a Lua
script inside Redis, whose only number type is the double. Python floats are the same
doubles, so as long as both sides perform the same operations in the same order
(``peak * (1 - positive)``, ``entry * (1 + offset)``, ...) and exchange numbers as
round-trip exact text (``repr`` / ``%.17g``), the two results are bit-identical. A
Decimal implementation could not be mirrored exactly in Lua. Exchange amounts
(quantities, order prices) are Decimals elsewhere; stop levels are only compared with
market prices, where a double's 15-16 significant digits are ample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace


class InvalidTrailingParams(ValueError):
    """The trailing-stop settings contradict each other or are out of range."""


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTrailingParams(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidTrailingParams(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class TrailingParams:
    """One position's stop-loss settings, validated like freqtrade validates its config."""

    stoploss: float
    trailing_stop: bool = False
    trailing_stop_positive: float | None = None
    trailing_stop_positive_offset: float = 0.0
    trailing_only_offset_is_reached: bool = False

    def __post_init__(self) -> None:
        stoploss = _fraction("stoploss", self.stoploss)
        if not -1.0 < stoploss < 0.0:
            raise InvalidTrailingParams(
                f"stoploss must be a negative fraction between -1 and 0 (e.g. -0.10), "
                f"got {self.stoploss!r}"
            )
        for flag in ("trailing_stop", "trailing_only_offset_is_reached"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidTrailingParams(f"{flag} must be true or false")
        positive: float | None = None
        if self.trailing_stop_positive is not None:
            positive = _fraction("trailing_stop_positive", self.trailing_stop_positive)
            if not 0.0 < positive < 1.0:
                raise InvalidTrailingParams(
                    f"trailing_stop_positive must be between 0 and 1 (e.g. 0.02), "
                    f"got {self.trailing_stop_positive!r}"
                )
        offset = _fraction("trailing_stop_positive_offset", self.trailing_stop_positive_offset)
        if offset < 0.0:
            raise InvalidTrailingParams(
                f"trailing_stop_positive_offset must be 0 or more, got {offset!r}"
            )
        if positive is not None and offset != 0.0 and offset <= positive:
            raise InvalidTrailingParams(
                "trailing_stop_positive_offset must be greater than trailing_stop_positive "
                f"(got offset {offset!r} <= positive {positive!r}), otherwise the first "
                "tightened stop would sit below the price that activated it"
            )
        # Normalise ints to floats so the text sent to Redis is the same double.
        object.__setattr__(self, "stoploss", stoploss)
        object.__setattr__(self, "trailing_stop_positive", positive)
        object.__setattr__(self, "trailing_stop_positive_offset", offset)


@dataclass(frozen=True, slots=True)
class StopState:
    """Where a position's stop stands; ``updated_at`` is when any level last changed."""

    entry_price: float
    peak_price: float
    stop_price: float
    activated: bool
    updated_at: float

    def levels(self) -> tuple[float, float, bool]:
        """The trading-relevant part, for comparing states regardless of timestamps."""
        return (self.peak_price, self.stop_price, self.activated)


def validated_price(value: float, name: str = "price") -> float:
    """A market price as a float, refusing what would corrupt a stop (0, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0.0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def initial_state(entry: float, params: TrailingParams, now: float) -> StopState:
    """The stop right after a fill: ``stoploss`` below the entry, nothing trailed yet."""
    entry_price = validated_price(entry, "entry price")
    return StopState(
        entry_price=entry_price,
        peak_price=entry_price,
        stop_price=entry_price * (1.0 + params.stoploss),
        activated=False,
        updated_at=float(now),
    )


def advance(state: StopState, price: float, params: TrailingParams, now: float) -> StopState:
    """Move the stop for one observed price.

    The operation order here is mirrored by the Lua script in ``stopstore``; change both
    together. The state is returned unchanged (same ``updated_at``) when no level moved,
    so a checkpoint only has to write positions whose stop actually changed.
    """
    observed = validated_price(price)
    peak = observed if observed > state.peak_price else state.peak_price
    activated = state.activated
    candidate = state.stop_price
    if params.trailing_stop:
        threshold = state.entry_price * (1.0 + params.trailing_stop_positive_offset)
        if peak > threshold:
            activated = True
        if activated and params.trailing_stop_positive is not None:
            candidate = peak * (1.0 - params.trailing_stop_positive)
        elif not params.trailing_only_offset_is_reached or peak >= threshold:
            candidate = peak * (1.0 + params.stoploss)
    stop = candidate if candidate > state.stop_price else state.stop_price
    if (peak, stop, activated) == (state.peak_price, state.stop_price, state.activated):
        return state
    return replace(
        state, peak_price=peak, stop_price=stop, activated=activated, updated_at=float(now)
    )


def is_triggered(state: StopState, price: float) -> bool:
    """A long position exits once the market trades at or below its stop."""
    return price <= state.stop_price


def replay(
    entry: float, prices: Iterable[float], params: TrailingParams, *, now: float = 0.0
) -> StopState:
    """The state a position reaches after seeing ``prices`` in order (timestamps all ``now``).

    Used to check a live store against the pure rules: compare ``levels()``.
    """
    state = initial_state(entry, params, now)
    for price in prices:
        state = advance(state, price, params, now)
    return state
