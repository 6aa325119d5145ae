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
    profit_ratio,
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
    state = advance(state, 102.0, params, 1.0, 0.0)
    assert state.stop_price == pytest.approx(91.8)
    state = advance(state, 103.0, params, 2.0, 0.0)  # equal to the offset: not yet passed
    assert state.stop_price == pytest.approx(92.7)
    state = advance(state, 103.5, params, 3.0, 0.0)
    assert state.stop_price == pytest.approx(103.5 * 0.98)
    state = advance(state, 102.0, params, 4.0, 0.0)
    assert state.stop_price == pytest.approx(101.43)
    assert not is_triggered(state, 102.0)
    assert is_triggered(state, 101.0)


def test_the_offset_is_compared_with_the_profit_after_both_fees() -> None:
    params = freqtrade_example()
    fee = 0.001
    # 103.2 is 3.2 % above the entry, but after 0.1 % in and out only 2.99 % profit.
    assert profit_ratio(ENTRY, 103.2, fee) < 0.03
    state = advance(initial_state(ENTRY, params, 0.0), 103.2, params, 1.0, fee)
    assert state.stop_price == pytest.approx(103.2 * 0.90)
    assert profit_ratio(ENTRY, 103.25, fee) > 0.03
    state = advance(state, 103.25, params, 2.0, fee)
    assert state.stop_price == pytest.approx(103.25 * 0.98)


def test_fee_inclusive_profit_is_freqtrades_ratio_rounded_to_8_decimals() -> None:
    # freqtrade: close value amount*rate*(1-fee) over open value amount*entry*(1+fee), - 1.
    assert profit_ratio(ENTRY, 110.0, 0.001) == round(110.0 * 0.999 / 100.1 - 1.0, 8)
    assert profit_ratio(ENTRY, 103.0, 0.0) == 0.03
    assert profit_ratio(ENTRY, ENTRY, 0.001) < 0.0


def test_only_offset_keeps_initial_stop_until_the_fee_inclusive_offset_is_reached() -> None:
    params = TrailingParams(
        stoploss=-0.10,
        trailing_stop=True,
        trailing_stop_positive_offset=0.03,
        trailing_only_offset_is_reached=True,
    )
    state = advance(initial_state(ENTRY, params, 0.0), 102.9, params, 1.0, 0.0)
    assert state.stop_price == ENTRY * 0.9
    assert not state.activated
    state = advance(state, 103.0, params, 2.0, 0.0)
    assert state.stop_price == pytest.approx(92.7)
    with_fees = advance(initial_state(ENTRY, params, 0.0), 103.0, params, 1.0, 0.001)
    assert with_fees.stop_price == ENTRY * 0.9  # 2.8 % after fees: not reached


def test_static_stop_ignores_rising_prices() -> None:
    params = TrailingParams(stoploss=-0.05, trailing_stop_positive=0.01)
    state = replay(ENTRY, [150.0, 200.0, 180.0], params)
    assert state.stop_price == ENTRY * 0.95
    assert state.peak_price == 200.0
    assert not state.activated


def test_zero_offset_tightens_only_once_in_profit_after_fees() -> None:
    params = TrailingParams(stoploss=-0.10, trailing_stop=True, trailing_stop_positive=0.02)
    fee = 0.001
    # Break-even after fees is 100 * 1.001 / 0.999 = 100.2002.
    assert replay(ENTRY, [100.2], params, fee_rate=fee).stop_price == pytest.approx(90.18)
    assert replay(ENTRY, [100.21], params, fee_rate=fee).stop_price == pytest.approx(98.2058)


def test_activated_means_the_stop_moved_above_where_it_was_placed() -> None:
    params = freqtrade_example()
    assert not replay(ENTRY, [ENTRY, 99.0], params).activated
    assert replay(ENTRY, [math.nextafter(ENTRY, math.inf)], params).activated


def test_tightening_the_settings_while_open_applies_from_the_current_price() -> None:
    loose = TrailingParams(stoploss=-0.10, trailing_stop=True, trailing_stop_positive=0.10,
                           trailing_stop_positive_offset=0.15)  # fmt: skip
    state = replay(ENTRY, [130.0, 121.0], loose)  # peak 130, stop 117, price now 121
    assert state.stop_price == pytest.approx(117.0)
    tight = TrailingParams(stoploss=-0.01, trailing_stop=True, trailing_stop_positive=0.01,
                           trailing_stop_positive_offset=0.02)  # fmt: skip
    after = advance(state, 121.0, tight, 1.0, 0.0)
    # Not 130 * 0.99 = 128.7 from the old peak, which would sell at once.
    assert after.stop_price == pytest.approx(121.0 * 0.99)
    assert not is_triggered(after, 121.0)


def test_loosening_the_settings_never_lowers_the_stop() -> None:
    state = replay(ENTRY, [130.0], freqtrade_example())
    loose = TrailingParams(stoploss=-0.50, trailing_stop=True)
    assert advance(state, 125.0, loose, 1.0, 0.0) is state
    plain = TrailingParams(stoploss=-0.50)
    assert advance(state, 128.0, plain, 1.0, 0.0).stop_price == state.stop_price


def test_unchanged_levels_keep_the_old_timestamp() -> None:
    params = freqtrade_example()
    state = advance(initial_state(ENTRY, params, 0.0), 110.0, params, 1.0, 0.0)
    assert advance(state, 105.0, params, 2.0, 0.0) is state


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
        advance(initial_state(ENTRY, params, 0.0), price, params, 1.0, 0.0)


fee_rates = st.just(0.0) | st.floats(min_value=0.0, max_value=0.01)


@settings(max_examples=300)
@given(params=trailing_params(), prices=price_paths(), fee=fee_rates)
def test_stop_never_moves_down_and_never_above_the_peak(
    params: TrailingParams, prices: list[float], fee: float
) -> None:
    state = initial_state(ENTRY, params, 0.0)
    for tick, price in enumerate(prices, start=1):
        after = advance(state, price, params, float(tick), fee)
        assert after.stop_price >= state.stop_price
        assert after.peak_price == max(state.peak_price, price)
        assert after.stop_price < after.peak_price
        state = after


def freqtrade_reference(
    prices: list[float], params: TrailingParams, fee: float
) -> tuple[float, bool]:
    """freqtrade's ft_stoploss_adjust / adjust_stop_loss for a long spot trade, written
    out independently (same double operations): the final stop and is_stop_loss_trailing."""
    stop = ENTRY * (1.0 + params.stoploss)
    trailing = False
    for rate in prices:
        if not (params.trailing_stop and stop < rate):  # dir_correct
            continue
        raw = (rate * (1.0 - fee)) / (ENTRY * (1.0 + fee)) - 1.0
        profit = float(f"{raw:.8f}")
        offset = params.trailing_stop_positive_offset
        if params.trailing_only_offset_is_reached and profit < offset:
            continue
        value = -params.stoploss
        if params.trailing_stop_positive is not None and profit > offset:
            value = params.trailing_stop_positive
        new_loss = rate * (1.0 - value)
        if new_loss > stop:
            stop, trailing = new_loss, True
    return stop, trailing


@settings(max_examples=400)
@given(params=trailing_params(), prices=price_paths(), fee=fee_rates)
def test_stop_equals_freqtrades_on_any_path_with_fees(
    params: TrailingParams, prices: list[float], fee: float
) -> None:
    state = replay(ENTRY, prices, params, fee_rate=fee)
    assert (state.stop_price, state.activated) == freqtrade_reference(prices, params, fee)


@settings(max_examples=300)
@given(
    before=trailing_params(),
    after=trailing_params(),
    prices=price_paths(),
    price=st.floats(min_value=0.5, max_value=1.8).map(lambda ratio: ENTRY * ratio),
    fee=fee_rates,
)
def test_a_settings_change_alone_never_triggers_an_exit(
    before: TrailingParams,
    after: TrailingParams,
    prices: list[float],
    price: float,
    fee: float,
) -> None:
    state = replay(ENTRY, prices, before, fee_rate=fee)
    changed = advance(state, price, after, 1.0, fee)
    assert changed.stop_price >= state.stop_price
    assert is_triggered(changed, price) == is_triggered(state, price)


@settings(max_examples=300)
@given(params=trailing_params(), prices=price_paths(), fee=fee_rates)
def test_activated_exactly_when_the_stop_rose_above_the_initial_stop(
    params: TrailingParams, prices: list[float], fee: float
) -> None:
    initial = initial_state(ENTRY, params, 0.0)
    state = initial
    for price in prices:
        state = advance(state, price, params, 1.0, fee)
        assert state.activated == (state.stop_price > initial.stop_price)
        if not params.trailing_stop:
            assert state.stop_price == initial.stop_price


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
@given(params=trailing_params(), prices=price_paths(), fee=fee_rates)
def test_replay_equals_advancing_step_by_step(
    params: TrailingParams, prices: list[float], fee: float
) -> None:
    state = initial_state(ENTRY, params, 0.0)
    for price in prices:
        state = advance(state, price, params, 0.0, fee)
    assert replay(ENTRY, prices, params, fee_rate=fee) == state


@pytest.mark.parametrize("fee", [-0.001, 1.0, math.nan, True])
def test_unusable_fee_rates_are_refused(fee: float) -> None:
    params = freqtrade_example()
    with pytest.raises(ValueError, match="fee rate"):
        advance(initial_state(ENTRY, params, 0.0), 101.0, params, 1.0, fee)
