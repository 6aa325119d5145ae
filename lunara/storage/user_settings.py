"""Per-trader trading settings, and the bot-wide switches an admin flips.

Text typed by a trader in a chat ("/set stoploss 5%") is parsed and validated here,
so the Telegram layer only forwards it and formats the error it gets back.
The stop fields follow freqtrade's meaning: `stoploss` is the initial stop as a
negative fraction of the entry price; with `trailing_stop` off it stays there (a plain
stop). With it on, the stop trails the price at the `stoploss` distance (only once the
profit after fees reaches `trailing_stop_positive_offset`, with
`trailing_only_offset_is_reached`), and by `trailing_stop_positive` while the profit is
above that offset. A change made while a position is open applies from the current
price on (see lunara.trading.trailing): it never sells by itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import aiosqlite

from lunara.config import parse_symbols
from lunara.storage import users
from lunara.storage.database import (
    InvalidValue,
    decimal_to_text,
    now_s,
    transaction,
)
from lunara.storage.rows import RowCodec

MAX_STAKE_USDT = Decimal("1000000")
MAX_DECIMAL_PLACES = 8
ALL_SYMBOLS_WORDS = frozenset({"all", "*", "default"})
NONE_WORDS = frozenset({"none", "off", "-"})
TRUE_WORDS = frozenset({"on", "true", "yes", "1", "enable", "enabled"})
FALSE_WORDS = frozenset({"off", "false", "no", "0", "disable", "disabled"})
_FLAGS = frozenset({"trailing_stop", "trailing_only_offset_is_reached", "auto_mode"})


@dataclass(frozen=True)
class UserSettings:
    """A trader's settings; `symbols` empty means every symbol the bot trades."""

    user_id: int
    stake_usdt: Decimal = Decimal("100")
    symbols: tuple[str, ...] = ()
    trailing_stop: bool = True
    trailing_stop_positive: float | None = 0.02
    trailing_stop_positive_offset: float = 0.03
    trailing_only_offset_is_reached: bool = True
    stoploss: float = -0.05
    auto_mode: bool = False
    updated_at: float | None = None


SETTING_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(UserSettings) if f.name not in ("user_id", "updated_at")
)


class BotFlag(StrEnum):
    TRADING_PAUSED = "trading_paused"


@dataclass(frozen=True)
class FlagValue:
    value: str
    updated_at: float
    updated_by: str | None


def parse_decimal(raw: str, field: str) -> Decimal:
    """A positive amount typed by a person: '50', '50.5', '1,000', '50 USDT'."""
    text = raw.strip().upper().removesuffix("USDT").strip().replace(",", "").replace("_", "")
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise InvalidValue(field, f"{raw.strip()[:20]!r} is not a number") from None
    if not value.is_finite():
        raise InvalidValue(field, "must be a finite number")
    return value


def parse_ratio(raw: str, field: str) -> float:
    """'5%' or '0.05' → 0.05."""
    text = raw.strip()
    percent = text.endswith("%")
    number = parse_decimal(text.removesuffix("%"), field)
    return float(number / 100 if percent else number)


def parse_flag(raw: str, field: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidValue(field, "must be on or off")


def parse_setting(name: str, raw: str) -> object:
    """The typed value of one setting from a trader's text; InvalidValue names what is wrong."""
    word = raw.strip().lower()
    if name == "stake_usdt":
        return parse_decimal(raw, name)
    if name == "symbols":
        if word in ALL_SYMBOLS_WORDS:
            return ()
        try:
            return parse_symbols(raw)
        except ValueError as error:
            raise InvalidValue(name, str(error)) from None
    if name == "trailing_stop_positive":
        return None if word in NONE_WORDS else parse_ratio(raw, name)
    if name == "trailing_stop_positive_offset":
        return 0.0 if word in NONE_WORDS else parse_ratio(raw, name)
    if name == "stoploss":
        # "5%" and "-5%" both mean: sell 5 % below the entry price.
        return -abs(parse_ratio(raw, name))
    if name in _FLAGS:
        return parse_flag(raw, name)
    raise InvalidValue(name, f"unknown setting; known: {', '.join(SETTING_NAMES)}")


def _check_ratio(name: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value) or not low < value < high:
        raise InvalidValue(name, f"must be between {low:.0%} and {high:.0%} (exclusive)")


def validate(settings: UserSettings) -> UserSettings:
    """Refuse combinations the trailing-stop engine cannot honour."""
    stake = settings.stake_usdt
    if not isinstance(stake, Decimal) or not stake.is_finite() or not 0 < stake <= MAX_STAKE_USDT:
        raise InvalidValue("stake_usdt", f"must be more than 0 and at most {MAX_STAKE_USDT} USDT")
    exponent = stake.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
        raise InvalidValue("stake_usdt", f"at most {MAX_DECIMAL_PLACES} decimal places")
    if settings.symbols:
        try:
            parse_symbols(",".join(settings.symbols))
        except ValueError as error:
            raise InvalidValue("symbols", str(error)) from None
    _check_ratio("stoploss", settings.stoploss, -1.0, 0.0)
    positive = settings.trailing_stop_positive
    if positive is not None:
        _check_ratio("trailing_stop_positive", positive, 0.0, 1.0)
    offset = settings.trailing_stop_positive_offset
    if not math.isfinite(offset) or not 0.0 <= offset < 1.0:
        raise InvalidValue("trailing_stop_positive_offset", "must be from 0% up to 100%")
    if settings.trailing_only_offset_is_reached and offset == 0.0:
        raise InvalidValue(
            "trailing_only_offset_is_reached",
            "needs trailing_stop_positive_offset above 0",
        )
    if positive is not None and 0.0 < offset <= positive:
        raise InvalidValue(
            "trailing_stop_positive_offset",
            "must be greater than trailing_stop_positive, or the stop would trail "
            "below the price where trailing starts",
        )
    return settings


def _symbols_from_text(symbols: str) -> tuple[str, ...]:
    return tuple(symbols.split(",")) if symbols else ()


_SETTINGS = RowCodec(UserSettings, symbols=_symbols_from_text)
_FLAG_VALUES = RowCodec(FlagValue)


async def get(connection: aiosqlite.Connection, user_id: int) -> UserSettings:
    """The trader's settings; the defaults if they never changed any."""
    settings = await _SETTINGS.one(
        connection, "SELECT * FROM user_settings WHERE user_id = ?", (user_id,)
    )
    return UserSettings(user_id=user_id) if settings is None else settings


async def save(
    connection: aiosqlite.Connection, settings: UserSettings, *, now: float | None = None
) -> UserSettings:
    """Validate and store the whole settings record."""
    validate(settings)
    at = now_s() if now is None else now
    async with transaction(connection):
        await users.require(connection, settings.user_id)
        await connection.execute(
            "INSERT INTO user_settings (user_id, stake_usdt, symbols, trailing_stop_positive, "
            "trailing_stop_positive_offset, trailing_only_offset_is_reached, stoploss, "
            "auto_mode, updated_at, trailing_stop) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET stake_usdt = excluded.stake_usdt, "
            "symbols = excluded.symbols, "
            "trailing_stop_positive = excluded.trailing_stop_positive, "
            "trailing_stop_positive_offset = excluded.trailing_stop_positive_offset, "
            "trailing_only_offset_is_reached = excluded.trailing_only_offset_is_reached, "
            "stoploss = excluded.stoploss, auto_mode = excluded.auto_mode, "
            "updated_at = excluded.updated_at, trailing_stop = excluded.trailing_stop",
            (
                settings.user_id,
                decimal_to_text(settings.stake_usdt),
                ",".join(settings.symbols),
                settings.trailing_stop_positive,
                settings.trailing_stop_positive_offset,
                int(settings.trailing_only_offset_is_reached),
                settings.stoploss,
                int(settings.auto_mode),
                at,
                int(settings.trailing_stop),
            ),
        )
    return dataclasses.replace(settings, updated_at=at)


async def update(
    connection: aiosqlite.Connection,
    user_id: int,
    changes: Mapping[str, object],
    *,
    now: float | None = None,
) -> UserSettings:
    """Apply some changes (typed values, or a trader's text) on top of the current settings."""
    typed: dict[str, object] = {}
    for name, value in changes.items():
        if name not in SETTING_NAMES:
            raise InvalidValue(name, f"unknown setting; known: {', '.join(SETTING_NAMES)}")
        typed[name] = parse_setting(name, value) if isinstance(value, str) else _coerce(name, value)
    async with transaction(connection):
        current = await get(connection, user_id)
        changed = dataclasses.replace(current, **typed)  # type: ignore[arg-type]
        return await save(connection, changed, now=now)


def _coerce(name: str, value: object) -> object:
    """Typed values from code: accept the obvious numeric forms, refuse the rest."""
    if name == "stake_usdt" and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return Decimal(value)
    if name == "symbols" and isinstance(value, list | tuple):
        return tuple(str(symbol).upper() for symbol in value)
    if name in _FLAGS and isinstance(value, bool):
        return value
    if name == "trailing_stop_positive" and value is None:
        return None
    ratios = ("trailing_stop_positive", "trailing_stop_positive_offset", "stoploss")
    if name in ratios and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InvalidValue(name, f"cannot take a value of type {type(value).__name__}")


async def get_bot_flag(connection: aiosqlite.Connection, flag: BotFlag) -> FlagValue | None:
    return await _FLAG_VALUES.one(
        connection,
        "SELECT value, updated_at, updated_by FROM bot_flags WHERE key = ?",
        (BotFlag(flag).value,),
    )


async def set_bot_flag(
    connection: aiosqlite.Connection,
    flag: BotFlag,
    value: str,
    by: str | None,
    *,
    now: float | None = None,
) -> FlagValue:
    """`by` is the principal who flipped it, for the admin's status view."""
    at = now_s() if now is None else now
    async with transaction(connection):
        await connection.execute(
            "INSERT INTO bot_flags (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (BotFlag(flag).value, value, at, by),
        )
    return FlagValue(value, at, by)


async def is_trading_paused(connection: aiosqlite.Connection) -> bool:
    flag = await get_bot_flag(connection, BotFlag.TRADING_PAUSED)
    return flag is not None and flag.value == "1"


async def set_trading_paused(
    connection: aiosqlite.Connection, paused: bool, by: str | None
) -> FlagValue:
    return await set_bot_flag(connection, BotFlag.TRADING_PAUSED, "1" if paused else "0", by)
