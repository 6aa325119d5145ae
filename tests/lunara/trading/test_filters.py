"""Symbol filters: parsing exchangeInfo, rounding to the grid, and clear rejections."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.services import TradingError
from lunara.trading.filters import (
    DEFAULT_RULES,
    InvalidSymbolInfo,
    OrderRejected,
    SymbolRules,
    check_order,
    default_rules,
    parse_exchange_info,
    parse_symbol,
    quantity_for_quote,
    split_symbol,
)

D = Decimal

# Shaped like a Binance exchangeInfo reply: numbers as 8-decimal strings, extra filters.
EXCHANGE_INFO: dict[str, Any] = {
    "timezone": "UTC",
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.01000000",
                    "maxPrice": "1000000.00000000",
                    "tickSize": "0.01000000",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00010000",
                    "maxQty": "9000.00000000",
                    "stepSize": "0.00001000",
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "NOTIONAL",
                    "minNotional": "5.00000000",
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
        },
        {
            "symbol": "LTCBTC",
            "baseAsset": "LTC",
            "quoteAsset": "BTC",
            "filters": [
                {
                    "filterType": "LOT_SIZE",
                    "minQty": "0.00100000",
                    "maxQty": "100000.00000000",
                    "stepSize": "0.00100000",
                },
                {
                    "filterType": "MIN_NOTIONAL",
                    "minNotional": "0.00010000",
                    "applyToMarket": True,
                    "avgPriceMins": 5,
                },
            ],
        },
    ],
}


@pytest.fixture
def btc() -> SymbolRules:
    return parse_exchange_info(EXCHANGE_INFO)["BTCUSDT"]


def test_parses_lot_price_and_notional_filters(btc: SymbolRules) -> None:
    assert (btc.base_asset, btc.quote_asset) == ("BTC", "USDT")
    assert (btc.min_qty, btc.max_qty, btc.step_size) == (D("0.0001"), D(9000), D("0.00001"))
    assert (btc.min_price, btc.max_price, btc.tick_size) == (D("0.01"), D(1000000), D("0.01"))
    assert (btc.min_notional, btc.max_notional) == (D(5), D(9000000))


def test_legacy_min_notional_filter_and_missing_price_filter() -> None:
    ltc = parse_exchange_info(EXCHANGE_INFO)["LTCBTC"]
    assert ltc.min_notional == D("0.0001")
    assert ltc.max_notional == 0
    assert ltc.tick_size == 0
    assert ltc.round_price("0.001234567") == D("0.001234567")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"symbol": "XUSDT", "baseAsset": "X", "quoteAsset": "USDT", "filters": []}, "LOT_SIZE"),
        ({"baseAsset": "X", "quoteAsset": "USDT"}, "no symbol name"),
        ({"symbol": "XUSDT", "filters": []}, "baseAsset"),
        (
            {
                "symbol": "XUSDT",
                "baseAsset": "X",
                "quoteAsset": "USDT",
                "filters": [
                    {"filterType": "LOT_SIZE", "minQty": "abc", "maxQty": "1", "stepSize": "1"}
                ],
            },
            r"XUSDT: LOT_SIZE.minQty is not a number",
        ),
        (
            {
                "symbol": "XUSDT",
                "baseAsset": "X",
                "quoteAsset": "USDT",
                "filters": [{"filterType": "LOT_SIZE", "minQty": "1", "maxQty": "1"}],
            },
            "XUSDT: filter LOT_SIZE has no stepSize",
        ),
    ],
)
def test_malformed_symbol_entries_name_what_is_wrong(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSymbolInfo, match=message):
        parse_symbol(entry)


def test_quantity_rounds_down_to_the_step(btc: SymbolRules) -> None:
    assert btc.round_quantity_down("0.123456789") == D("0.12345")
    assert btc.round_quantity_down(D("0.00001999")) == D("0.00001")
    assert btc.round_quantity_down(3) == D(3)


def test_price_rounds_to_the_tick(btc: SymbolRules) -> None:
    assert btc.round_price("64000.125") == D("64000.13")
    assert btc.round_price("64000.124") == D("64000.12")
    assert btc.round_price("64000.129", ROUND_DOWN) == D("64000.12")


def test_floats_are_refused_to_keep_amounts_exact(btc: SymbolRules) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        btc.round_quantity_down(0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="price"):
        check_order(btc, "1", 64000.0)  # type: ignore[arg-type]


def test_quantity_rounding_to_nothing_names_the_step_as_minimum() -> None:
    rules = default_rules("BTCUSDT")  # minQty equals the step there
    with pytest.raises(OrderRejected) as caught:
        check_order(rules, "0.000009", "64000")
    assert caught.value.reason == "quantity 0.000009 is below the minimum 0.00001 BTC for BTCUSDT"


def test_accepted_order_returns_the_rounded_quantity(btc: SymbolRules) -> None:
    assert check_order(btc, "0.0012345", "64000") == D("0.00123")


def test_quantity_below_minimum_is_rejected_with_the_minimum(btc: SymbolRules) -> None:
    with pytest.raises(OrderRejected) as caught:
        check_order(btc, "0.00001", "64000")
    assert caught.value.reason == "quantity 0.00001 is below the minimum 0.0001 BTC for BTCUSDT"


def test_order_value_below_min_notional_is_rejected_with_both_amounts(btc: SymbolRules) -> None:
    with pytest.raises(OrderRejected) as caught:
        check_order(btc, "0.0001", "32000")
    assert caught.value.reason == (
        "order value 3.20 USDT is below the minimum notional 5 USDT for BTCUSDT"
    )


def test_quantity_and_notional_maximums_are_enforced(btc: SymbolRules) -> None:
    with pytest.raises(
        OrderRejected, match=re.escape("quantity 9000.1 is above the maximum 9000 BTC")
    ):
        check_order(btc, "9000.1", "1")
    with pytest.raises(OrderRejected, match="above the maximum notional 9000000 USDT"):
        check_order(btc, "1000", "64000", limit=True)
    # applyMaxToMarket is false for BTCUSDT: Binance lets a market order past maxNotional.
    assert check_order(btc, "1000", "64000") == D(1000)


def test_limit_price_must_sit_on_the_tick_grid_and_in_range(btc: SymbolRules) -> None:
    with pytest.raises(OrderRejected, match=re.escape("not a multiple of the tick size 0.01 USDT")):
        check_order(btc, "0.001", "64000.123", limit=True)
    with pytest.raises(
        OrderRejected, match=re.escape("price 0.001 is below the minimum 0.01 USDT")
    ):
        check_order(btc, "1", "0.001", limit=True)
    # A market order's expected price is only used to value the order.
    assert check_order(btc, "0.001", "64000.123") == D("0.001")


@pytest.mark.parametrize(("quantity", "price"), [("0", "1"), ("-1", "1"), ("1", "0")])
def test_non_positive_amounts_are_rejected(btc: SymbolRules, quantity: str, price: str) -> None:
    with pytest.raises(OrderRejected, match="must be positive"):
        check_order(btc, quantity, price)


def test_rejections_are_trading_errors_fit_for_the_trader(btc: SymbolRules) -> None:
    with pytest.raises(TradingError) as caught:
        check_order(btc, "0.00001", "1")
    assert caught.value.message.startswith("quantity 0.00001 is below")


def test_quote_amount_buys_the_rounded_down_quantity(btc: SymbolRules) -> None:
    quantity = quantity_for_quote(btc, 100, "64123.45")
    assert quantity == D("0.00155")
    assert quantity * D("64123.45") <= 100


def test_quote_amount_too_small_for_the_minimum_is_rejected(btc: SymbolRules) -> None:
    with pytest.raises(OrderRejected, match="below the minimum"):
        quantity_for_quote(btc, "4", "10000")
    with pytest.raises(OrderRejected, match="amount must be positive"):
        quantity_for_quote(btc, "0", "10000")


def test_default_table_covers_the_paper_market_symbols() -> None:
    assert set(DEFAULT_RULES) == {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"}
    assert default_rules("btcusdt") is DEFAULT_RULES["BTCUSDT"]
    assert default_rules("XRPUSDT").step_size == D("0.1")
    assert check_order(default_rules("ETHUSDT"), "0.01", "3000") == D("0.01")


def test_generic_rule_for_other_symbols_uses_the_quote_asset() -> None:
    doge = default_rules("DOGEUSDT")
    assert (doge.base_asset, doge.quote_asset, doge.min_notional) == ("DOGE", "USDT", D(5))
    eth_btc = default_rules("ETHBTC")
    assert (eth_btc.base_asset, eth_btc.quote_asset) == ("ETH", "BTC")
    assert eth_btc.min_notional == D("0.0001")
    assert split_symbol("ABCFDUSD") == ("ABC", "FDUSD")
    with pytest.raises(InvalidSymbolInfo, match="known quote asset"):
        default_rules("BTCXYZ")


steps = st.sampled_from([D("1"), D("0.1"), D("0.001"), D("0.00001"), D("0.00000001"), D("5")])
quantities = st.decimals(min_value=D("0.00000001"), max_value=D(100000), places=10)


@settings(max_examples=300)
@given(step=steps, quantity=quantities)
def test_rounded_quantity_is_a_step_multiple_never_above_the_input(
    step: Decimal, quantity: Decimal
) -> None:
    rules = SymbolRules("XUSDT", "X", "USDT", D(0), D(0), step, D(0), D(0), D(0), D(0), D(0))
    rounded = rules.round_quantity_down(quantity)
    assert rounded % step == 0
    assert rounded <= quantity
    assert quantity - rounded < step


@settings(max_examples=300)
@given(
    step=steps,
    min_qty=st.decimals(min_value=0, max_value=10, places=3),
    min_notional=st.decimals(min_value=0, max_value=100, places=2),
    quantity=quantities,
    price=st.decimals(min_value=D("0.0001"), max_value=D(100000), places=4),
)
def test_orders_either_pass_every_filter_or_are_rejected_with_a_reason(
    step: Decimal, min_qty: Decimal, min_notional: Decimal, quantity: Decimal, price: Decimal
) -> None:
    rules = SymbolRules(
        "XUSDT", "X", "USDT", min_qty, D(0), step, D(0), D(0), D(0), min_notional, D(0)
    )
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        accepted = check_order(rules, quantity, price)
    except OrderRejected as rejection:
        assert "XUSDT" in rejection.reason  # noqa: PT017
        assert "below the minimum" in rejection.reason  # noqa: PT017
        rounded = rules.round_quantity_down(quantity)
        assert rounded < min_qty or rounded == 0 or rounded * price < min_notional
    else:
        assert accepted % step == 0
        assert 0 < accepted <= quantity
        assert accepted >= min_qty
        assert accepted * price >= min_notional


def _btc_entry(**changes: Any) -> dict[str, Any]:
    entry = dict(EXCHANGE_INFO["symbols"][0])
    entry["filters"] = [
        *entry["filters"],
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": "80", "stepSize": "0"},
        {
            "filterType": "PERCENT_PRICE_BY_SIDE",
            "bidMultiplierUp": "1.2",
            "bidMultiplierDown": "0.2",
            "askMultiplierUp": "5",
            "askMultiplierDown": "0.8",
            "avgPriceMins": 5,
        },
    ]
    return entry | changes


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "BREAK"}, "not trading on the exchange right now (status BREAK)"),
        ({"status": "HALT"}, "status HALT"),
        ({"isSpotTradingAllowed": False}, "not open to spot trading"),
        ({"permissionSets": [["MARGIN"], ["TRD_GRP_004"]]}, "not open to spot trading"),
        ({"orderTypes": ["LIMIT", "LIMIT_MAKER"]}, "takes no market orders"),
    ],
)
def test_symbols_binance_would_refuse_are_refused_with_the_reason(
    changes: dict[str, Any], reason: str
) -> None:
    rules = parse_symbol(_btc_entry(**changes))
    with pytest.raises(OrderRejected, match=re.escape(reason)):
        check_order(rules, "0.001", "64000")


def test_market_lot_size_with_zero_step_keeps_the_lot_step_and_caps_market_orders() -> None:
    rules = parse_symbol(_btc_entry())
    assert check_order(rules, "0.0012345", "64000") == D("0.00123")
    with pytest.raises(OrderRejected, match="above the maximum 80 BTC for a market order"):
        check_order(rules, "80.5", "64000")
    assert check_order(rules, "80.5", "64000", limit=True) == D("80.5")


def test_min_notional_of_a_market_order_uses_the_average_price() -> None:
    rules = parse_symbol(_btc_entry())
    assert check_order(rules, "0.0001", "64000") == D("0.0001")
    with pytest.raises(OrderRejected, match=r"3\.20 USDT \(at the 5-minute average price 32000"):
        check_order(rules, "0.0001", "64000", average_price="32000")


def test_a_limit_price_must_sit_in_its_sides_percent_price_band() -> None:
    rules = parse_symbol(_btc_entry())
    with pytest.raises(OrderRejected, match="above 60000 USDT"):
        check_order(rules, "1", "60000.01", limit=True, side="BUY", average_price="50000")
    with pytest.raises(OrderRejected, match="below 40000 USDT"):
        check_order(rules, "1", "39999.99", limit=True, side="SELL", average_price="50000")
    assert check_order(rules, "1", "60000", limit=True, side="BUY", average_price="50000") == 1
    # A market order sends no price, so the band does not judge it (filters.md).
    assert check_order(rules, "1", "90000", side="BUY", average_price="50000") == 1


@settings(max_examples=200)
@given(
    lot_step=steps,
    market_step=st.sampled_from([D(0), D("0.1"), D("0.001"), D(5)]),
    quantity=quantities,
)
def test_market_quantities_are_multiples_of_both_steps(
    lot_step: Decimal, market_step: Decimal, quantity: Decimal
) -> None:
    rules = SymbolRules(
        "XUSDT", "X", "USDT", D(0), D(0), lot_step, D(0), D(0), D(0), D(0), D(0),
        market_step_size=market_step,
    )  # fmt: skip
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        accepted = check_order(rules, quantity, "1")
    except OrderRejected as rejection:
        assert "below the minimum" in rejection.reason  # noqa: PT017
    else:
        assert accepted % lot_step == 0
        assert 0 < accepted <= quantity
        assert market_step == 0 or accepted % market_step == 0
