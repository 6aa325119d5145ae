"""The fake Binance speaks spot REST well enough for the real python-binance Client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException

from tests.fakes.binance_api import DROP_CLOSE, FakeBinance

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

KEY, SECRET = "key-alice", "secret-alice"


@pytest.fixture(autouse=True)
def websocket_loop() -> Iterator[None]:
    """An event loop for the sync clients here, closed after each test.

    python-binance's Client sets up its websocket API as it is made, on the thread's
    current event loop; where there is none (a sync test) it makes one, makes it current
    and never closes it. The next async test replaces it, and the garbage collector later
    finds it unclosed, in whichever test is running then. Given this one, the clients
    take it, and it is closed here (no client of these tests opens a websocket)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture
def bn() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        fake.add_account(KEY, SECRET, USDT="1000")
        yield fake


def client(fake: FakeBinance, key: str = KEY, secret: str = SECRET, timeout: float = 2.0) -> Client:
    class Local(Client):  # type: ignore[misc]  # python-binance ships no type information
        API_URL = fake.api_url

    return Local(key, secret, requests_params={"timeout": timeout})  # pings on construction


def test_public_endpoints_answer_in_binance_shapes(bn: FakeBinance) -> None:
    bn.set_price("ETHUSDT", "3000")
    c = client(bn)
    assert bn.count("GET", "ping") == 1
    assert abs(c.get_server_time()["serverTime"] - c.get_server_time()["serverTime"]) < 60_000
    info = c.get_symbol_info("ETHUSDT")
    assert info is not None
    assert info["quoteAsset"] == "USDT"
    kinds = {f["filterType"] for f in info["filters"]}
    assert {"LOT_SIZE", "PRICE_FILTER", "NOTIONAL"} <= kinds
    assert c.get_symbol_ticker(symbol="ETHUSDT") == {"symbol": "ETHUSDT", "price": "3000"}
    both = c.get_symbol_ticker(symbols='["BTCUSDT","ETHUSDT"]')
    assert [t["symbol"] for t in both] == ["BTCUSDT", "ETHUSDT"]
    assert len(c.get_all_tickers()) == 2
    rows = c.get_klines(symbol="ETHUSDT", interval="1m", limit=30)
    assert len(rows) == 30
    assert len(rows[0]) == 12
    assert rows[-1][4] == "3000.00000000"
    assert rows[1][0] - rows[0][0] == 60_000
    assert rows[0][6] == rows[0][0] + 59_999


def test_unknown_symbol_is_refused(bn: FakeBinance) -> None:
    with pytest.raises(BinanceAPIException) as caught:
        client(bn).get_symbol_ticker(symbol="NOPEUSDT")
    assert caught.value.code == -1121


def test_scripted_prices_advance_and_become_the_kline_closes(bn: FakeBinance) -> None:
    bn.script_prices("BTCUSDT", ["100", "101", "99"])
    c = client(bn)
    assert c.get_symbol_ticker(symbol="BTCUSDT")["price"] == "100"
    bn.advance()
    assert c.get_symbol_ticker(symbol="BTCUSDT")["price"] == "101"
    bn.advance(steps=5)  # a path ends on its last price
    closes = [row[4] for row in c.get_klines(symbol="BTCUSDT", interval="1h")]
    assert closes == ["100.00000000", "101.00000000", "99.00000000"]


def test_signed_market_order_fills_and_is_found_by_client_id(bn: FakeBinance) -> None:
    c = client(bn)
    order = c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01",
                           newClientOrderId="cid-1")  # fmt: skip
    assert order["status"] == "FILLED"
    assert order["clientOrderId"] == "cid-1"
    assert order["fills"][0]["price"] == "50000"
    assert order["fills"][0]["qty"] == "0.01"
    # The 0.1 % commission of a BUY is taken from the base asset received.
    assert (order["fills"][0]["commission"], order["fills"][0]["commissionAsset"]) == (
        "0.00001000", "BTC",
    )  # fmt: skip
    found = c.get_order(symbol="BTCUSDT", origClientOrderId="cid-1")
    assert found["orderId"] == order["orderId"]
    assert found["executedQty"] == "0.01"
    assert "fills" not in found  # GET /order carries no fills and no commission
    assert c.get_order(symbol="BTCUSDT", orderId=order["orderId"])["clientOrderId"] == "cid-1"
    balances = {b["asset"]: b["free"] for b in c.get_account()["balances"]}
    assert Decimal(balances["USDT"]) == Decimal(500)
    assert Decimal(balances["BTC"]) == Decimal("0.00999")
    trades = c.get_my_trades(symbol="BTCUSDT", orderId=order["orderId"])
    assert [(t["qty"], t["commission"], t["commissionAsset"]) for t in trades] == [
        ("0.01", "0.00001000", "BTC")
    ]
    with pytest.raises(BinanceAPIException) as caught:  # more than the account holds
        c.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01")
    assert caught.value.code == -2010
    sold = c.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.00999")
    assert (sold["fills"][0]["commission"], sold["fills"][0]["commissionAsset"]) == (
        "0.49950000", "USDT",
    )  # fmt: skip
    assert bn.recorded[-1].api_key == KEY


def test_a_filled_orders_client_id_is_accepted_again_as_a_new_order(bn: FakeBinance) -> None:
    c = client(bn)
    for _ in range(2):
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                       newClientOrderId="same")  # fmt: skip
    assert [o["clientOrderId"] for o in bn.orders] == ["same", "same"]
    assert len(bn.duplicates) == 1  # the reuse is on record for the tests' checks
    assert c.get_order(symbol="BTCUSDT", origClientOrderId="same")["orderId"] == 2


def test_reused_client_order_id_is_refused_with_the_friendly_switch(bn: FakeBinance) -> None:
    bn.refuse_reused_client_ids = True
    c = client(bn)
    c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                   newClientOrderId="same")  # fmt: skip
    with pytest.raises(BinanceAPIException) as caught:
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                       newClientOrderId="same")  # fmt: skip
    assert (caught.value.code, caught.value.message) == (-2010, "Duplicate order sent.")
    assert len(bn.orders) == 1
    assert len(bn.duplicates) == 1


def test_orders_are_refused_for_balance_and_filters(bn: FakeBinance) -> None:
    c = client(bn)
    cases = [("1", -2010), ("0.000001", -1013), ("0.000015", -1013), ("0.00005", -1013)]
    for quantity, code in cases:  # too dear, below LOT_SIZE, off-step, below NOTIONAL
        with pytest.raises(BinanceAPIException) as caught:
            c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=quantity)
        assert caught.value.code == code, quantity
    assert bn.orders == []


def test_lookup_of_an_unknown_or_foreign_order_is_2013(bn: FakeBinance) -> None:
    bn.add_account("key-bob", "secret-bob", USDT="100")
    client(bn, "key-bob", "secret-bob").create_order(
        symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001", newClientOrderId="bobs"
    )
    with pytest.raises(BinanceAPIException) as caught:
        client(bn).get_order(symbol="BTCUSDT", origClientOrderId="bobs")
    assert caught.value.code == -2013


def test_bad_signature_is_1022(bn: FakeBinance) -> None:
    with pytest.raises(BinanceAPIException) as caught:
        client(bn, secret="wrong").get_account()
    assert (caught.value.status_code, caught.value.code) == (400, -1022)


def test_clock_skew_beyond_recv_window_is_1021(bn: FakeBinance) -> None:
    c = client(bn)
    bn.skew_ms = 60_000
    with pytest.raises(BinanceAPIException) as caught:
        c.get_account()
    assert caught.value.code == -1021
    c.timestamp_offset = c.get_server_time()["serverTime"] - int(time.time() * 1000)
    assert c.get_account()["balances"]


@pytest.mark.parametrize("banned", [False, True])
def test_rate_limit_carries_retry_after(bn: FakeBinance, banned: bool) -> None:
    c = client(bn)
    bn.inject_rate_limit("account", 7, banned=banned)
    with pytest.raises(BinanceAPIException) as caught:
        c.get_account()
    assert caught.value.status_code == (418 if banned else 429)
    assert caught.value.code == -1003
    assert caught.value.response.headers["Retry-After"] == "7"
    assert c.get_account()["balances"]  # only the next call was affected


def test_stall_times_the_client_out_then_recovers(bn: FakeBinance) -> None:
    c = client(bn, timeout=0.2)
    bn.inject_stall("ticker/price", 1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        c.get_symbol_ticker(symbol="BTCUSDT")
    assert c.get_symbol_ticker(symbol="BTCUSDT")["price"] == "50000"


@pytest.mark.parametrize("mode", ["stall", DROP_CLOSE])
def test_dropped_order_reply_still_records_the_order(bn: FakeBinance, mode: str) -> None:
    c = client(bn, timeout=0.3)
    bn.drop_mode, bn.drop_stall_s = mode, 1.0
    bn.lookup_lag_s = 0.0  # friendly: this test is about the order being kept
    bn.drop_next_order_response = True
    with pytest.raises(requests.exceptions.RequestException):
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                       newClientOrderId="lost")  # fmt: skip
    assert c.get_order(symbol="BTCUSDT", origClientOrderId="lost")["status"] == "FILLED"
    assert [o["clientOrderId"] for o in bn.orders] == ["lost"]


def test_after_a_dropped_reply_get_order_lags_while_all_orders_and_my_trades_show_it(
    bn: FakeBinance,
) -> None:
    c = client(bn, timeout=0.3)
    bn.drop_mode, bn.drop_stall_s, bn.lookup_lag_s = DROP_CLOSE, 0.0, 3600.0
    bn.drop_next_order_response = True
    with pytest.raises(requests.exceptions.RequestException):
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001",
                       newClientOrderId="lost")  # fmt: skip
    with pytest.raises(BinanceAPIException) as caught:
        c.get_order(symbol="BTCUSDT", origClientOrderId="lost")
    assert caught.value.code == -2013
    listed = c.get_all_orders(symbol="BTCUSDT")
    assert [(o["clientOrderId"], o["status"]) for o in listed] == [("lost", "FILLED")]
    assert "fills" not in listed[0]
    trades = c.get_my_trades(symbol="BTCUSDT", orderId=listed[0]["orderId"])
    assert [t["commissionAsset"] for t in trades] == ["BTC"]


@pytest.mark.parametrize("status", ["EXPIRED", "EXPIRED_IN_MATCH"])
def test_a_market_order_can_fill_partly_and_expire(bn: FakeBinance, status: str) -> None:
    bn.commission_rate = Decimal(0)
    c = client(bn)
    c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    bn.fill_next_partly("0.4", status)
    sold = c.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.01")
    assert (sold["status"], sold["origQty"], sold["executedQty"]) == (status, "0.01", "0.004")
    balances = {b["asset"]: Decimal(b["free"]) for b in c.get_account()["balances"]}
    assert balances == {"USDT": Decimal(1000 - 500 + 200), "BTC": Decimal("0.006")}
    again = c.create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.006")
    assert again["status"] == "FILLED"  # only the next order was cut short


def test_bnb_pays_the_commission_when_switched_on_and_held(bn: FakeBinance) -> None:
    bn.bnb_pays_fees = True
    bn.set_price("BNBUSDT", "500")
    bn.add_account(KEY, SECRET, USDT="1000", BNB="1")
    c = client(bn)
    order = c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
    assert (order["fills"][0]["commission"], order["fills"][0]["commissionAsset"]) == (
        "0.00100000", "BNB",
    )  # fmt: skip
    balances = {b["asset"]: Decimal(b["free"]) for b in c.get_account()["balances"]}
    assert balances == {"USDT": Decimal(500), "BTC": Decimal("0.01"), "BNB": Decimal("0.999")}
    commission = c._get("account/commission", True, data={"symbol": "BTCUSDT"})
    assert commission["standardCommission"]["taker"] == "0.001"
    assert commission["discount"]["enabledAccount"] is True


def test_standalone_process_prints_its_url_and_obeys_control() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.binance_api", "--port", "0",
         "--account", f"{KEY}:{SECRET}:USDT=100", "--price", "ETHUSDT=2000"],
        cwd=root, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        def post(path: str, payload: dict[str, Any]) -> Any:
            request = urllib.request.Request(url + path, json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as reply:
                return json.load(reply)

        post("/_control/price", {"ETHUSDT": "2100"})
        c = Client(KEY, SECRET, ping=False)
        c.API_URL = url + "/api"
        assert c.get_symbol_ticker(symbol="ETHUSDT")["price"] == "2100"
        c.create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01")
        with urllib.request.urlopen(url + "/_control/stats", timeout=5) as reply:
            assert json.load(reply)["orders"] == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
        assert proc.returncode == 0


def test_symbol_status_order_types_and_market_lot_size_refuse_as_binance(bn: FakeBinance) -> None:
    c = client(bn)
    info = c.get_exchange_info()["symbols"][0]
    assert (info["status"], info["isSpotTradingAllowed"]) == ("TRADING", True)
    assert "MARKET" in info["orderTypes"]
    assert info["permissionSets"] == [["SPOT", "MARGIN"]]
    cases: list[tuple[dict[str, dict[str, object]], int, str]] = [
        ({"symbol_status": {"BTCUSDT": "BREAK"}}, -1013, "Market is closed."),
        ({"order_types": {"BTCUSDT": ["LIMIT"]}}, -1013, "Market orders are not supported"),
        ({"permission_sets": {"BTCUSDT": [["MARGIN"]]}}, -2010, "not permitted"),
    ]
    for change, code, message in cases:
        for name, value in change.items():
            setattr(bn, name, value)
        with pytest.raises(BinanceAPIException) as caught:
            c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001")
        assert caught.value.code == code
        assert message in caught.value.message
        for name in change:
            setattr(bn, name, {})
    bn.balances[KEY]["USDT"] = Decimal(10_000_000)
    with pytest.raises(BinanceAPIException, match="Filter failure: MARKET_LOT_SIZE"):
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="100.1")
    assert bn.orders == []


def test_notional_judges_a_market_order_at_the_average_price(bn: FakeBinance) -> None:
    c = client(bn)
    bn.average_prices["BTCUSDT"] = Decimal(40000)
    assert c.get_avg_price(symbol="BTCUSDT")["price"] == "40000.00000000"
    # 0.00012 BTC is 6 USDT at the 50000 price but 4.80 at the 40000 average.
    with pytest.raises(BinanceAPIException, match="Filter failure: NOTIONAL"):
        c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.00012")
    bn.average_prices.clear()
    c.create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.00012")
    assert len(bn.orders) == 1
