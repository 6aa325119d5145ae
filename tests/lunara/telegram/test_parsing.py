from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunara.telegram.parsing import (
    MAX_AMOUNT,
    UsageError,
    check_amount,
    command_name,
    parse_amount,
    parse_pairs,
    parse_symbol,
    parse_user_id,
    split_arguments,
)


def test_command_names_drop_the_slash_the_bot_name_and_case() -> None:
    assert command_name("/Buy@LunaraBot BTCUSDT 10") == "buy"
    assert command_name("   ") == ""
    assert split_arguments("/buy@LunaraBot  BTCUSDT   10") == ["BTCUSDT", "10"]


def test_oversized_messages_are_refused() -> None:
    with pytest.raises(UsageError):
        split_arguments("/buy " + "x" * 5000)


def test_symbols_are_normalised_and_validated() -> None:
    assert parse_symbol("btc/usdt") == "BTCUSDT"
    for bad in ("", "BTC", "BTC-USDT", "<b>USDT", "Ｂ" * 6):
        with pytest.raises(UsageError):
            parse_symbol(bad)


def test_amounts_are_positive_bounded_decimals() -> None:
    assert parse_amount("12.5") == Decimal("12.5")
    assert parse_amount("1,000USDT") == Decimal(1000)
    for bad in ("0", "-1", "nan", "inf", "abc", "1e400", str(MAX_AMOUNT + 1), "9" * 40):
        with pytest.raises(UsageError):
            parse_amount(bad)


@pytest.mark.parametrize(
    ("raw", "said"),
    [("NaN", "a finite number"), ("-Infinity", "a finite number"), ("0", "positive"),
     ("-1", "positive"), ("0.5", "at least 1"), ("100.01", "at most 100")],
)  # fmt: skip
def test_check_amount_says_which_bound_an_amount_misses(raw: str, said: str) -> None:
    with pytest.raises(UsageError, match=said):
        check_amount(Decimal(raw), Decimal(100), least=Decimal(1))


def test_check_amount_keeps_its_bounds_themselves() -> None:
    assert check_amount(Decimal(1), Decimal(100), least=Decimal(1)) == 1
    assert check_amount(Decimal(100), Decimal(100), least=Decimal(1)) == 100
    assert check_amount(Decimal("0.00000001"), Decimal(100)) == Decimal("0.00000001")


def test_user_ids_are_positive_numbers() -> None:
    assert parse_user_id("123") == 123
    for bad in ("0", "-5", "abc", "١٢٣", "9" * 16):
        with pytest.raises(UsageError):
            parse_user_id(bad)


def test_settings_pairs_need_key_value_each_key_once() -> None:
    assert parse_pairs(["Stake=50", "symbols=BTCUSDT,ETHUSDT"]) == {
        "stake": "50",
        "symbols": "BTCUSDT,ETHUSDT",
    }
    for bad in (["stake"], ["=5"], ["stake="], ["stake=1", "STAKE=2"], ["k=" + "v" * 600]):
        with pytest.raises(UsageError):
            parse_pairs(bad)


@given(st.text(max_size=80))
def test_parsers_either_return_a_valid_value_or_raise_usage_error(raw: str) -> None:
    for parser in (parse_symbol, parse_amount, parse_user_id):
        try:
            value = parser(raw)
        except UsageError:
            continue
        if parser is parse_amount:
            assert isinstance(value, Decimal)
            assert 0 < value <= MAX_AMOUNT
        elif parser is parse_user_id:
            assert isinstance(value, int)
            assert value > 0
        else:
            assert isinstance(value, str)
            assert value.isalnum()
            assert value.isascii()


@given(st.lists(st.text(max_size=40), max_size=8))
def test_pair_parsing_never_raises_anything_but_usage_error(arguments: list[str]) -> None:
    try:
        pairs = parse_pairs(arguments)
    except UsageError:
        return
    assert all(key == key.lower() and value for key, value in pairs.items())


def test_a_command_is_ours_without_a_suffix_or_with_our_name_only() -> None:
    from lunara.telegram.parsing import addressed_to

    assert addressed_to("/buy BTCUSDT 10", "lunara_bot")
    assert addressed_to("/buy@Lunara_Bot BTCUSDT 10", "lunara_bot")
    assert not addressed_to("/buy@other_bot BTCUSDT 10", "lunara_bot")
    assert not addressed_to("/buy@ BTCUSDT 10", "lunara_bot")
