"""Trailing-stop maths: freqtrade's documented examples and properties over random paths."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.trading.trailing import (
    InvalidTrailingParams,
    StopState,
    TrailingParams,
    advance,
    initial_state,
    is_triggered,
    replay,
)

ENTRY = 100.0


@st.composite
def trailing_params(draw: st.DrawFn) -> TrailingParams:
    """Any valid combination, including the ones freqtrade's validation would accept."""
    stoploss = draw(st.floats(min_value=-0.99, max_value=-0.001))
    trailing = draw(st.booleans())
    positive = draw(st.none() | st.floats(min_value=0.001, max_value=0.5))
    offset = draw(st.just(0.0) | st.floats(min_value=0.001, max_value=0.5))
    if positive is not None and offset != 0.0 and offset <= positive:
        offset = positive + draw(st.floats(min_value=0.001, max_value=0.5))
    return TrailingParams(
        stoploss=stoploss,
        trailing_stop=trailing,
        trailing_stop_positive=positive,
        trailing_stop_positive_offset=offset,
        trailing_only_offset_is_reached=draw(st.booleans()),
    )


def price_paths(max_size: int = 40) -> st.SearchStrategy[list[float]]:
    """Prices around the entry, so offsets are reached and stops are crossed."""
    return st.lists(
        st.floats(min_value=0.5, max_value=1.8).map(lambda ratio: ENTRY * ratio),
        max_size=max_size,
    )


def freqtrade_example() -> TrailingParams:
    return TrailingParams(
        stoploss=-0.10,
        trailing_stop=True,
        trailing_stop_positive=0.02,
        trailing_stop_positive_offset=0.03,
    )


def test_initial_stop_sits_stoploss_below_entry() -> None:
    state = initial_state(ENTRY, freqtrade_example(), now=7.0)
    assert state == StopState(ENTRY, ENTRY, ENTRY * (1.0 - 0.10), activated=False, updated_at=7.0)


def test_freqtrade_offset_example_trails_at_stoploss_then_tightens_past_offset() -> None:
    params = freqtrade_example()
    state = initial_state(ENTRY, params, 0.0)
    state = advance(state, 102.0, params, 1.0)
    assert state.stop_price == pytest.approx(91.8)
    assert not state.activated
    state = advance(state, 103.0, params, 2.0)  # equal to the offset: not yet passed
    assert not state.activated
    state = advance(state, 103.5, params, 3.0)
    assert state.activated
    assert state.stop_price == pytest.approx(103.5 * 0.98)
    state = advance(state, 102.0, params, 4.0)
    assert state.stop_price == pytest.approx(101.43)
    assert not is_triggered(state, 102.0)
    assert is_triggered(state, 101.0)


def test_only_offset_keeps_initial_stop_until_offset_is_reached() -> None:
    params = TrailingParams(
        stoploss=-0.10,
        trailing_stop=True,
        trailing_stop_positive_offset=0.03,
        trailing_only_offset_is_reached=True,
    )
    state = advance(initial_state(ENTRY, params, 0.0), 102.9, params, 1.0)
    assert state.stop_price == ENTRY * 0.9
    state = advance(state, 103.0, params, 2.0)
    assert state.stop_price == pytest.approx(92.7)


def test_static_stop_ignores_rising_prices() -> None:
    params = TrailingParams(stoploss=-0.05, trailing_stop_positive=0.01)
    state = replay(ENTRY, [150.0, 200.0, 180.0], params)
    assert state.stop_price == ENTRY * 0.95
    assert state.peak_price == 200.0
    assert not state.activated


def test_zero_offset_activates_only_once_in_profit() -> None:
    params = TrailingParams(stoploss=-0.10, trailing_stop=True, trailing_stop_positive=0.02)
    assert not replay(ENTRY, [ENTRY, 99.0], params).activated
    assert replay(ENTRY, [math.nextafter(ENTRY, math.inf)], params).activated


def test_unchanged_levels_keep_the_old_timestamp() -> None:
    params = freqtrade_example()
    state = advance(initial_state(ENTRY, params, 0.0), 110.0, params, 1.0)
    assert advance(state, 105.0, params, 2.0) is state


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stoploss": 0.0}, "stoploss"),
        ({"stoploss": -1.0}, "stoploss"),
        ({"stoploss": 0.1}, "stoploss"),
        ({"stoploss": math.nan}, "finite"),
        ({"stoploss": "-0.1"}, "number"),
        ({"stoploss": -0.1, "trailing_stop_positive": 0.0}, "trailing_stop_positive"),
        ({"stoploss": -0.1, "trailing_stop_positive": 1.0}, "trailing_stop_positive"),
        ({"stoploss": -0.1, "trailing_stop_positive_offset": -0.01}, "0 or more"),
        (
            {
                "stoploss": -0.1,
                "trailing_stop_positive": 0.02,
                "trailing_stop_positive_offset": 0.02,
            },
            "greater than trailing_stop_positive",
        ),
        ({"stoploss": -0.1, "trailing_stop": 1}, "true or false"),
    ],
)
def test_invalid_params_are_refused_with_the_field_named(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidTrailingParams, match=message):
        TrailingParams(**fields)  # type: ignore[arg-type]


def test_integer_settings_become_floats() -> None:
    params = TrailingParams(stoploss=-0.5, trailing_stop_positive_offset=0)
    assert isinstance(params.trailing_stop_positive_offset, float)


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan, math.inf, True])
def test_unusable_prices_are_refused(price: float) -> None:
    params = freqtrade_example()
    with pytest.raises(ValueError, match="price"):
        advance(initial_state(ENTRY, params, 0.0), price, params, 1.0)


@settings(max_examples=300)
@given(params=trailing_params(), prices=price_paths())
def test_stop_never_moves_down_and_never_above_the_peak(
    params: TrailingParams, prices: list[float]
) -> None:
    state = initial_state(ENTRY, params, 0.0)
    for tick, price in enumerate(prices, start=1):
        after = advance(state, price, params, float(tick))
        assert after.stop_price >= state.stop_price
        assert after.peak_price == max(state.peak_price, price)
        assert after.stop_price < after.peak_price
        state = after


@settings(max_examples=300)
@given(params=trailing_params(), prices=price_paths())
def test_activation_happens_only_once_the_peak_passes_the_offset(
    params: TrailingParams, prices: list[float]
) -> None:
    threshold = ENTRY * (1.0 + params.trailing_stop_positive_offset)
    state = initial_state(ENTRY, params, 0.0)
    peak = ENTRY
    for price in prices:
        state = advance(state, price, params, 1.0)
        peak = max(peak, price)
        assert state.activated == (params.trailing_stop and peak > threshold)
        if state.activated and params.trailing_stop_positive is not None:
            assert state.stop_price >= peak * (1.0 - params.trailing_stop_positive)
        elif params.trailing_only_offset_is_reached and peak < threshold:
            assert state.stop_price == ENTRY * (1.0 + params.stoploss)


@settings(max_examples=200)
@given(params=trailing_params(), prices=price_paths(), probe=st.floats(0.5, 1.8))
def test_exit_triggers_exactly_when_price_is_at_or_below_the_stop(
    params: TrailingParams, prices: list[float], probe: float
) -> None:
    state = replay(ENTRY, prices, params)
    stop = state.stop_price
    assert is_triggered(state, stop)
    assert is_triggered(state, math.nextafter(stop, 0.0))
    assert not is_triggered(state, math.nextafter(stop, math.inf))
    assert is_triggered(state, ENTRY * probe) == (ENTRY * probe <= stop)


@settings(max_examples=200)
@given(params=trailing_params(), prices=price_paths())
def test_replay_equals_advancing_step_by_step(params: TrailingParams, prices: list[float]) -> None:
    state = initial_state(ENTRY, params, 0.0)
    for price in prices:
        state = advance(state, price, params, 0.0)
    assert replay(ENTRY, prices, params) == state
