"""A local Binance spot REST server for tests, spoken to by the real python-binance client.

Verifies HMAC-SHA256 signatures and the timestamp window like Binance, keeps balances
and orders per API key, answers MARKET orders with FULL responses, looks orders up by
client order id, and refuses a reused client order id (-2010 "Duplicate order sent.").
Tests inject errors (429 + Retry-After, -1021 by clock skew, -2010) and can make it
accept an order but drop the response, as a dying connection would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

SYMBOL_FILTERS = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
    {"filterType": "NOTIONAL", "minNotional": "5", "maxNotional": "9000000"},
]


@dataclass
class FakeBinance:
    keys: dict[str, str] = field(default_factory=dict)  # api key -> secret
    prices: dict[str, Decimal] = field(default_factory=lambda: {"BTCUSDT": Decimal("50000")})
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    skew_ms: int = 0  # how far the client's clock is off, as the server sees it
    drop_next_order_response: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = defaultdict(
            list
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeBinance:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Binance did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_route("*", "/api/v3/{endpoint:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self._runner = runner
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.close()

    # -- controls -------------------------------------------------------------------------

    def add_account(self, api_key: str, secret: str, **balances: str) -> None:
        with self._lock:
            self.keys[api_key] = secret
            self.balances[api_key] = {asset: Decimal(v) for asset, v in balances.items()}

    def inject(self, endpoint: str, status: int, code: int, msg: str, *,
               headers: dict[str, str] | None = None, times: int = 1) -> None:  # fmt: skip
        with self._lock:
            for _ in range(times):
                self._errors[endpoint].append((status, {"code": code, "msg": msg}, headers or {}))

    def count(self, method: str, endpoint: str) -> int:
        with self._lock:
            return sum(1 for m, e in self.requests if m == method and e == endpoint)

    # -- the API ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        raw_query = request.query_string
        raw_body = (await request.read()).decode()
        with self._lock:
            self.requests.append((request.method, endpoint))
            injected = self._errors[endpoint].pop(0) if self._errors[endpoint] else None
        if injected is not None:
            status, body, headers = injected
            return web.json_response(body, status=status, headers=headers)
        params = dict(parse_qsl(raw_query)) | dict(parse_qsl(raw_body))
        try:
            if "signature" in params:
                api_key = self._verify(request, raw_query or raw_body)
            else:
                api_key = None
            result = self._route(request.method, endpoint, params, api_key)
        except _Refusal as refusal:
            return web.json_response(
                {"code": refusal.code, "msg": refusal.msg}, status=refusal.status
            )
        if isinstance(result, _Drop):
            await asyncio.sleep(
                3
            )  # the order is recorded; the reply comes after the client gave up
        return web.json_response(result)

    def _verify(self, request: web.Request, raw: str) -> str:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        secret = self.keys.get(api_key)
        if secret is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, _, signature = raw.rpartition("&signature=")
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _Refusal(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload))
        server_ms = int(time.time() * 1000) + self.skew_ms
        window = int(params.get("recvWindow", 5000))
        if abs(server_ms - int(params.get("timestamp", 0))) > window:
            raise _Refusal(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return api_key

    def _route(
        self, method: str, endpoint: str, params: dict[str, str], api_key: str | None
    ) -> Any:
        if endpoint == "ping":
            return {}
        if endpoint == "time":
            return {"serverTime": int(time.time() * 1000) + self.skew_ms}
        if endpoint == "exchangeInfo":
            return {"symbols": [
                {"symbol": s, "status": "TRADING", "baseAsset": s[:-4], "quoteAsset": s[-4:],
                 "filters": SYMBOL_FILTERS} for s in self.prices
            ]}  # fmt: skip
        if endpoint == "ticker/price":
            return [{"symbol": s, "price": str(p)} for s, p in self.prices.items()]
        if endpoint == "account" and api_key:
            return {"balances": [
                {"asset": a, "free": str(v), "locked": "0"} for a, v in self.balances[api_key].items()
            ]}  # fmt: skip
        if endpoint == "order" and api_key and method == "POST":
            return self._place(api_key, params)
        if endpoint == "order" and api_key and method == "GET":
            with self._lock:
                for order in self.orders:
                    if order["clientOrderId"] == params.get("origClientOrderId"):
                        return order
            raise _Refusal(400, -2013, "Order does not exist.")
        raise _Refusal(404, -1000, f"unknown endpoint {endpoint}")

    def _place(self, api_key: str, params: dict[str, str]) -> Any:
        symbol = params["symbol"]
        quantity = Decimal(params["quantity"])
        price = self.prices[symbol]
        base, quote = symbol[:-4], symbol[-4:]
        with self._lock:
            if any(o["clientOrderId"] == params.get("newClientOrderId") for o in self.orders):
                raise _Refusal(400, -2010, "Duplicate order sent.")
            wallet = self.balances[api_key]
            cost = quantity * price
            if params["side"] == "BUY":
                if wallet.get(quote, Decimal(0)) < cost:
                    raise _Refusal(
                        400, -2010, "Account has insufficient balance for requested action."
                    )
                wallet[quote] -= cost
                wallet[base] = wallet.get(base, Decimal(0)) + quantity
            else:
                if wallet.get(base, Decimal(0)) < quantity:
                    raise _Refusal(
                        400, -2010, "Account has insufficient balance for requested action."
                    )
                wallet[base] -= quantity
                wallet[quote] = wallet.get(quote, Decimal(0)) + cost
            order = {
                "symbol": symbol, "orderId": len(self.orders) + 1,
                "clientOrderId": params.get("newClientOrderId"), "transactTime": int(time.time() * 1000),
                "price": "0", "origQty": str(quantity), "executedQty": str(quantity),
                "cummulativeQuoteQty": str(cost), "status": "FILLED", "type": "MARKET",
                "side": params["side"],
                "fills": [{"price": str(price), "qty": str(quantity), "commission": "0",
                           "commissionAsset": quote, "tradeId": len(self.orders) + 1}],
            }  # fmt: skip
            self.orders.append(order)
            if self.drop_next_order_response:
                self.drop_next_order_response = False
                return _Drop()
        return order


class _Drop:
    pass


class _Refusal(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
