"""Binance symbol filters: the size and price rules every order must respect.

The exchange rejects an order whose quantity is not a multiple of the lot step, whose
price is off the tick grid, or whose value is below the minimum notional. Checking
before sending turns those rejections into a clear message for the trader, and lets
the paper exchange refuse exactly what the real one would. Everything is ``Decimal``:
a float cannot represent ``0.1`` and a step check on floats fails at random.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from lunara.services import TradingError

DecimalLike = Decimal | int | str

ZERO = Decimal(0)
_PRECISION = 34  # digits for intermediate divisions; far beyond any exchange amount

# Quote assets recognised when guessing the split of an unknown symbol, longest first
# so that "FDUSD" is not read as "...USD".
_QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "TRY", "EUR", "BTC", "ETH", "BNB")


class FilterKind:
    """Filter type names as Binance spells them in ``exchangeInfo``."""

    LOT_SIZE = "LOT_SIZE"
    PRICE_FILTER = "PRICE_FILTER"
    MIN_NOTIONAL = "MIN_NOTIONAL"
    NOTIONAL = "NOTIONAL"


class InvalidSymbolInfo(ValueError):
    """An ``exchangeInfo`` symbol entry lacks a field or carries a malformed number."""


class OrderRejected(TradingError):
    """The order breaks a symbol filter; ``reason`` says which, in the trader's terms."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_decimal(value: DecimalLike, name: str = "value") -> Decimal:
    """Exact conversion that refuses floats, whose binary expansion would leak in."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"{name} must be a Decimal, int or decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def format_amount(value: Decimal) -> str:
    """Plain notation without trailing zeros (``0.0001``, ``5``), never ``1E-4``."""
    text = format(value.normalize(), "f")
    return text


def format_value(value: Decimal) -> str:
    """A quote amount with at least two decimals (``3.20``) but no precision lost."""
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normalized = value.quantize(Decimal("0.01"))
    return format(normalized, "f")


def _round_to_multiple(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    if step <= ZERO:
        return value
    with localcontext() as context:
        context.prec = _PRECISION
        units = (value / step).to_integral_value(rounding=rounding)
        return units * step


@dataclass(frozen=True)
class SymbolRules:
    """The filters of one symbol. A zero maximum or step means "no such rule" (Binance)."""

    symbol: str
    base_asset: str
    quote_asset: str
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal
    min_notional: Decimal
    max_notional: Decimal

    def round_quantity_down(self, qty: DecimalLike) -> Decimal:
        """Down, never up: rounding up could spend more than the trader has."""
        quantity = to_decimal(qty, "quantity")
        return _round_to_multiple(quantity, self.step_size, ROUND_DOWN)

    def round_price(self, price: DecimalLike, rounding: str = ROUND_HALF_UP) -> Decimal:
        """To the nearest tick by default; pass ``decimal.ROUND_DOWN`` for a floor."""
        value = to_decimal(price, "price")
        return _round_to_multiple(value, self.tick_size, rounding)


def _filter_value(entry: Mapping[str, Any], symbol: str, kind: str, field: str) -> Decimal:
    raw = entry.get(field)
    if raw is None:
        raise InvalidSymbolInfo(f"{symbol}: filter {kind} has no {field}")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidSymbolInfo(f"{symbol}: {kind}.{field} is not a number: {raw!r}") from None
    if not value.is_finite() or value < ZERO:
        raise InvalidSymbolInfo(f"{symbol}: {kind}.{field} must be 0 or more, got {raw!r}")
    return value


def parse_symbol(entry: Mapping[str, Any]) -> SymbolRules:
    """One element of ``exchangeInfo["symbols"]``; a missing price or notional filter
    disables that rule, a missing ``LOT_SIZE`` is an error (orders cannot be sized)."""
    symbol = entry.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise InvalidSymbolInfo(f"symbol entry has no symbol name: {entry!r:.120}")
    base, quote = entry.get("baseAsset"), entry.get("quoteAsset")
    if not isinstance(base, str) or not isinstance(quote, str) or not base or not quote:
        raise InvalidSymbolInfo(f"{symbol}: baseAsset and quoteAsset are required")
    filters: dict[str, Mapping[str, Any]] = {}
    for item in entry.get("filters") or ():
        if isinstance(item, Mapping) and isinstance(item.get("filterType"), str):
            filters[item["filterType"]] = item
    lot = filters.get(FilterKind.LOT_SIZE)
    if lot is None:
        raise InvalidSymbolInfo(f"{symbol}: no {FilterKind.LOT_SIZE} filter")
    price = filters.get(FilterKind.PRICE_FILTER)
    min_price = max_price = tick = ZERO
    if price is not None:
        min_price = _filter_value(price, symbol, FilterKind.PRICE_FILTER, "minPrice")
        max_price = _filter_value(price, symbol, FilterKind.PRICE_FILTER, "maxPrice")
        tick = _filter_value(price, symbol, FilterKind.PRICE_FILTER, "tickSize")
    min_notional = max_notional = ZERO
    if (notional := filters.get(FilterKind.NOTIONAL)) is not None:
        min_notional = _filter_value(notional, symbol, FilterKind.NOTIONAL, "minNotional")
        if notional.get("maxNotional") is not None:
            max_notional = _filter_value(notional, symbol, FilterKind.NOTIONAL, "maxNotional")
    elif (legacy := filters.get(FilterKind.MIN_NOTIONAL)) is not None:
        min_notional = _filter_value(legacy, symbol, FilterKind.MIN_NOTIONAL, "minNotional")
    return SymbolRules(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        min_qty=_filter_value(lot, symbol, FilterKind.LOT_SIZE, "minQty"),
        max_qty=_filter_value(lot, symbol, FilterKind.LOT_SIZE, "maxQty"),
        step_size=_filter_value(lot, symbol, FilterKind.LOT_SIZE, "stepSize"),
        min_price=min_price,
        max_price=max_price,
        tick_size=tick,
        min_notional=min_notional,
        max_notional=max_notional,
    )


def parse_exchange_info(info: Mapping[str, Any]) -> dict[str, SymbolRules]:
    """All symbols of an ``exchangeInfo`` reply, keyed by symbol name."""
    symbols: Iterable[Mapping[str, Any]] = info.get("symbols") or ()
    rules = (parse_symbol(entry) for entry in symbols)
    return {rule.symbol: rule for rule in rules}


def _check_limit_price(rules: SymbolRules, price: Decimal) -> None:
    symbol, quote = rules.symbol, rules.quote_asset
    if price < rules.min_price:
        raise OrderRejected(
            f"price {format_amount(price)} is below the minimum "
            f"{format_amount(rules.min_price)} {quote} for {symbol}"
        )
    if rules.max_price > ZERO and price > rules.max_price:
        raise OrderRejected(
            f"price {format_amount(price)} is above the maximum "
            f"{format_amount(rules.max_price)} {quote} for {symbol}"
        )
    if rules.round_price(price, ROUND_DOWN) != price:
        raise OrderRejected(
            f"price {format_amount(price)} is not a multiple of the tick size "
            f"{format_amount(rules.tick_size)} {quote} for {symbol}"
        )


def check_order(
    rules: SymbolRules, quantity: DecimalLike, price: DecimalLike, *, limit: bool = False
) -> Decimal:
    """The quantity to send (rounded down to the step), or ``OrderRejected`` saying why.

    ``price`` is the price expected to fill, which the notional check values the order
    at. With ``limit`` it is the order's own price and must also respect the price
    filter (range and tick grid; round it with ``round_price`` first). A market order
    sends no price, so the price filter does not apply to it.
    """
    symbol, base, quote = rules.symbol, rules.base_asset, rules.quote_asset
    requested = to_decimal(quantity, "quantity")
    order_price = to_decimal(price, "price")
    if requested <= ZERO:
        raise OrderRejected(f"quantity must be positive, got {format_amount(requested)} {base}")
    if order_price <= ZERO:
        raise OrderRejected(f"price must be positive, got {format_amount(order_price)} {quote}")
    adjusted = rules.round_quantity_down(requested)
    if adjusted < rules.min_qty or adjusted <= ZERO:
        raise OrderRejected(
            f"quantity {format_amount(requested)} is below the minimum "
            f"{format_amount(max(rules.min_qty, rules.step_size))} {base} for {symbol}"
        )
    if rules.max_qty > ZERO and adjusted > rules.max_qty:
        raise OrderRejected(
            f"quantity {format_amount(adjusted)} is above the maximum "
            f"{format_amount(rules.max_qty)} {base} for {symbol}"
        )
    if limit:
        _check_limit_price(rules, order_price)
    value = adjusted * order_price
    if value < rules.min_notional:
        raise OrderRejected(
            f"order value {format_value(value)} {quote} is below the minimum notional "
            f"{format_amount(rules.min_notional)} {quote} for {symbol}"
        )
    if rules.max_notional > ZERO and value > rules.max_notional:
        raise OrderRejected(
            f"order value {format_value(value)} {quote} is above the maximum notional "
            f"{format_amount(rules.max_notional)} {quote} for {symbol}"
        )
    return adjusted


def quantity_for_quote(
    rules: SymbolRules, quote_amount: DecimalLike, price: DecimalLike
) -> Decimal:
    """How much base asset ``quote_amount`` buys at ``price`` (e.g. 100 USDT of BTC),
    rounded down so the order never costs more than the amount, then checked."""
    amount = to_decimal(quote_amount, "amount")
    order_price = to_decimal(price, "price")
    if amount <= ZERO:
        raise OrderRejected(
            f"amount must be positive, got {format_amount(amount)} {rules.quote_asset}"
        )
    if order_price <= ZERO:
        raise OrderRejected(
            f"price must be positive, got {format_amount(order_price)} {rules.quote_asset}"
        )
    with localcontext() as context:
        context.prec = _PRECISION
        raw = amount / order_price
    return check_order(rules, raw, order_price)


def _lot(min_qty: str, max_qty: str, step: str) -> dict[str, str]:
    return {
        "filterType": FilterKind.LOT_SIZE,
        "minQty": min_qty,
        "maxQty": max_qty,
        "stepSize": step,
    }


def _price_filter(min_price: str, max_price: str, tick: str) -> dict[str, str]:
    return {
        "filterType": FilterKind.PRICE_FILTER,
        "minPrice": min_price,
        "maxPrice": max_price,
        "tickSize": tick,
    }


def _notional(min_notional: str, max_notional: str) -> dict[str, str]:
    return {
        "filterType": FilterKind.NOTIONAL,
        "minNotional": min_notional,
        "maxNotional": max_notional,
    }


def _entry(base: str, quote: str, filters: list[dict[str, str]]) -> dict[str, Any]:
    return {"symbol": base + quote, "baseAsset": base, "quoteAsset": quote, "filters": filters}


# Binance spot values for the sim/paper market, in exchangeInfo's own shape so they go
# through the same parser as live data. Live trading must use the exchange's reply.
DEFAULT_EXCHANGE_INFO: dict[str, Any] = {
    "symbols": [
        _entry(
            "BTC",
            "USDT",
            [
                _lot("0.00001", "9000", "0.00001"),
                _price_filter("0.01", "1000000", "0.01"),
                _notional("5", "9000000"),
            ],
        ),
        _entry(
            "ETH",
            "USDT",
            [
                _lot("0.0001", "9000", "0.0001"),
                _price_filter("0.01", "1000000", "0.01"),
                _notional("5", "9000000"),
            ],
        ),
        _entry(
            "BNB",
            "USDT",
            [
                _lot("0.001", "9000", "0.001"),
                _price_filter("0.01", "1000000", "0.01"),
                _notional("5", "9000000"),
            ],
        ),
        _entry(
            "SOL",
            "USDT",
            [
                _lot("0.001", "9000", "0.001"),
                _price_filter("0.01", "1000000", "0.01"),
                _notional("5", "9000000"),
            ],
        ),
        _entry(
            "XRP",
            "USDT",
            [
                _lot("0.1", "9222449", "0.1"),
                _price_filter("0.0001", "1000", "0.0001"),
                _notional("5", "9000000"),
            ],
        ),
    ]
}

DEFAULT_RULES: Mapping[str, SymbolRules] = parse_exchange_info(DEFAULT_EXCHANGE_INFO)

# Minimum order value for symbols outside the table, by quote asset (Binance's usual
# levels); anything else quoted gets the stablecoin level.
_GENERIC_MIN_NOTIONAL = {"BTC": "0.0001", "ETH": "0.001", "BNB": "0.01"}


def split_symbol(symbol: str) -> tuple[str, str]:
    """Base and quote of a symbol such as ``DOGEUSDT``; ``InvalidSymbolInfo`` if unknown."""
    name = symbol.strip().upper()
    for quote in _QUOTE_ASSETS:
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)], quote
    raise InvalidSymbolInfo(
        f"{symbol!r} does not end in a known quote asset ({', '.join(_QUOTE_ASSETS)})"
    )


def default_rules(symbol: str) -> SymbolRules:
    """Rules for the sim/paper market: the table above, else a permissive generic rule."""
    name = symbol.strip().upper()
    if name in DEFAULT_RULES:
        return DEFAULT_RULES[name]
    base, quote = split_symbol(name)
    min_notional = _GENERIC_MIN_NOTIONAL.get(quote, "5")
    entry = _entry(
        base,
        quote,
        [
            _lot("0.00001", "90000000", "0.00001"),
            _price_filter("0.00000001", "1000000", "0.00000001"),
            _notional(min_notional, "0"),
        ],
    )
    return parse_symbol(entry)
