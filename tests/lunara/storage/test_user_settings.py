from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunara.storage import user_settings, users
from lunara.storage.database import InvalidValue, RecordNotFound, open_database
from lunara.storage.user_settings import UserSettings, parse_decimal, parse_ratio, parse_setting


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 7, "trader")
    yield connection
    await connection.close()


async def test_a_trader_without_settings_gets_the_defaults(db: aiosqlite.Connection) -> None:
    settings = await user_settings.get(db, 7)
    assert settings == UserSettings(user_id=7)
    assert user_settings.validate(settings) is settings


async def test_updates_from_a_traders_text_are_parsed_and_stored(
    db: aiosqlite.Connection,
) -> None:
    updated = await user_settings.update(
        db,
        7,
        {
            "stake_usdt": "1,250.50 USDT",
            "symbols": "btcusdt, ethusdt",
            "stoploss": "8%",
            "trailing_stop_positive": "1%",
            "trailing_stop_positive_offset": "0.025",
            "auto_mode": "on",
        },
        now=50.0,
    )
    assert updated.stake_usdt == Decimal("1250.50")
    assert updated.symbols == ("BTCUSDT", "ETHUSDT")
    assert updated.stoploss == pytest.approx(-0.08)
    assert updated.trailing_stop_positive == pytest.approx(0.01)
    assert updated.trailing_stop_positive_offset == pytest.approx(0.025)
    assert updated.auto_mode is True
    assert updated.updated_at == 50.0
    assert await user_settings.get(db, 7) == updated
    again = await user_settings.update(db, 7, {"symbols": "all", "auto_mode": False})
    assert again.symbols == ()
    assert again.auto_mode is False
    assert again.stake_usdt == Decimal("1250.50")


async def test_a_trader_can_choose_a_plain_stop_and_it_is_stored(
    db: aiosqlite.Connection,
) -> None:
    assert (await user_settings.get(db, 7)).trailing_stop is True
    plain = await user_settings.update(db, 7, {"trailing_stop": "off"})
    assert plain.trailing_stop is False
    assert await user_settings.get(db, 7) == plain
    again = await user_settings.update(db, 7, {"trailing_stop": True})
    assert again.trailing_stop is True
    with pytest.raises(InvalidValue, match="trailing_stop"):
        await user_settings.update(db, 7, {"trailing_stop": "sometimes"})


async def test_typed_updates_from_code_are_accepted(db: aiosqlite.Connection) -> None:
    updated = await user_settings.update(
        db, 7, {"stake_usdt": 25, "stoploss": -0.1, "symbols": ["solusdt"]}
    )
    assert updated.stake_usdt == Decimal(25)
    assert updated.symbols == ("SOLUSDT",)
    with pytest.raises(InvalidValue, match="stake_usdt"):
        await user_settings.update(db, 7, {"stake_usdt": 25.5})


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"stake_usdt": "0"}, "stake_usdt"),
        ({"stake_usdt": "-5"}, "stake_usdt"),
        ({"stake_usdt": "2000000"}, "stake_usdt"),
        ({"stake_usdt": "0.000000001"}, "stake_usdt"),
        ({"stake_usdt": "lots"}, "stake_usdt"),
        ({"stake_usdt": "NaN"}, "stake_usdt"),
        ({"symbols": "BTC/USDT"}, "symbols"),
        ({"stoploss": "100%"}, "stoploss"),
        ({"stoploss": "0"}, "stoploss"),
        ({"trailing_stop_positive": "150%"}, "trailing_stop_positive"),
        ({"trailing_stop_positive_offset": "-1%"}, "trailing_stop_positive_offset"),
        (
            {"trailing_stop_positive": "3%", "trailing_stop_positive_offset": "2%"},
            "trailing_stop_positive_offset",
        ),
        (
            {"trailing_only_offset_is_reached": "on", "trailing_stop_positive_offset": "off"},
            "trailing_only_offset_is_reached",
        ),
        ({"auto_mode": "maybe"}, "auto_mode"),
        ({"leverage": "10"}, "leverage"),
    ],
)
async def test_invalid_updates_name_the_field_and_change_nothing(
    db: aiosqlite.Connection, changes: dict[str, object], field: str
) -> None:
    before = await user_settings.get(db, 7)
    with pytest.raises(InvalidValue) as caught:
        await user_settings.update(db, 7, changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert await user_settings.get(db, 7) == before


async def test_settings_need_a_registered_user(db: aiosqlite.Connection) -> None:
    with pytest.raises(RecordNotFound):
        await user_settings.update(db, 8, {"auto_mode": True})


async def test_trailing_without_a_positive_trail_is_allowed(db: aiosqlite.Connection) -> None:
    updated = await user_settings.update(
        db, 7, {"trailing_stop_positive": "none", "trailing_only_offset_is_reached": "off"}
    )
    assert updated.trailing_stop_positive is None
    assert (await user_settings.get(db, 7)).trailing_stop_positive is None


async def test_trading_pause_flag_is_stored_with_who_set_it(db: aiosqlite.Connection) -> None:
    assert await user_settings.is_trading_paused(db) is False
    flag = await user_settings.set_trading_paused(db, True, "telegram:7")
    assert await user_settings.is_trading_paused(db) is True
    stored = await user_settings.get_bot_flag(db, user_settings.BotFlag.TRADING_PAUSED)
    assert stored is not None
    assert stored.updated_by == "telegram:7"
    assert stored == flag
    await user_settings.set_trading_paused(db, False, "os_user:root")
    assert await user_settings.is_trading_paused(db) is False


def test_stoploss_text_means_a_loss_whatever_its_sign() -> None:
    assert parse_setting("stoploss", "5%") == pytest.approx(-0.05)
    assert parse_setting("stoploss", "-5%") == pytest.approx(-0.05)
    assert parse_setting("stoploss", "-0.05") == pytest.approx(-0.05)


@given(st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8))
def test_any_amount_a_trader_can_type_parses_exactly(amount: Decimal) -> None:
    for text in (str(amount), f"{amount} USDT", f"{amount}usdt", f" {amount} "):
        assert parse_decimal(text, "stake_usdt") == amount
    settings = UserSettings(user_id=1, stake_usdt=parse_decimal(str(amount), "stake_usdt"))
    assert user_settings.validate(settings).stake_usdt == amount


@given(st.integers(min_value=1, max_value=9999))
def test_percent_and_fraction_forms_agree(basis_points: int) -> None:
    fraction = Decimal(basis_points) / 10000
    assert parse_ratio(f"{fraction * 100}%", "x") == pytest.approx(parse_ratio(str(fraction), "x"))


@given(st.text(max_size=20))
def test_garbage_amounts_are_refused_with_the_field_named(text: str) -> None:
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        value = parse_decimal(text, "stake_usdt")
    except InvalidValue as error:
        assert error.field == "stake_usdt"  # noqa: PT017
    else:
        assert value.is_finite()
