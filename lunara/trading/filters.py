"""Binance symbol filters: the size and price rules every order must respect.

The exchange rejects an order whose quantity is not a multiple of the lot step, whose
price is off the tick grid, or whose value is below the minimum notional. Checking
before sending turns those rejections into a clear message for the trader, and lets
the paper exchange refuse exactly what the real one would. Everything is ``Decimal``:
a float cannot represent ``0.1`` and a step check on floats fails at random.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from lunara.services import TradingError
from lunara.trading.symbols import symbol_name

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
    MARKET_LOT_SIZE = "MARKET_LOT_SIZE"
    PERCENT_PRICE = "PERCENT_PRICE"
    PERCENT_PRICE_BY_SIDE = "PERCENT_PRICE_BY_SIDE"


class SymbolStatus:
    """``exchangeInfo`` symbol states; only ``TRADING`` takes new orders (enums.md)."""

    TRADING = "TRADING"
    END_OF_DAY = "END_OF_DAY"
    HALT = "HALT"
    BREAK = "BREAK"
    CANCEL_ONLY = "CANCEL_ONLY"


MARKET_ORDER = "MARKET"
SPOT_PERMISSION = "SPOT"


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
    """The filters of one symbol. A zero maximum or step means "no such rule" (Binance).

    The fields after ``max_notional`` carry defaults so that a rule written by hand (the
    paper table, tests) is a plain spot symbol that is trading and takes market orders;
    parsed from ``exchangeInfo`` they hold what Binance published. ``market_*`` is the
    ``MARKET_LOT_SIZE`` filter (a zero step there means the ``LOT_SIZE`` step applies),
    the multipliers are ``PERCENT_PRICE_BY_SIDE`` (zero: no bound), and a market order is
    valued at the ``avg_price_mins``-minute average price for the notional check.
    """

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
    status: str = SymbolStatus.TRADING
    spot_allowed: bool = True
    market_allowed: bool = True
    market_min_qty: Decimal = ZERO
    market_max_qty: Decimal = ZERO
    market_step_size: Decimal = ZERO
    apply_min_to_market: bool = True
    apply_max_to_market: bool = True
    avg_price_mins: int = 5
    bid_multiplier_up: Decimal = ZERO
    bid_multiplier_down: Decimal = ZERO
    ask_multiplier_up: Decimal = ZERO
    ask_multiplier_down: Decimal = ZERO

    @property
    def trading(self) -> bool:
        """Binance takes new orders on the symbol (not in ``BREAK``, ``HALT``, ...)."""
        return self.status == SymbolStatus.TRADING

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


def _flag(entry: Mapping[str, Any], field: str, default: bool) -> bool:
    """A boolean filter or symbol field; absent means ``default``, anything but ``false``
    counts as set (Binance sends JSON booleans)."""
    raw = entry.get(field)
    if raw is None:
        return default
    return raw is not False and str(raw).lower() != "false"


def _minutes(entry: Mapping[str, Any] | None, default: int) -> int:
    raw = None if entry is None else entry.get("avgPriceMins")
    try:
        return int(raw) if raw is not None else default
    except (TypeError, ValueError):
        return default


def _spot_permitted(entry: Mapping[str, Any]) -> bool:
    """Spot orders are possible when ``isSpotTradingAllowed`` is not false and, if Binance
    lists permission sets, ``SPOT`` is in one of them (an account needs one permission of
    every set; the other sets are trading groups the account itself must hold). An
    absent list is the old ``permissions`` field, or nothing published: allowed."""
    if not _flag(entry, "isSpotTradingAllowed", True):
        return False
    sets = entry.get("permissionSets")
    if isinstance(sets, list) and sets:
        return any(isinstance(s, list) and SPOT_PERMISSION in s for s in sets)
    legacy = entry.get("permissions")
    if isinstance(legacy, list) and legacy:
        return SPOT_PERMISSION in legacy
    return True


def parse_symbol(entry: Mapping[str, Any]) -> SymbolRules:
    """One element of ``exchangeInfo["symbols"]``; a missing price or notional filter
    disables that rule, a missing ``LOT_SIZE`` is an error (orders cannot be sized).
    ``status``, ``orderTypes`` and the permissions are read too, so that an order on a
    symbol Binance would refuse is refused here with the reason."""
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
    min_notional, max_notional, apply_min, apply_max, notional_filter = _notional_rules(
        filters, symbol
    )
    market_min = market_max = market_step = ZERO
    if (market_lot := filters.get(FilterKind.MARKET_LOT_SIZE)) is not None:
        kind = FilterKind.MARKET_LOT_SIZE
        market_min = _filter_value(market_lot, symbol, kind, "minQty")
        market_max = _filter_value(market_lot, symbol, kind, "maxQty")
        market_step = _filter_value(market_lot, symbol, kind, "stepSize")
    bid_up, bid_down, ask_up, ask_down, band = _price_band(filters, symbol)
    order_types = entry.get("orderTypes")
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
        status=str(entry.get("status") or SymbolStatus.TRADING),
        spot_allowed=_spot_permitted(entry),
        market_allowed=not isinstance(order_types, list) or MARKET_ORDER in order_types,
        market_min_qty=market_min,
        market_max_qty=market_max,
        market_step_size=market_step,
        apply_min_to_market=apply_min,
        apply_max_to_market=apply_max,
        avg_price_mins=_minutes(notional_filter, _minutes(band, 5)),
        bid_multiplier_up=bid_up,
        bid_multiplier_down=bid_down,
        ask_multiplier_up=ask_up,
        ask_multiplier_down=ask_down,
    )


def _notional_rules(
    filters: Mapping[str, Mapping[str, Any]], symbol: str
) -> tuple[Decimal, Decimal, bool, bool, Mapping[str, Any] | None]:
    """Minimum and maximum notional, whether each applies to market orders, and the
    filter they came from: ``NOTIONAL``, else the older ``MIN_NOTIONAL``, else none."""
    min_notional = max_notional = ZERO
    apply_min = apply_max = True
    notional_filter: Mapping[str, Any] | None = None
    if (notional := filters.get(FilterKind.NOTIONAL)) is not None:
        notional_filter = notional
        min_notional = _filter_value(notional, symbol, FilterKind.NOTIONAL, "minNotional")
        if notional.get("maxNotional") is not None:
            max_notional = _filter_value(notional, symbol, FilterKind.NOTIONAL, "maxNotional")
        apply_min = _flag(notional, "applyMinToMarket", True)
        apply_max = _flag(notional, "applyMaxToMarket", True)
    elif (legacy := filters.get(FilterKind.MIN_NOTIONAL)) is not None:
        notional_filter = legacy
        min_notional = _filter_value(legacy, symbol, FilterKind.MIN_NOTIONAL, "minNotional")
        apply_min = _flag(legacy, "applyToMarket", True)
    return min_notional, max_notional, apply_min, apply_max, notional_filter


def _price_band(
    filters: Mapping[str, Mapping[str, Any]], symbol: str
) -> tuple[Decimal, Decimal, Decimal, Decimal, Mapping[str, Any] | None]:
    """The bid and ask multipliers (up, down) around the average price, and the filter
    they came from: ``PERCENT_PRICE_BY_SIDE``, else ``PERCENT_PRICE`` (one band for both
    sides), else none (all zero: no band)."""
    bid_up = bid_down = ask_up = ask_down = ZERO
    band = filters.get(FilterKind.PERCENT_PRICE_BY_SIDE)
    if band is not None:
        kind = FilterKind.PERCENT_PRICE_BY_SIDE
        bid_up = _filter_value(band, symbol, kind, "bidMultiplierUp")
        bid_down = _filter_value(band, symbol, kind, "bidMultiplierDown")
        ask_up = _filter_value(band, symbol, kind, "askMultiplierUp")
        ask_down = _filter_value(band, symbol, kind, "askMultiplierDown")
    elif (band := filters.get(FilterKind.PERCENT_PRICE)) is not None:
        kind = FilterKind.PERCENT_PRICE
        bid_up = ask_up = _filter_value(band, symbol, kind, "multiplierUp")
        bid_down = ask_down = _filter_value(band, symbol, kind, "multiplierDown")
    return bid_up, bid_down, ask_up, ask_down, band


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


def check_tradable(rules: SymbolRules, *, limit: bool = False) -> None:
    """``OrderRejected`` when Binance would refuse any order on the symbol as it stands:
    not ``TRADING`` (a ``BREAK`` or ``HALT`` answers -1013 "Market is closed."), closed to
    spot, or (for a market order) without ``MARKET`` among its order types. Refused here
    the trader reads why, and no order is recorded, sent or retried."""
    symbol = rules.symbol
    if not rules.trading:
        raise OrderRejected(
            f"{symbol} is not trading on the exchange right now (status {rules.status}); "
            "try again once it reopens"
        )
    if not rules.spot_allowed:
        raise OrderRejected(f"{symbol} is not open to spot trading")
    if not limit and not rules.market_allowed:
        raise OrderRejected(f"{symbol} takes no market orders")


def _common_step(first: Decimal, second: Decimal) -> Decimal:
    """The smallest amount that is a multiple of both steps (zero: no step)."""
    if first <= ZERO or second <= ZERO:
        return max(first, second)
    exponent = min(_exponent(first), _exponent(second))
    scale = Decimal(1).scaleb(exponent)
    lcm = math.lcm(int(first / scale), int(second / scale))
    return Decimal(lcm) * scale


def _exponent(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _check_quantity(rules: SymbolRules, requested: Decimal, *, limit: bool) -> Decimal:
    """``LOT_SIZE`` for every order (``quantity % stepSize == 0``), and ``MARKET_LOT_SIZE``
    on top for a market order: both ranges apply, and both steps."""
    symbol, base = rules.symbol, rules.base_asset
    step, min_qty, max_qty = rules.step_size, rules.min_qty, rules.max_qty
    market_max = False
    if not limit:
        step = _common_step(step, rules.market_step_size)
        min_qty = max(min_qty, rules.market_min_qty)
        if rules.market_max_qty > ZERO and (max_qty <= ZERO or rules.market_max_qty < max_qty):
            max_qty, market_max = rules.market_max_qty, True
    adjusted = _round_to_multiple(requested, step, ROUND_DOWN)
    if adjusted < min_qty or adjusted <= ZERO:
        raise OrderRejected(
            f"quantity {format_amount(requested)} is below the minimum "
            f"{format_amount(max(min_qty, step))} {base} for {symbol}"
        )
    if max_qty > ZERO and adjusted > max_qty:
        where = f"a market order on {symbol}" if market_max else symbol
        raise OrderRejected(
            f"quantity {format_amount(adjusted)} is above the maximum "
            f"{format_amount(max_qty)} {base} for {where}"
        )
    return adjusted


def _market_sellable(rules: SymbolRules, quantity: DecimalLike) -> Decimal:
    """What a market order could sell of ``quantity``: rounded down to the market step,
    zero below the minimum quantity (the rules `_check_quantity` applies to a market order)."""
    step = _common_step(rules.step_size, rules.market_step_size)
    sellable = _round_to_multiple(to_decimal(quantity, "quantity"), step, ROUND_DOWN)
    return sellable if sellable >= max(rules.min_qty, rules.market_min_qty) else ZERO


def below_minimum_quantity(rules: SymbolRules, quantity: DecimalLike) -> bool:
    """Whether no market order can sell ``quantity``, at any price: once rounded down to
    the market step it is below the minimum quantity (or nothing)."""
    return _market_sellable(rules, quantity) <= ZERO


def unsellable_remainder(rules: SymbolRules, quantity: DecimalLike, price: DecimalLike) -> bool:
    """Whether a market order cannot sell ``quantity`` at ``price``: below the minimum
    quantity, or worth less than the minimum notional where Binance applies it to market
    orders. What an exit leaves behind in that state is dust: it stays on the account as
    residue, and Binance's own small-balance conversion can sweep it."""
    sellable = _market_sellable(rules, quantity)
    if sellable <= ZERO:
        return True
    value = sellable * to_decimal(price, "price")
    return rules.apply_min_to_market and value < rules.min_notional


def _check_price_band(rules: SymbolRules, price: Decimal, side: str, average: Decimal) -> None:
    """``PERCENT_PRICE_BY_SIDE``: a limit price within the side's multipliers of the
    average price. It judges the order's own price, which a market order does not send,
    so Binance does not apply it to market orders and neither does this."""
    if str(side) == "BUY":
        up, down = rules.bid_multiplier_up, rules.bid_multiplier_down
    else:
        up, down = rules.ask_multiplier_up, rules.ask_multiplier_down
    symbol, quote = rules.symbol, rules.quote_asset
    average_text = f"the {rules.avg_price_mins}-minute average {format_amount(average)} {quote}"
    if up > ZERO and price > average * up:
        raise OrderRejected(
            f"price {format_amount(price)} is above {format_amount(average * up)} {quote}, "
            f"the highest a {side} on {symbol} may ask ({format_amount(up)} x {average_text})"
        )
    if down > ZERO and price < average * down:
        raise OrderRejected(
            f"price {format_amount(price)} is below {format_amount(average * down)} {quote}, "
            f"the lowest a {side} on {symbol} may ask ({format_amount(down)} x {average_text})"
        )


def check_order(
    rules: SymbolRules,
    quantity: DecimalLike,
    price: DecimalLike,
    *,
    limit: bool = False,
    side: str | None = None,
    average_price: DecimalLike | None = None,
) -> Decimal:
    """The quantity to send (rounded down to the step), or ``OrderRejected`` saying why.

    ``price`` is the price expected to fill. With ``limit`` it is the order's own price
    and must also respect the price filter (range and tick grid; round it with
    ``round_price`` first). A market order sends no price, so the price filter does not
    apply to it, and Binance values it for ``NOTIONAL`` at its ``avgPriceMins``-minute
    average price (``GET /api/v3/avgPrice``), only against the bounds with
    ``applyMinToMarket`` / ``applyMaxToMarket``: pass that price as ``average_price``
    (without it the order is valued at ``price``). A limit order is valued at its own
    price against both bounds, and with ``side`` and ``average_price`` its price must
    sit in the ``PERCENT_PRICE_BY_SIDE`` band. The function is pure: fetching the
    average is the caller's business.
    """
    symbol, base, quote = rules.symbol, rules.base_asset, rules.quote_asset
    requested = to_decimal(quantity, "quantity")
    order_price = to_decimal(price, "price")
    average = None if average_price is None else to_decimal(average_price, "average price")
    check_tradable(rules, limit=limit)
    if requested <= ZERO:
        raise OrderRejected(f"quantity must be positive, got {format_amount(requested)} {base}")
    if order_price <= ZERO:
        raise OrderRejected(f"price must be positive, got {format_amount(order_price)} {quote}")
    if average is not None and average <= ZERO:
        raise OrderRejected(f"no average price for {symbol} yet; the exchange takes no order")
    adjusted = _check_quantity(rules, requested, limit=limit)
    if limit:
        _check_limit_price(rules, order_price)
        if side is not None and average is not None:
            _check_price_band(rules, order_price, side, average)
    at_average = not limit and average is not None
    valued_at = average if at_average and average is not None else order_price
    apply_min = limit or rules.apply_min_to_market
    apply_max = limit or rules.apply_max_to_market
    at = (
        f" (at the {rules.avg_price_mins}-minute average price {format_amount(valued_at)} {quote})"
        if at_average
        else ""
    )
    value = adjusted * valued_at
    if apply_min and value < rules.min_notional:
        raise OrderRejected(
            f"order value {format_value(value)} {quote}{at} is below the minimum notional "
            f"{format_amount(rules.min_notional)} {quote} for {symbol}"
        )
    if apply_max and rules.max_notional > ZERO and value > rules.max_notional:
        raise OrderRejected(
            f"order value {format_value(value)} {quote}{at} is above the maximum notional "
            f"{format_amount(rules.max_notional)} {quote} for {symbol}"
        )
    return adjusted


def quantity_for_quote(
    rules: SymbolRules,
    quote_amount: DecimalLike,
    price: DecimalLike,
    *,
    average_price: DecimalLike | None = None,
) -> Decimal:
    """How much base asset ``quote_amount`` buys at ``price`` (e.g. 100 USDT of BTC),
    rounded down so the order never costs more than the amount, then checked as a
    market order (valued at ``average_price`` when given, see ``check_order``)."""
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
    return check_order(rules, raw, order_price, average_price=average_price)


def _entry(
    base: str,
    quote: str,
    lot: tuple[str, str, str],
    price: tuple[str, str, str],
    notional: tuple[str, str],
) -> dict[str, Any]:
    """An ``exchangeInfo`` symbol entry for a spot pair that is trading and takes market
    orders, with its ``LOT_SIZE``, ``PRICE_FILTER`` and ``NOTIONAL`` filters (the columns
    of ``_DEFAULT_SYMBOLS``)."""
    min_qty, max_qty, step = lot
    min_price, max_price, tick = price
    min_notional, max_notional = notional
    lot_filter = {"minQty": min_qty, "maxQty": max_qty, "stepSize": step}
    price_filter = {"minPrice": min_price, "maxPrice": max_price, "tickSize": tick}
    return {
        "symbol": base + quote,
        "status": SymbolStatus.TRADING,
        "baseAsset": base,
        "quoteAsset": quote,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", MARKET_ORDER],
        "isSpotTradingAllowed": True,
        "permissionSets": [[SPOT_PERMISSION]],
        "filters": [
            {"filterType": FilterKind.LOT_SIZE, **lot_filter},
            {"filterType": FilterKind.PRICE_FILTER, **price_filter},
            # As on Binance's spot USDT pairs: the minimum binds market orders, the
            # maximum not.
            {
                "filterType": FilterKind.NOTIONAL,
                "minNotional": min_notional,
                "applyMinToMarket": True,
                "maxNotional": max_notional,
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
    }


# Binance spot values for the sim/paper market, in exchangeInfo's own shape so they go
# through the same parser as live data. Live trading must use the exchange's reply.
# Columns: base, quote, LOT_SIZE (minQty, maxQty, stepSize), PRICE_FILTER (minPrice,
# maxPrice, tickSize), NOTIONAL (minNotional, maxNotional).
_DEFAULT_SYMBOLS = (
    ("BTC", "USDT", ("0.00001", "9000", "0.00001"), ("0.01", "1000000", "0.01"), ("5", "9000000")),
    ("ETH", "USDT", ("0.0001", "9000", "0.0001"), ("0.01", "1000000", "0.01"), ("5", "9000000")),
    ("BNB", "USDT", ("0.001", "9000", "0.001"), ("0.01", "1000000", "0.01"), ("5", "9000000")),
    ("SOL", "USDT", ("0.001", "9000", "0.001"), ("0.01", "1000000", "0.01"), ("5", "9000000")),
    ("XRP", "USDT", ("0.1", "9222449", "0.1"), ("0.0001", "1000", "0.0001"), ("5", "9000000")),
)
DEFAULT_EXCHANGE_INFO: dict[str, Any] = {"symbols": [_entry(*row) for row in _DEFAULT_SYMBOLS]}

DEFAULT_RULES: Mapping[str, SymbolRules] = parse_exchange_info(DEFAULT_EXCHANGE_INFO)

# Minimum order value for symbols outside the table, by quote asset (Binance's usual
# levels); anything else quoted gets the stablecoin level.
_GENERIC_MIN_NOTIONAL = {"BTC": "0.0001", "ETH": "0.001", "BNB": "0.01"}


def split_symbol(symbol: str) -> tuple[str, str]:
    """Base and quote of a symbol such as ``DOGEUSDT``; ``InvalidSymbolInfo`` if unknown."""
    name = symbol_name(symbol)
    for quote in _QUOTE_ASSETS:
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)], quote
    raise InvalidSymbolInfo(
        f"{symbol!r} does not end in a known quote asset ({', '.join(_QUOTE_ASSETS)})"
    )


def default_rules(symbol: str) -> SymbolRules:
    """Rules for the sim/paper market: the table above, else a permissive generic rule."""
    name = symbol_name(symbol)
    if name in DEFAULT_RULES:
        return DEFAULT_RULES[name]
    base, quote = split_symbol(name)
    min_notional = _GENERIC_MIN_NOTIONAL.get(quote, "5")
    entry = _entry(
        base,
        quote,
        ("0.00001", "90000000", "0.00001"),
        ("0.00000001", "1000000", "0.00000001"),
        (min_notional, "0"),
    )
    return parse_symbol(entry)
