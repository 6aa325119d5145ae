"""A local Binance spot REST server for tests, spoken to by the real python-binance client.

Verifies HMAC-SHA256 signatures and the timestamp window like Binance, keeps balances
and orders per API key, enforces the symbol filters it publishes in `exchangeInfo`,
answers MARKET orders with FULL responses, looks orders up by client order id or
order id, and refuses a reused client order id (-2010 "Duplicate order sent.").
Tests inject errors (429/418 + Retry-After, -1021 by clock skew, -2010, 5xx, stalls)
and can make it accept an order but lose the reply, as a dying connection would.
Rate limits as Binance applies them: every reply carries `X-MBX-USED-WEIGHT-1M` (the
IP's weight this minute, by Binance's weight per endpoint); past `weight_limit` requests
get 429 -1003 with Retry-After, and more 429s in the same minute an IP ban (418, 2 min
doubling per ban up to 3 days); each account's new orders are limited per 10 s and per
day (429 -1015). `enforce_rate_limits=False` turns the refusals off (headers stay).
Keys in `no_trading` lack the TRADE permission: orders and `order/test` get -2015.
Prices are set directly or follow a scripted path per symbol.

Standalone: `python -m tests.fakes.binance_api --port N --account KEY:SECRET:USDT=1000`
prints its URL; steer it with `/_control/...` (see `add_routes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.http import BackgroundServer, FaultQueue, json_body, play, run_standalone

SYMBOL_FILTERS: list[dict[str, Any]] = [
    {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
    {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"},
    {
        "filterType": "NOTIONAL",
        "minNotional": "5",
        "maxNotional": "9000000",
        "applyMinToMarket": True,
        "applyMaxToMarket": False,
        "avgPriceMins": 5,
    },
    {
        "filterType": "MARKET_LOT_SIZE",
        "minQty": "0.00000000",
        "maxQty": "100.00000000",
        "stepSize": "0.00000000",
    },
    {
        "filterType": "PERCENT_PRICE_BY_SIDE",
        "bidMultiplierUp": "5",
        "bidMultiplierDown": "0.2",
        "askMultiplierUp": "5",
        "askMultiplierDown": "0.2",
        "avgPriceMins": 5,
    },
]  # fmt: skip (as on real BTCUSDT)
MARKET_CLOSED = "Market is closed."
NO_MARKET_ORDERS = "Market orders are not supported for this symbol."
NOT_PERMITTED = "This symbol is not permitted for this account."
QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
INTERVALS_S = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
    "3d": 259200, "1w": 604800,
}  # fmt: skip
SIGNED = {"account", "account/commission", "order", "openOrders", "allOrders", "myTrades",
          "order/test"}  # fmt: skip
DUPLICATE = "Duplicate order sent."
INSUFFICIENT = "Account has insufficient balance for requested action."
DROP_STALL = "stall"  # the reply comes after the client gave up
DROP_CLOSE = "close"  # the connection is closed with no reply
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
REJECTED_KEY = "Invalid API-key, IP, or permissions for action."
ACCOUNT_CANNOT_TRADE = "This account may not place or cancel orders."
FIRST_BAN_S = 120  # Binance: bans scale from 2 minutes ...
LONGEST_BAN_S = 3 * 86400  # ... to 3 days
# Request weight per endpoint (rest-api.md); parameters change some, see `request_weight`.
ENDPOINT_WEIGHTS = {
    "ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "avgPrice": 2, "account": 20,
    "allOrders": 20, "account/commission": 20, "rateLimit/order": 40,
}  # fmt: skip


def request_weight(method: str, endpoint: str, params: dict[str, str]) -> int:
    """What Binance counts for one request against the IP's REQUEST_WEIGHT limit."""
    if endpoint == "ticker/price":
        return 2 if "symbol" in params else 4
    if endpoint == "openOrders":
        return 6 if "symbol" in params else 80
    if endpoint == "myTrades":
        return 5 if "orderId" in params else 20
    if endpoint == "order/test":
        return 20 if params.get("computeCommissionRates") == "true" else 1
    if endpoint == "order":
        return 4 if method == "GET" else 1
    return ENDPOINT_WEIGHTS.get(endpoint, 1)


@dataclass
class RecordedRequest:
    """What a client sent: method, endpoint, parsed params, the API key header."""

    method: str
    endpoint: str
    params: dict[str, str]
    api_key: str | None


@dataclass
class _Injected:
    status: int  # 0: stall, then answer normally
    body: dict[str, Any]
    headers: dict[str, str]
    stall_s: float = 0.0
    method: str | None = None  # only requests with this method ("POST") get it


class _Refusal(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class _Drop:
    """The order was recorded; the reply is lost."""


def split_symbol(symbol: str) -> tuple[str, str]:
    """BTCUSDT → (BTC, USDT), by the known quote assets."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4], symbol[-4:]


def _filter(filters: Iterable[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((f for f in filters if f.get("filterType") == kind), None)


@dataclass
class FakeBinance(BackgroundServer):
    """Start with `with FakeBinance() as bn:`; point the client at `bn.api_url`."""

    keys: dict[str, str] = field(default_factory=dict)  # api key -> secret
    no_trading: set[str] = field(default_factory=set)  # api keys without the TRADE permission
    trading_disabled: set[str] = field(default_factory=set)  # accounts with canTrade off
    prices: dict[str, Decimal] = field(default_factory=lambda: {"BTCUSDT": Decimal("50000")})
    balances: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    orders: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    recorded: list[RecordedRequest] = field(default_factory=list)
    filters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per-symbol override
    skew_ms: int = 0  # how far the client's clock is off, as the server sees it
    drop_next_order_response: bool = False
    drop_mode: str = DROP_STALL
    drop_stall_s: float = 3.0
    advance_on: str | None = None  # e.g. "ticker/price": each such request advances the paths
    market_clock: Callable[[], float] | None = None  # klines' "now" (s); default: wall + skew
    # Order fidelity (strict by default, as Binance): commission taken from what the
    # order yields (the base asset of a BUY, the quote of a SELL), or in BNB when
    # `bnb_pays_fees` and the account holds enough BNB at the BNB<quote> price.
    commission_rate: Decimal = Decimal("0.001")
    bnb_pays_fees: bool = False
    # Client ids are unique among OPEN orders only; a filled order's id is accepted again.
    refuse_reused_client_ids: bool = False  # friendly: refuse any id seen before (-2010)
    # After a dropped order reply, GET /order answers -2013 for this long (Memory =>
    # Database lag) while allOrders and myTrades already show the order.
    lookup_lag_s: float = 1.0
    # The next market order fills only this fraction (down to the step) and ends with
    # `next_fill_status` (EXPIRED, or EXPIRED_IN_MATCH for self-trade prevention).
    next_fill_fraction: Decimal | None = None
    next_fill_status: str = "EXPIRED"
    trades: list[dict[str, Any]] = field(default_factory=list)
    # Rate limits (published in exchangeInfo.rateLimits, enforced unless switched off).
    enforce_rate_limits: bool = True
    weight_limit: int = 6000  # REQUEST_WEIGHT per minute per IP
    orders_per_10s: int = 100  # ORDERS per account
    orders_per_day: int = 200_000
    bans_after_429s: int = 3  # this many 429s in one minute, and the next request is banned
    clock: Callable[[], float] = time.time  # the rate windows' clock (tests may pin it)
    symbol_status: dict[str, str] = field(default_factory=dict)  # e.g. {"BTCUSDT": "BREAK"}
    order_types: dict[str, list[str]] = field(default_factory=dict)  # per-symbol override
    permission_sets: dict[str, list[list[str]]] = field(default_factory=dict)
    average_prices: dict[str, Decimal] = field(default_factory=dict)  # default: current price

    name = "fake-binance"

    def __post_init__(self) -> None:
        self._init_server()
        self._lock = threading.Lock()
        self._errors: FaultQueue[_Injected] = FaultQueue()
        self._paths: dict[str, list[Decimal]] = {}
        self._cursor: dict[str, int] = {}
        self._closed_klines: dict[tuple[str, str], dict[int, list[Any]]] = {}  # served, final
        self._open_klines: dict[tuple[str, str], list[Any]] = {}  # the open one last served
        self._owner: dict[int, str] = {}  # orderId -> api key
        self._hidden_until: dict[int, float] = {}  # orderId -> monotonic end of the lookup lag
        self._weight: dict[str, tuple[int, int]] = {}  # ip -> (minute, weight used)
        self._strikes: dict[str, tuple[int, int]] = {}  # ip -> (minute, 429s answered)
        self._banned_until: dict[str, float] = {}  # ip -> end of its ban (self.clock)
        self._bans: dict[str, int] = {}  # ip -> bans so far (each lasts twice the last)
        self._order_counts: dict[tuple[str, int], tuple[int, int]] = {}  # (key, s) -> (window, n)

    @property
    def api_url(self) -> str:
        """What python-binance's `Client.API_URL` must be."""
        return f"{self.base_url}/api"

    # -- controls -------------------------------------------------------------------------

    def add_account(self, api_key: str, secret: str, **balances: str) -> None:
        """Register a key pair; balances as asset=amount (USDT="1000")."""
        with self._lock:
            self.keys[api_key] = secret
            self.balances[api_key] = {asset: Decimal(v) for asset, v in balances.items()}

    def inject(self, endpoint: str, status: int, code: int, msg: str, *,
               headers: dict[str, str] | None = None, stall_s: float = 0.0,
               times: int = 1, method: str | None = None) -> None:  # fmt: skip
        """The next `times` requests to `endpoint` ("order", "ticker/price") get this error;
        with `method`, only requests of that method ("POST": order placements)."""
        with self._lock:
            answer = _Injected(
                status, {"code": code, "msg": msg}, dict(headers or {}), stall_s, method
            )
            self._errors.add(endpoint, answer, times)

    def clear_injected(self, endpoint: str) -> None:
        """Drop the errors still waiting for `endpoint`: it answers normally again."""
        with self._lock:
            self._errors.clear(endpoint)

    def inject_rate_limit(self, endpoint: str, retry_after_s: int, *, banned: bool = False,
                          times: int = 1) -> None:  # fmt: skip
        """429 (or 418 when `banned`) with code -1003 and a Retry-After header."""
        status = 418 if banned else 429
        msg = "IP banned until later." if banned else "Too many requests; please use the websocket."
        self.inject(endpoint, status, -1003, msg, headers={"Retry-After": str(retry_after_s)},
                    times=times)  # fmt: skip

    def inject_stall(self, endpoint: str, stall_s: float, *, times: int = 1) -> None:
        """Hold the next `times` requests `stall_s` seconds, then answer them normally."""
        self.inject(endpoint, 0, 0, "", stall_s=stall_s, times=times)

    def set_price(self, symbol: str, price: Decimal | str | float) -> None:
        with self._lock:
            self.prices[symbol] = Decimal(str(price))
            self._paths.pop(symbol, None)

    def script_prices(self, symbol: str, path: Sequence[Decimal | str | float]) -> None:
        """The price of `symbol` becomes path[0]; each `advance` moves one step on."""
        if not path:
            raise ValueError("a price path needs at least one price")
        with self._lock:
            self._paths[symbol] = [Decimal(str(p)) for p in path]
            self._cursor[symbol] = 0
            self.prices[symbol] = self._paths[symbol][0]

    def advance(self, symbol: str | None = None, steps: int = 1) -> dict[str, Decimal]:
        """Move scripted prices forward (all, or one symbol); a path ends on its last price."""
        with self._lock:
            return self._advance_locked(symbol, steps)

    def _advance_locked(self, symbol: str | None, steps: int) -> dict[str, Decimal]:
        for name, path in self._paths.items():
            if symbol is None or name == symbol:
                self._cursor[name] = min(self._cursor[name] + steps, len(path) - 1)
                self.prices[name] = path[self._cursor[name]]
        return dict(self.prices)

    def fill_next_partly(self, fraction: Decimal | str, status: str = "EXPIRED") -> None:
        """The next market order executes only `fraction` of its quantity, then expires."""
        if status not in ("EXPIRED", "EXPIRED_IN_MATCH"):
            raise ValueError("a partly filled market order ends EXPIRED or EXPIRED_IN_MATCH")
        with self._lock:
            self.next_fill_fraction = Decimal(str(fraction))
            self.next_fill_status = status

    def count(self, method: str, endpoint: str) -> int:
        with self._lock:
            return sum(1 for m, e in self.requests if m == method and e == endpoint)

    def orders_for(self, api_key: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for o in self.orders if self._owner.get(o["orderId"]) == api_key]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ids = [o["clientOrderId"] for o in self.orders]
            return {
                "requests": len(self.requests),
                "orders": len(self.orders),
                "duplicate_attempts": len(self.duplicates),
                "distinct_client_ids": len(set(ids)),
                "prices": {s: str(p) for s, p in self.prices.items()},
            }

    # -- HTTP ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._limits_middleware())
        app.router.add_route("*", "/api/v3/{endpoint:.*}", self._handle)
        app.router.add_post("/_control/inject", self._control_inject)
        app.router.add_post("/_control/account", self._control_account)
        app.router.add_post("/_control/price", self._control_price)
        app.router.add_post("/_control/script", self._control_script)
        app.router.add_post("/_control/advance", self._control_advance)
        app.router.add_post("/_control/skew", self._control_skew)
        app.router.add_post("/_control/drop_next_order", self._control_drop)
        app.router.add_get("/_control/orders", self._control_orders)
        app.router.add_get("/_control/stats", self._control_stats)

    async def _control_inject(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.inject(str(body["endpoint"]), int(body.get("status", 0)), int(body.get("code", 0)),
                    str(body.get("msg", "")), headers=body.get("headers"),
                    stall_s=float(body.get("stall_s", 0)), times=int(body.get("times", 1)))  # fmt: skip
        return web.json_response({"ok": True})

    async def _control_account(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        balances = {str(k): str(v) for k, v in dict(body.get("balances") or {}).items()}
        self.add_account(str(body["api_key"]), str(body["secret"]), **balances)
        return web.json_response({"ok": True})

    async def _control_price(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        for symbol, price in body.items():
            self.set_price(symbol, str(price))
        return web.json_response({"ok": True})

    async def _control_script(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.script_prices(str(body["symbol"]), [str(p) for p in body["path"]])
        return web.json_response({"ok": True})

    async def _control_advance(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        prices = self.advance(body.get("symbol"), int(body.get("steps", 1)))
        return web.json_response({s: str(p) for s, p in prices.items()})

    async def _control_skew(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.skew_ms = int(body["skew_ms"])
        return web.json_response({"ok": True})

    async def _control_drop(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.drop_mode = str(body.get("mode", self.drop_mode))
        self.drop_next_order_response = True
        return web.json_response({"ok": True})

    async def _control_orders(self, request: web.Request) -> web.Response:
        with self._lock:
            orders = list(self.orders)
        return web.json_response(orders)

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    # -- rate limits ----------------------------------------------------------------------

    def rate_limits(self) -> list[dict[str, Any]]:
        """`exchangeInfo.rateLimits` as Binance publishes them (RAW_REQUESTS not enforced)."""

        def entry(kind: str, interval: str, number: int, limit: int) -> dict[str, Any]:
            return {"rateLimitType": kind, "interval": interval, "intervalNum": number,
                    "limit": limit}  # fmt: skip

        return [
            entry("REQUEST_WEIGHT", "MINUTE", 1, self.weight_limit),
            entry("ORDERS", "SECOND", 10, self.orders_per_10s),
            entry("ORDERS", "DAY", 1, self.orders_per_day),
            entry("RAW_REQUESTS", "MINUTE", 5, 61000),
        ]

    def used_weight(self, ip: str = "127.0.0.1") -> int:
        """The weight `ip` used in the current minute, as the header reports it."""
        with self._lock:
            minute, used = self._weight.get(ip, (-1, 0))
            return used if minute == int(self.clock() // 60) else 0

    def ban_ends_in(self, ip: str = "127.0.0.1") -> float:
        """Seconds left of `ip`'s ban; 0 when not banned."""
        with self._lock:
            return max(0.0, self._banned_until.get(ip, 0.0) - self.clock())

    def _limits_middleware(self) -> Any:
        @web.middleware
        async def limits(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if not request.path.startswith("/api/v3/"):
                return await handler(request)
            return await self._apply_limits(request, handler)

        return limits

    async def _apply_limits(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:  # fmt: skip
        """Count the request's weight, refuse it as Binance would, stamp the header."""
        endpoint = request.path.removeprefix("/api/v3/")
        raw_query = request.query_string
        raw_body = (await request.read()).decode()  # aiohttp keeps it for the handler
        params = dict(parse_qsl(raw_query)) | dict(parse_qsl(raw_body))
        ip = request.remote or "?"
        api_key = request.headers.get("X-MBX-APIKEY")
        placing = request.method == "POST" and endpoint == "order"
        with self._lock:
            used = self._add_weight_locked(ip, request_weight(request.method, endpoint, params))
            refusal = self._refusal_locked(ip, api_key if placing else None)
            if refusal is not None:
                self.requests.append((request.method, endpoint))
                self.recorded.append(RecordedRequest(request.method, endpoint, params, api_key))
        trading = endpoint in ("order", "order/test") and request.method == "POST"
        if refusal is None and trading and api_key in self.no_trading | self.trading_disabled:
            refusal = self._permission_refusal(request, raw_query, raw_body, api_key)
            with self._lock:
                self.requests.append((request.method, endpoint))
                self.recorded.append(RecordedRequest(request.method, endpoint, params, api_key))
        response = refusal if refusal is not None else await handler(request)
        if placing and response.status == 200 and api_key is not None:
            with self._lock:
                self._count_order_locked(api_key, response)
        response.headers[USED_WEIGHT_HEADER] = str(used)
        return response

    def _add_weight_locked(self, ip: str, weight: int) -> int:
        minute = int(self.clock() // 60)
        last, used = self._weight.get(ip, (minute, 0))
        used = (used if last == minute else 0) + weight
        self._weight[ip] = (minute, used)
        return used

    def _refusal_locked(self, ip: str, placing_key: str | None) -> web.Response | None:
        if not self.enforce_rate_limits:
            return None
        now = self.clock()
        banned_until = self._banned_until.get(ip, 0.0)
        if now < banned_until:
            return self._ban_reply(banned_until, now)
        minute = int(now // 60)
        if self._weight[ip][1] > self.weight_limit:
            last, strikes = self._strikes.get(ip, (minute, 0))
            strikes = (strikes if last == minute else 0) + 1
            self._strikes[ip] = (minute, strikes)
            if strikes > self.bans_after_429s:
                bans = self._bans.get(ip, 0) + 1
                self._bans[ip] = bans
                self._banned_until[ip] = now + min(FIRST_BAN_S * 2 ** (bans - 1), LONGEST_BAN_S)
                return self._ban_reply(self._banned_until[ip], now)
            msg = (f"Too much request weight used; current limit is {self.weight_limit} request "
                   "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                   "polling the API.")  # fmt: skip
            return _limit_reply(429, -1003, msg, (minute + 1) * 60 - now)
        if placing_key is None:
            return None
        for interval_s, limit, name in self._order_windows():
            window = int(now // interval_s)
            last_window, count = self._order_counts.get((placing_key, interval_s), (window, 0))
            if last_window == window and count >= limit:
                msg = f"Too many new orders; current limit is {limit} orders per {name}."
                return _limit_reply(429, -1015, msg, (window + 1) * interval_s - now)
        return None

    def _order_windows(self) -> list[tuple[int, int, str]]:
        return [(10, self.orders_per_10s, "10 SECOND"), (86400, self.orders_per_day, "DAY")]

    def _ban_reply(self, banned_until: float, now: float) -> web.Response:
        msg = (f"Way too much request weight used; IP banned until {int(banned_until * 1000)}. "
               "Please use WebSocket Streams for live updates to avoid bans.")  # fmt: skip
        return _limit_reply(418, -1003, msg, banned_until - now)

    def _count_order_locked(self, api_key: str, response: web.StreamResponse) -> None:
        """A placed order counts against the account's ORDERS windows. Binance later gives
        a filled order back; the fake does not (the stricter reading)."""
        now = self.clock()
        for interval_s, _, _ in self._order_windows():
            window = int(now // interval_s)
            last, count = self._order_counts.get((api_key, interval_s), (window, 0))
            count = (count if last == window else 0) + 1
            self._order_counts[(api_key, interval_s)] = (window, count)
            label = "10S" if interval_s == 10 else "1D"
            response.headers[f"X-MBX-ORDER-COUNT-{label}"] = str(count)

    def _permission_refusal(
        self, request: web.Request, raw_query: str, raw_body: str, api_key: str | None
    ) -> web.Response:
        """A key without the TRADE permission (-2015) or an account that may not trade
        (-2010): signed correctly, still refused."""
        try:
            self._verify(request, raw_query, raw_body)
        except _Refusal as refusal:
            return web.json_response(
                {"code": refusal.code, "msg": refusal.msg}, status=refusal.status
            )
        if api_key in self.no_trading:
            return web.json_response({"code": -2015, "msg": REJECTED_KEY}, status=401)
        return web.json_response({"code": -2010, "msg": ACCOUNT_CANNOT_TRADE}, status=400)

    def _test_order(self, params: dict[str, str]) -> dict[str, Any]:
        """`POST /order/test`: validated like an order, never executed; `{}` when valid."""
        symbol = self._symbol(params.get("symbol"))
        if params.get("side") not in ("BUY", "SELL"):
            raise _Refusal(400, -1117, "Invalid side.")
        if params.get("type") != "MARKET":
            raise _Refusal(400, -1116, "Invalid orderType.")
        filters = self.filters.get(symbol, SYMBOL_FILTERS)
        with self._lock:
            price = self.prices[symbol]
        quantity = self._quantity(params, price, filters)
        _check_filters(quantity, price, filters)
        return {}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        raw_query = request.query_string
        raw_body = (await request.read()).decode()
        params = dict(parse_qsl(raw_query)) | dict(parse_qsl(raw_body))
        header_key = request.headers.get("X-MBX-APIKEY")
        with self._lock:
            self.requests.append((request.method, endpoint))
            self.recorded.append(RecordedRequest(request.method, endpoint, params, header_key))
            injected = self._errors.take(
                endpoint, lambda answer: answer.method in (None, request.method)
            )
            if self.advance_on == endpoint:
                self._advance_locked(None, 1)
        failure = await play(injected)
        if failure is not None:
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        try:
            api_key = self._verify(request, raw_query, raw_body) if endpoint in SIGNED else None
            result = self._route(request.method, endpoint, params, api_key)
        except _Refusal as refusal:
            return web.json_response(
                {"code": refusal.code, "msg": refusal.msg}, status=refusal.status
            )
        if isinstance(result, _Drop):
            if self.drop_mode == DROP_CLOSE and request.transport is not None:
                request.transport.close()
                raise asyncio.CancelledError  # aiohttp drops the handler: no reply at all
            await asyncio.sleep(self.drop_stall_s)
            return web.json_response(
                {"code": -1007, "msg": "Timeout waiting for response."}, status=408
            )
        return web.json_response(result)

    def _verify(self, request: web.Request, raw_query: str, raw_body: str) -> str:
        api_key = request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise _Refusal(401, -2014, "API-key format invalid.")
        secret = self.keys.get(api_key)
        if secret is None:
            raise _Refusal(401, -2015, "Invalid API-key, IP, or permissions for action.")
        raw = raw_query if "signature=" in raw_query else raw_body
        payload, found, signature = raw.rpartition("&signature=")
        if not found:
            raise _Refusal(
                400, -1102,
                "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
            )  # fmt: skip
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _Refusal(400, -1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(payload))
        server_ms = int(time.time() * 1000) + self.skew_ms
        window = int(params.get("recvWindow", 5000))
        timestamp = int(params.get("timestamp", 0))
        if timestamp > server_ms + 1000 or server_ms - timestamp > window:
            raise _Refusal(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return api_key

    # A flat dispatch over the endpoints, one branch each: splitting it would only hide
    # which endpoints the fake answers.
    def _route(  # noqa: C901
        self, method: str, endpoint: str, params: dict[str, str], api_key: str | None
    ) -> Any:
        if endpoint == "ping":
            return {}
        if endpoint == "time":
            return {"serverTime": int(time.time() * 1000) + self.skew_ms}
        if endpoint == "exchangeInfo":
            return self._exchange_info(params)
        if endpoint == "ticker/price":
            return self._tickers(params)
        if endpoint == "klines":
            return self._klines(params)
        if endpoint == "avgPrice":
            symbol = self._symbol(params.get("symbol"))
            with self._lock:
                average = self._average_locked(symbol)
            return {"mins": 5, "price": _fmt(average), "closeTime": int(time.time() * 1000)}
        if api_key is None:
            raise _Refusal(404, -1000, f"unknown endpoint {endpoint}")
        if endpoint == "account":
            omit = params.get("omitZeroBalances") == "true"
            with self._lock:
                wallet = dict(self.balances.get(api_key, {}))
            return {
                "makerCommission": 10, "takerCommission": 10,
                "canTrade": api_key not in self.trading_disabled,
                "canWithdraw": False, "canDeposit": True, "accountType": "SPOT",
                "updateTime": int(time.time() * 1000), "permissions": ["SPOT"],
                "balances": [{"asset": a, "free": str(v), "locked": "0"}
                             for a, v in wallet.items() if not (omit and v == 0)],
            }  # fmt: skip
        if endpoint == "order" and method == "POST":
            return self._place(api_key, params)
        if endpoint == "order" and method == "GET":
            return self._find(api_key, params)
        if endpoint == "allOrders":
            return self._all_orders(api_key, params)
        if endpoint == "myTrades":
            return self._my_trades(api_key, params)
        if endpoint == "account/commission":
            return self._commission(params)
        if endpoint == "openOrders":
            return []  # MARKET orders fill at once; nothing ever rests on the book
        if endpoint == "order/test" and method == "POST":
            return self._test_order(params)
        raise _Refusal(404, -1000, f"unknown endpoint {endpoint}")

    def _symbol(self, symbol: str | None) -> str:
        if not symbol or symbol not in self.prices:
            raise _Refusal(400, -1121, "Invalid symbol.")
        return symbol

    def _exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        wanted = list(self.prices)
        if "symbol" in params:
            wanted = [self._symbol(params["symbol"])]
        elif "symbols" in params:
            wanted = [self._symbol(s) for s in _symbol_list(params["symbols"])]
        symbols = []
        for name in wanted:
            base, quote = split_symbol(name)
            symbols.append({
                "symbol": name, "status": self.symbol_status.get(name, "TRADING"),
                "baseAsset": base, "quoteAsset": quote,
                "baseAssetPrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": self.order_types.get(name, ["LIMIT", "LIMIT_MAKER", "MARKET"]),
                "isSpotTradingAllowed": self._spot_locked(name),
                "permissionSets": self.permission_sets.get(name, [["SPOT", "MARGIN"]]),
                "filters": self.filters.get(name, SYMBOL_FILTERS),
            })  # fmt: skip
        return {"timezone": "UTC", "serverTime": int(time.time() * 1000) + self.skew_ms,
                "rateLimits": self.rate_limits(), "exchangeFilters": [],
                "symbols": symbols}  # fmt: skip

    def _tickers(self, params: dict[str, str]) -> Any:
        with self._lock:
            prices = dict(self.prices)
        if "symbol" in params:
            symbol = self._symbol(params["symbol"])
            return {"symbol": symbol, "price": str(prices[symbol])}
        names = _symbol_list(params["symbols"]) if "symbols" in params else list(prices)
        return [{"symbol": self._symbol(s), "price": str(prices[s])} for s in names]

    def _klines(self, params: dict[str, str]) -> list[list[Any]]:
        """Binance's klines: the candles opening within [startTime, endTime], ``limit`` of
        them (from startTime on, else the latest), and when the range reaches now, the
        candle still being built comes last (its closeTime lies ahead, its close is the
        current price). A closed candle never changes once served; the candle served
        open is served closed as it last stood. A scripted path is the closes of the
        candles up to now (re-scripting rewrites that history, for tests that need one).
        """
        symbol = self._symbol(params.get("symbol"))
        interval = params.get("interval", "")
        if interval not in INTERVALS_S:
            raise _Refusal(400, -1120, "Invalid interval.")
        limit = max(1, min(int(params.get("limit", 500)), 1000))
        step_ms = INTERVALS_S[interval] * 1000
        current = self._market_now_ms() // step_ms * step_ms
        last_open = current
        if "endTime" in params:
            last_open = min(current, int(params["endTime"]) // step_ms * step_ms)
        with self._lock:
            path = self._paths.get(symbol)
            closes = path[: self._cursor[symbol] + 1] if path else None
            earliest = None if closes is None else current - (len(closes) - 1) * step_ms
            if "startTime" in params:
                first = -(-int(params["startTime"]) // step_ms) * step_ms  # opening at or after
                opens = range(max(first, earliest or first), last_open + 1, step_ms)[:limit]
            else:
                first = last_open - (limit - 1) * step_ms
                opens = range(max(first, earliest or first), last_open + 1, step_ms)
            return [self._kline_locked(symbol, interval, step_ms, opened, current, closes)
                    for opened in opens]  # fmt: skip

    def _market_now_ms(self) -> int:
        if self.market_clock is not None:
            return int(self.market_clock() * 1000)
        return int(time.time() * 1000) + self.skew_ms

    def _kline_locked(self, symbol: str, interval: str, step_ms: int, opened: int, current: int,
                      closes: list[Decimal] | None) -> list[Any]:  # fmt: skip
        key = (symbol, interval)
        served = self._closed_klines.setdefault(key, {})
        if closes is None and opened in served:
            return served[opened]
        last_open = self._open_klines.get(key)
        if closes is None and opened < current and last_open is not None and last_open[0] == opened:
            row = last_open  # it closed as it stood when last served
        else:
            close = self._kline_close_locked(symbol, interval, step_ms, opened, current, closes)
            open_ = self._kline_close_locked(
                symbol, interval, step_ms, opened - step_ms, current, closes
            )
            high, low = max(open_, close) * Decimal("1.001"), min(open_, close) * Decimal("0.999")
            volume = Decimal(10 + opened // step_ms % 7)
            row = [opened, _fmt(open_), _fmt(high), _fmt(low), _fmt(close), _fmt(volume),
                   opened + step_ms - 1, _fmt(volume * close), 5 + opened // step_ms % 11,
                   _fmt(volume / 2), _fmt(volume * close / 2), "0"]  # fmt: skip
        if closes is not None:
            return row
        if opened < current:
            served[opened] = row
            while len(served) > 10_000:
                del served[next(iter(served))]
        else:
            self._open_klines[key] = row
        return row

    def _kline_close_locked(self, symbol: str, interval: str, step_ms: int, opened: int,
                            current: int, closes: list[Decimal] | None) -> Decimal:  # fmt: skip
        back = (current - opened) // step_ms  # candles before the current one
        if closes is not None:
            return closes[max(0, len(closes) - 1 - back)]
        served = self._closed_klines.get((symbol, interval), {})
        if opened in served:
            return Decimal(str(served[opened][4]))
        return self.prices[symbol] * Decimal(str(1 + 0.01 * math.sin(back / 3)))

    def _fill_locked(self, quantity: Decimal, filters: list[dict[str, Any]]) -> tuple[Decimal, str]:
        """What a market order of `quantity` executes, and its status: all of it, or
        the fraction a test asked for once (`next_fill_fraction`), in whole lot steps."""
        if self.next_fill_fraction is None:
            return quantity, "FILLED"
        lot = _filter(filters, "LOT_SIZE")
        step = Decimal(str(lot["stepSize"])) if lot else Decimal("0.00000001")
        executed = (quantity * self.next_fill_fraction / step).to_integral_value(ROUND_DOWN) * step
        self.next_fill_fraction = None
        return executed, self.next_fill_status if executed < quantity else "FILLED"

    def _place(self, api_key: str, params: dict[str, str]) -> Any:
        symbol = self._symbol(params.get("symbol"))
        side = params.get("side")
        if side not in ("BUY", "SELL"):
            raise _Refusal(400, -1117, "Invalid side.")
        if params.get("type") != "MARKET":
            raise _Refusal(400, -1116, "Invalid orderType.")
        base, quote = split_symbol(symbol)
        filters = self.filters.get(symbol, SYMBOL_FILTERS)
        with self._lock:
            price = self.prices[symbol]
            client_id = params.get("newClientOrderId") or f"fake{len(self.orders) + 1}"
            if any(o["clientOrderId"] == client_id for o in self.orders):
                # Binance refuses only the id of an OPEN order; market orders never rest,
                # so a reused id is a new order. Either way the attempt is recorded.
                self.duplicates.append(dict(params))
                if self.refuse_reused_client_ids:
                    raise _Refusal(400, -2010, DUPLICATE)
            quantity = self._quantity(params, price, filters)
            self._check_order_rules_locked(symbol, quantity, filters)
            executed, status = self._fill_locked(quantity, filters)
            wallet = self.balances.setdefault(api_key, {})
            cost = executed * price
            # A buy needs its cost in the quote asset, a sell its quantity of the base one.
            needed, asset = (quantity * price, quote) if side == "BUY" else (quantity, base)
            if wallet.get(asset, Decimal(0)) < needed:
                raise _Refusal(400, -2010, INSUFFICIENT)
            fee, fee_asset = self._commission_for(wallet, side, base, quote, executed, cost)
            if side == "BUY":
                wallet[quote] -= cost
                wallet[base] = wallet.get(base, Decimal(0)) + executed
            else:
                wallet[base] -= executed
                wallet[quote] = wallet.get(quote, Decimal(0)) + cost
            wallet[fee_asset] -= fee
            order_id = len(self.orders) + 1
            now_ms = int(time.time() * 1000)
            fills = []
            if executed > 0:
                fills = [{"price": str(price), "qty": str(executed), "commission": str(fee),
                          "commissionAsset": fee_asset, "tradeId": len(self.trades) + 1}]  # fmt: skip
                self.trades.append({
                    "symbol": symbol, "id": len(self.trades) + 1, "orderId": order_id,
                    "orderListId": -1, "price": str(price), "qty": str(executed),
                    "quoteQty": str(cost), "commission": str(fee), "commissionAsset": fee_asset,
                    "time": now_ms, "isBuyer": side == "BUY", "isMaker": False,
                    "isBestMatch": True,
                })  # fmt: skip
            order = {
                "symbol": symbol, "orderId": order_id, "orderListId": -1,
                "clientOrderId": client_id, "transactTime": now_ms,
                "price": "0.00000000", "origQty": str(quantity), "executedQty": str(executed),
                "cummulativeQuoteQty": str(cost), "status": status, "timeInForce": "GTC",
                "type": "MARKET", "side": side, "fills": fills,
            }  # fmt: skip
            self.orders.append(order)
            self._owner[order_id] = api_key
            if self.drop_next_order_response:
                self.drop_next_order_response = False
                self._hidden_until[order_id] = time.monotonic() + self.lookup_lag_s
                return _Drop()
        return order

    def _commission_for(
        self,
        wallet: dict[str, Decimal],
        side: str,
        base: str,
        quote: str,
        executed: Decimal,
        cost: Decimal,
    ) -> tuple[Decimal, str]:
        """Binance's taker commission: from what the order yields, or in BNB if enabled."""
        rate = self.commission_rate
        bnb_price = self.prices.get(f"BNB{quote}")
        if self.bnb_pays_fees and base != "BNB" and bnb_price:
            in_bnb = _fee(cost * rate / bnb_price)
            if wallet.get("BNB", Decimal(0)) >= in_bnb:
                wallet.setdefault("BNB", Decimal(0))
                return in_bnb, "BNB"
        if side == "BUY":
            wallet.setdefault(base, Decimal(0))
            return _fee(executed * rate), base
        wallet.setdefault(quote, Decimal(0))
        return _fee(cost * rate), quote

    def _average_locked(self, symbol: str) -> Decimal:
        return self.average_prices.get(symbol, self.prices[symbol])

    def _spot_locked(self, symbol: str) -> bool:
        return any("SPOT" in s for s in self.permission_sets.get(symbol, [["SPOT"]]))

    def _check_order_rules_locked(
        self, symbol: str, quantity: Decimal, filters: list[dict[str, Any]]
    ) -> None:
        """What Binance checks of a MARKET order before it matches (errors.md)."""
        if self.symbol_status.get(symbol, "TRADING") != "TRADING":
            raise _Refusal(400, -1013, MARKET_CLOSED)
        if "MARKET" not in self.order_types.get(symbol, ["MARKET"]):
            raise _Refusal(400, -1013, NO_MARKET_ORDERS)
        if not self._spot_locked(symbol):
            raise _Refusal(400, -2010, NOT_PERMITTED)
        _check_filters(quantity, self._average_locked(symbol), filters)

    @staticmethod
    def _quantity(params: dict[str, str], price: Decimal, filters: list[dict[str, Any]]) -> Decimal:
        try:
            if "quantity" in params:
                return Decimal(params["quantity"])
            if "quoteOrderQty" in params:
                lot = _filter(filters, "LOT_SIZE")
                step = Decimal(str(lot["stepSize"])) if lot else Decimal("0.00000001")
                raw = Decimal(params["quoteOrderQty"]) / price
                return (raw / step).to_integral_value(ROUND_DOWN) * step
        except InvalidOperation:
            raise _Refusal(
                400, -1100, "Illegal characters found in parameter 'quantity'."
            ) from None
        raise _Refusal(400, -1102, "Mandatory parameter 'quantity' was not sent.")

    def _find(self, api_key: str, params: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol(params.get("symbol"))
        client_id, order_id = params.get("origClientOrderId"), params.get("orderId")
        if client_id is None and order_id is None:
            raise _Refusal(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )  # fmt: skip
        with self._lock:
            for order in reversed(self.orders):  # a reused client id names the newest
                if order["symbol"] != symbol or self._owner.get(order["orderId"]) != api_key:
                    continue
                if client_id is not None and order["clientOrderId"] != client_id:
                    continue
                if order_id is not None and str(order["orderId"]) != order_id:
                    continue
                if time.monotonic() < self._hidden_until.get(order["orderId"], 0.0):
                    break  # not in the database yet: "Memory => Database" lag
                return _queried(order)
        raise _Refusal(400, -2013, "Order does not exist.")

    def _all_orders(self, api_key: str, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._symbol(params.get("symbol"))
        limit = max(1, min(int(params.get("limit", 500)), 1000))
        with self._lock:
            mine = [o for o in self.orders
                    if o["symbol"] == symbol and self._owner.get(o["orderId"]) == api_key]  # fmt: skip
        return [_queried(o) for o in mine[-limit:]]

    def _my_trades(self, api_key: str, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._symbol(params.get("symbol"))
        order_id = params.get("orderId")
        with self._lock:
            return [dict(t) for t in self.trades
                    if t["symbol"] == symbol and self._owner.get(t["orderId"]) == api_key
                    and (order_id is None or str(t["orderId"]) == order_id)]  # fmt: skip

    def _commission(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self._symbol(params.get("symbol"))
        rate = str(self.commission_rate)
        return {
            "symbol": symbol,
            "standardCommission": {"maker": rate, "taker": rate, "buyer": "0", "seller": "0"},
            "taxCommission": {"maker": "0", "taker": "0", "buyer": "0", "seller": "0"},
            "discount": {"enabledAccount": self.bnb_pays_fees, "enabledStandard": False,
                         "discountAsset": "BNB", "discount": "1"},
        }  # fmt: skip


def _queried(order: dict[str, Any]) -> dict[str, Any]:
    """An order as GET /order and allOrders show it: no fills, no commission."""
    found = {k: v for k, v in order.items() if k != "fills"}
    found |= {"stopPrice": "0.00000000", "icebergQty": "0.00000000",
              "time": order["transactTime"], "updateTime": order["transactTime"],
              "isWorking": True, "origQuoteOrderQty": "0.00000000"}  # fmt: skip
    return found


def _fee(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.00000001"), rounding=ROUND_DOWN)


def _limit_reply(status: int, code: int, msg: str, retry_after_s: float) -> web.Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)


def _check_filters(quantity: Decimal, average: Decimal, filters: list[dict[str, Any]]) -> None:
    """A MARKET order against Binance's filters.md: LOT_SIZE and MARKET_LOT_SIZE with
    `quantity % stepSize == 0` (a zero step is no step rule), NOTIONAL bounds only where
    applyMin/MaxToMarket say so and MIN_NOTIONAL with applyToMarket, both valued at the
    average price. PERCENT_PRICE_BY_SIDE judges an order's price; MARKET sends none."""
    for kind in ("LOT_SIZE", "MARKET_LOT_SIZE"):
        lot = _filter(filters, kind)
        if lot is None:
            continue
        low, high = Decimal(str(lot["minQty"])), Decimal(str(lot["maxQty"]))
        step = Decimal(str(lot["stepSize"]))
        off_step = step > 0 and quantity % step != 0
        if quantity < low or (high > 0 and quantity > high) or off_step:
            raise _Refusal(400, -1013, f"Filter failure: {kind}")
    value = quantity * average
    notional = _filter(filters, "NOTIONAL")
    if notional is not None:
        low, high = Decimal(str(notional["minNotional"])), Decimal(str(notional["maxNotional"]))
        if (notional.get("applyMinToMarket", True) and value < low) or (
            notional.get("applyMaxToMarket", False) and high > 0 and value > high
        ):
            raise _Refusal(400, -1013, "Filter failure: NOTIONAL")
    legacy = _filter(filters, "MIN_NOTIONAL")
    if (
        legacy is not None
        and legacy.get("applyToMarket", True)
        and value < Decimal(str(legacy["minNotional"]))
    ):
        raise _Refusal(400, -1013, "Filter failure: MIN_NOTIONAL")


def _symbol_list(raw: str) -> list[str]:
    try:
        names = json.loads(raw)
    except ValueError:
        raise _Refusal(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _Refusal(400, -1100, "Illegal characters found in parameter 'symbols'.")
    return names


def _fmt(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.00000001')):f}"


def main(argv: list[str] | None = None) -> int:
    def configure(parser: Any) -> None:
        parser.add_argument("--account", action="append", default=[],
                            help="KEY:SECRET[:ASSET=AMOUNT,...], repeatable")  # fmt: skip
        parser.add_argument("--price", action="append", default=[], help="SYMBOL=PRICE")

    def build(args: Any) -> FakeBinance:
        fake = FakeBinance()
        for spec in args.price:
            symbol, _, price = spec.partition("=")
            fake.set_price(symbol, price)
        for spec in args.account:
            key, secret, *rest = spec.split(":")
            amounts = dict(p.split("=", 1) for p in rest[0].split(",")) if rest else {}
            fake.add_account(key, secret, **amounts)
        return fake

    return run_standalone(build, argv, configure)


if __name__ == "__main__":
    raise SystemExit(main())
