"""Trailing stop-loss maths for long positions, free of I/O.

The semantics are the ones traders know from freqtrade (``ft_stoploss_adjust`` and
``Trade.adjust_stop_loss``):

* ``stoploss`` (e.g. ``-0.10``) places the first stop 10 % below the entry price.
* With ``trailing_stop`` every observed price ``p`` proposes a stop at the ``stoploss``
  distance below ``p``; the stop takes the proposal only if it is higher.
* With ``trailing_stop_positive`` the distance is that fraction instead while the profit
  at ``p`` is above ``trailing_stop_positive_offset`` (strictly: with an offset of 0 the
  position must be in profit).
* With ``trailing_only_offset_is_reached`` nothing is proposed while the profit at ``p``
  is below the offset (``<``, so reaching it exactly counts).
* *Profit* is fee-inclusive, as freqtrade's ``calc_profit_ratio``: what selling at ``p``
  returns after an exit fee at ``fee_rate``, over what the entry cost with the entry fee
  at the same rate, minus one, rounded to 8 decimals. With a 0.1 % fee a 1 % offset therefore needs the price
  about 1.2 % above the entry. ``advance`` takes the fee rate so the live path, the Lua
  script and the backtest all use the fee the position really pays.
* Without ``trailing_stop`` the stop is static and the other trailing settings are
  ignored, as in freqtrade.
* The stop of a long position only ever moves up.

Proposals are made from the *current* price, never from the peak, exactly as freqtrade
does. With fixed settings that is the same as trailing the peak (a lower price proposes a
lower stop, which is refused), but it is what makes a settings change safe: a trader who
tightens ``trailing_stop_positive`` or the ``stoploss`` while a position is open gets a
stop below the current price, never one above it, so the change alone never sells. The
new settings apply from the current price on; the stop never moves down. A static stop
(``trailing_stop`` off) stays where it was placed at entry.

``StopState.activated`` records whether the stop ever moved above the level it was
placed at (freqtrade's ``is_stop_loss_trailing``): an exit then is a trailing-stop exit,
otherwise a plain stop-loss exit. The stored field keeps its old name so live stops in
Redis and SQLite stay readable across the upgrade.

Prices and levels are IEEE-754 doubles on purpose: the live state is advanced by a Lua
script inside Redis, whose only number type is the double. Python floats are the same
doubles, so as long as both sides perform the same operations in the same order
(``price * (1 - fee)``, ``entry * (1 + fee)``, ...) and exchange numbers as round-trip
exact text (``repr`` / ``%.17g``), the two results are bit-identical. A Decimal
implementation could not be mirrored exactly in Lua. Exchange amounts (quantities, order
prices) are Decimals elsewhere; stop levels are only compared with market prices, where
a double's 15-16 significant digits are ample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from blueprint.jsonvalues import is_number


class InvalidTrailingParams(ValueError):
    """The trailing-stop settings contradict each other or are out of range."""


def _fraction(name: str, value: object) -> float:
    if not is_number(value):
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
    activated: bool  # the stop has moved above where it was placed (see module doc)
    updated_at: float

    def levels(self) -> tuple[float, float, bool]:
        """The trading-relevant part, for comparing states regardless of timestamps."""
        return (self.peak_price, self.stop_price, self.activated)


def validated_price(value: float, name: str = "price") -> float:
    """A market price as a float, refusing what would corrupt a stop (0, NaN, inf)."""
    if not is_number(value):
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


def validated_fee_rate(value: float) -> float:
    """A fee rate as a float in [0, 1): the fraction of each side's value paid as fee."""
    if not is_number(value):
        raise ValueError(f"fee rate must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number < 1.0):
        raise ValueError(f"fee rate must be between 0 and 1 (e.g. 0.001), got {value!r}")
    return number


def profit_ratio(entry: float, price: float, fee_rate: float) -> float:
    """Fee-inclusive profit of selling at ``price`` a position bought at ``entry``.

    Rounded to 8 decimals as freqtrade's ``calc_profit_ratio`` rounds it, so a price at
    exactly the offset counts as reaching it and not as passing it (``1.03 - 1`` is
    ``0.030000000000000027`` in doubles). The operation order, and the rounding (C's
    ``%.8f`` and Python's ``.8f`` both round the exact double correctly), are mirrored
    by the Lua script in ``stops/advance.lua``.
    """
    ratio = (price * (1.0 - fee_rate)) / (entry * (1.0 + fee_rate)) - 1.0
    return float(f"{ratio:.8f}")


def proposed_stop(
    entry: float, price: float, params: TrailingParams, fee_rate: float
) -> float | None:
    """The stop ``price`` proposes under ``params``, or None when it proposes none."""
    if not params.trailing_stop:
        return None
    offset = params.trailing_stop_positive_offset
    profit = profit_ratio(entry, price, fee_rate)
    if params.trailing_only_offset_is_reached and profit < offset:
        return None
    if params.trailing_stop_positive is not None and profit > offset:
        return price * (1.0 - params.trailing_stop_positive)
    return price * (1.0 + params.stoploss)


def advance(
    state: StopState, price: float, params: TrailingParams, now: float, fee_rate: float
) -> StopState:
    """Move the stop for one observed price, with the position's fee rate on each side.

    The operation order here is mirrored by the Lua script in ``stops/advance.lua``; change both
    together. The state is returned unchanged (same ``updated_at``) when no level moved,
    so a checkpoint only has to write positions whose stop actually changed.
    """
    observed = validated_price(price)
    fee = validated_fee_rate(fee_rate)
    peak = observed if observed > state.peak_price else state.peak_price
    stop = state.stop_price
    activated = state.activated
    candidate = proposed_stop(state.entry_price, observed, params, fee)
    if candidate is not None and candidate > stop:
        stop = candidate
        activated = True
    if (peak, stop, activated) == (state.peak_price, state.stop_price, state.activated):
        return state
    return replace(
        state, peak_price=peak, stop_price=stop, activated=activated, updated_at=float(now)
    )


def is_triggered(state: StopState, price: float) -> bool:
    """A long position exits once the market trades at or below its stop."""
    return price <= state.stop_price


def replay(
    entry: float,
    prices: Iterable[float],
    params: TrailingParams,
    *,
    fee_rate: float = 0.0,
    now: float = 0.0,
) -> StopState:
    """The state a position reaches after seeing ``prices`` in order (timestamps all ``now``).

    Used to check a live store against the pure rules: compare ``levels()``.
    """
    state = initial_state(entry, params, now)
    for price in prices:
        state = advance(state, price, params, now, fee_rate)
    return state
