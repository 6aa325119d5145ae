"""Command arguments: parsed and validated before any handler uses them.

Pure functions; each raises `UsageError` with a short reason, and the command then
answers with its usage line instead of an error.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from lunara.trading.symbols import is_symbol, symbol_name

MAX_AMOUNT = Decimal("1000000")
MAX_ARGUMENT_LENGTH = 512


class UsageError(ValueError):
    """A bad argument; the message says what is wrong (safe to show, already plain)."""


def split_arguments(text: str) -> list[str]:
    """`/cmd@bot a b` → ["a", "b"]; oversized input is refused, not truncated."""
    if len(text) > 4096:
        raise UsageError("that message is too long")
    parts = text.split()
    return parts[1:]


def command_name(text: str) -> str:
    """`/Buy@LunaraBot BTC 10` → "buy"."""
    head = text.split(maxsplit=1)[0] if text.strip() else ""
    return head.lstrip("/").split("@", 1)[0].lower()


def addressed_to(text: str, username: str) -> bool:
    """Whether a command is ours: `/buy` and `/buy@OurBot` are, `/buy@other_bot` (meant
    for another bot in the same group) is not. Usernames compare case-insensitively."""
    head = text.split(maxsplit=1)[0] if text.strip() else ""
    _, at, addressee = head.partition("@")
    return not at or addressee.lower() == username.lower()


def parse_symbol(raw: str) -> str:
    symbol = symbol_name(raw)
    if "/" in symbol:
        symbol = symbol.replace("/", "")
    if not is_symbol(symbol):
        raise UsageError("a symbol is letters and digits, like BTCUSDT")
    return symbol


def parse_amount(raw: str) -> Decimal:
    text = raw.strip().replace(",", "").removesuffix("USDT").removesuffix("usdt")
    if len(text) > 32:
        raise UsageError("that amount is too long")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise UsageError("the amount must be a number, like 25 or 12.5") from None
    return check_amount(amount, MAX_AMOUNT)


def check_amount(amount: Decimal, most: Decimal, least: Decimal | None = None) -> Decimal:
    """`amount` if it is finite, above 0 (at least `least`, when given) and at most
    `most`; UsageError saying which it is not. The one check of an amount someone types
    (`/buy`'s quote amount, `lunara backtest --stake`): NaN, an infinity, zero, a
    negative or an absurd size reaches neither an order nor a backtest."""
    if not amount.is_finite():
        raise UsageError("the amount must be a finite number")
    if amount <= 0:
        raise UsageError("the amount must be positive")
    if least is not None and amount < least:
        raise UsageError(f"the amount must be at least {least}")
    if amount > most:
        raise UsageError(f"the amount must be at most {most}")
    return amount


def parse_user_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15:
        raise UsageError("a user id is a number")
    value = int(raw)
    if value <= 0:
        raise UsageError("a user id is a positive number")
    return value


def parse_pairs(arguments: list[str]) -> dict[str, str]:
    """`key=value key2=value2` → dict; keys lower-case; each key once."""
    pairs: dict[str, str] = {}
    for argument in arguments:
        if len(argument) > MAX_ARGUMENT_LENGTH:
            raise UsageError("that setting is too long")
        key, separator, value = argument.partition("=")
        key = key.strip().lower()
        if not separator or not key or not value.strip():
            raise UsageError(f"write settings as key=value (got {argument[:30]})")
        if key in pairs:
            raise UsageError(f"{key} is given twice")
        pairs[key] = value.strip()
    return pairs
