"""Binance spot through python-binance, kept off the event loop and inside one weight budget.

python-binance's ``Client`` is blocking (requests) and does no retrying. Every call goes
through ``BinanceGateway.call``: it waits for the shared ``WeightLimiter``, runs the
request in a worker thread under a concurrency bound, and turns Binance's errors into
the ``exchange`` error classes:

* 429 → the limiter is told to hold *every* caller back for ``Retry-After``; a 418 (IP
  ban, up to 3 days) makes every request fail fast until it ends; a 429 -1015 (one
  account's ORDERS limit) holds back only that account's orders;
* every reply's ``X-MBX-USED-WEIGHT-1M`` is fed to the limiter, and ``exchangeInfo``'s
  ``rateLimits`` set its budget and each account's order limits;
* -1021 (timestamp outside recvWindow) → the server-time offset is resynchronised and
  the request sent once more (Binance did not process it);
* network errors and 5xx → retried with jittered exponential backoff (tenacity) for
  reads only; for an order the outcome is unknown and the order path looks it up;
* -2010 and any other refusal → raised at once, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException
from requests.adapters import HTTPAdapter
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from lunara.dependencies import Watch
from lunara.services import AssetBalance, TradingError
from lunara.trading.exchange import (
    CredentialsRejected,
    DuplicateOrder,
    ExchangeError,
    ExchangeUnavailable,
    Fill,
    IpBanned,
    OrderRefused,
    OrdersRateLimited,
    RateLimited,
)
from lunara.trading.filters import (
    InvalidSymbolInfo,
    OrderRejected,
    SymbolRules,
    check_order,
    check_tradable,
    format_amount,
    parse_symbol,
)
from lunara.trading.limiter import (
    MAX_BAN_S,
    RateLimit,
    RateLimitKind,
    WeightLimiter,
    WindowCounter,
    parse_rate_limits,
    parse_retry_after,
    weight_per_minute,
)
from lunara.trading.model import OrderSide

logger = logging.getLogger(__name__)

VENUE = "binance"
API_PATH = "/api"


class ErrorCode:
    """Binance error codes the bot reacts to."""

    TOO_MANY_REQUESTS = -1003
    UNEXPECTED_RESPONSE = -1006
    TOO_MANY_ORDERS = -1015
    EXECUTION_STATUS_UNKNOWN = -1007
    TIMESTAMP_OUTSIDE_RECV_WINDOW = -1021
    INVALID_SYMBOL = -1121
    INVALID_SIGNATURE = -1022
    INVALID_MESSAGE = -1013
    NEW_ORDER_REJECTED = -2010
    NO_SUCH_ORDER = -2013
    INVALID_API_KEY = -2014
    REJECTED_API_KEY = -2015


_CREDENTIAL_CODES = frozenset(
    {ErrorCode.INVALID_SIGNATURE, ErrorCode.INVALID_API_KEY, ErrorCode.REJECTED_API_KEY}
)
_DUPLICATE_MESSAGE = "duplicate order"
_UNKNOWN_OUTCOME_CODES = frozenset(
    {ErrorCode.UNEXPECTED_RESPONSE, ErrorCode.EXECUTION_STATUS_UNKNOWN}
)
# Statuses of an order Binance ended before filling all of it (market liquidity ran out,
# self-trade prevention): what executed is real, the rest was never traded.
_EXPIRED_STATUSES = frozenset({"EXPIRED", "EXPIRED_IN_MATCH"})
NO_TRADING = "this API key may not trade: enable Spot & Margin Trading for it"
# The quote amount of /setkeys' test order (never executed), when above the minimum.
TEST_ORDER_QUOTE = Decimal(10)
# -1013 refusals that mean our cached exchangeInfo no longer matches Binance's.
_STALE_RULES_MESSAGES = ("Filter failure", "Market is closed", "Market orders are not supported")


class Weight:
    """Request weights of the endpoints used (Binance spot, 2024)."""

    PRICES = 4
    ORDER = 1
    TEST_ORDER = 1
    QUERY_ORDER = 4
    ALL_ORDERS = 20
    MY_TRADES = 20
    ACCOUNT = 20
    EXCHANGE_INFO = 20
    SERVER_TIME = 1
    KLINES = 2
    AVERAGE_PRICE = 2


USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

# The headers of the last reply each worker thread received (set by a requests hook, so
# two requests of one client in two threads never read each other's reply).
_last_reply = threading.local()


def _remember_reply(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    _last_reply.headers = response.headers


def used_weight(headers: Mapping[str, str] | None) -> float | None:
    """``X-MBX-USED-WEIGHT-1M`` as a number; ``None`` if absent or unreadable."""
    if not headers:
        return None
    raw = headers.get(USED_WEIGHT_HEADER)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _run_keeping_headers(
    method: Callable[..., Any], params: dict[str, Any]
) -> tuple[Any, Mapping[str, str] | None]:
    """Run a request in this worker thread; return its result and its reply's headers."""
    _last_reply.headers = None
    result = method(**params)
    return result, _last_reply.headers


class _ClockSkew(Exception):
    """-1021: the request carried a timestamp the server does not accept."""


class _NoSuchOrder(Exception):
    """-2013: the exchange has no order with the id asked for."""


@dataclass(frozen=True)
class _Request:
    """One request as the gateway sends it: the client whose keys sign it, its weight, the
    python-binance method with its parameters, and how long it may wait for the budget."""

    client: Client
    weight: float
    method: Callable[..., Any]
    params: dict[str, Any] = field(default_factory=dict)
    max_wait_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a read is tried on network errors, and how long to wait in between."""

    attempts: int = 3
    wait: wait_base = field(
        default_factory=lambda: wait_exponential_jitter(initial=0.25, max=5.0, jitter=0.5)
    )


class _PooledClient(Client):  # type: ignore[misc]  # python-binance ships no type information
    """``Client`` whose connections come from the gateway's one pool.

    python-binance gives every client its own ``requests.Session`` (the API key travels in
    its headers) and with it its own connection pool: one open socket (in production a TLS
    session) per trader. Here a trader's session keeps its headers and mounts the shared
    adapter, so a client costs a few objects and every trader's requests reuse the same few
    connections. Closing a client (python-binance does it when one is collected) leaves
    the shared pool alone.
    """

    def __init__(
        self,
        api_key: str | None,
        api_secret: str | None,
        *,
        adapter: HTTPAdapter,
        api_url: str | None,
        timeout_s: float,
    ) -> None:
        self._adapter = adapter
        if api_url is not None:  # ``BINANCE_API_BASE_URL``: a test server or a regional mirror
            self.API_URL = api_url
        super().__init__(api_key, api_secret, requests_params={"timeout": timeout_s}, ping=False)

    def _init_session(self) -> requests.Session:
        session: requests.Session = super()._init_session()
        for prefix in ("https://", "http://"):
            session.mount(prefix, self._adapter)
        session.hooks["response"].append(_remember_reply)
        return session

    def close_connection(self) -> None:
        """The connections are the gateway's; nothing of this client's to close."""


def api_url(base_url: str) -> str:
    """``https://host`` or ``https://host/api`` → the REST root python-binance expects."""
    root = base_url.rstrip("/")
    return root if root.endswith(API_PATH) else root + API_PATH


def _decimal(value: Any, field: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ExchangeUnavailable(f"Binance sent an unreadable {field}: {value!r:.40}") from None
    if not number.is_finite():
        raise ExchangeUnavailable(f"Binance sent a non-finite {field}")
    return number


def parse_fill(
    reply: Mapping[str, Any],
    client_order_id: str,
    trades: Sequence[Mapping[str, Any]] | None = None,
) -> Fill | None:
    """An order reply (``POST /order`` FULL or ``GET /order``) → ``Fill``; ``None`` if
    nothing was executed.

    The commission comes from the FULL reply's ``fills`` or, for an order looked up
    (``GET /order`` carries none), from its ``trades`` (``GET /myTrades?orderId=``);
    it is summed per asset, since one order can pay in the base asset and in BNB.
    """
    executed = _decimal(reply.get("executedQty", "0"), "executedQty")
    if executed <= 0:
        return None
    quote = _decimal(reply.get("cummulativeQuoteQty", "0"), "cummulativeQuoteQty")
    fees: dict[str, Decimal] = {}
    for part in list(reply.get("fills") or ()) + list(trades or ()):
        amount = _decimal(part.get("commission", "0"), "commission")
        asset = str(part.get("commissionAsset") or "")
        if asset and amount > 0:
            fees[asset] = fees.get(asset, Decimal(0)) + amount
    fee_asset, fee = next(iter(fees.items()), (None, Decimal(0)))
    requested = reply.get("origQty")
    return Fill(
        client_order_id=str(reply.get("clientOrderId") or client_order_id),
        exchange_order_id=str(reply.get("orderId", "")),
        symbol=str(reply.get("symbol", "")),
        side=OrderSide(str(reply.get("side", OrderSide.BUY))),
        quantity=executed,
        quote_quantity=quote,
        fee=fee,
        fee_asset=fee_asset,
        fees=fees,
        requested_quantity=None if requested is None else _decimal(requested, "origQty"),
        expired=str(reply.get("status", "")) in _EXPIRED_STATUSES,
    )


class BinanceGateway:
    """The process-wide part: endpoint, weight limiter, concurrency bound, symbol rules."""

    def __init__(
        self,
        *,
        base_url: str | None,
        limiter: WeightLimiter,
        max_concurrency: int = 4,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        rules_ttl_s: float = 3600.0,
        watch: Watch | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._api_url = api_url(base_url) if base_url else None
        self.limiter = limiter
        self._slots = asyncio.Semaphore(max_concurrency)
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._rules: dict[str, SymbolRules] = {}
        self._rules_loaded_at = float("-inf")
        self._rules_ttl_s = rules_ttl_s
        self._rules_lock = asyncio.Lock()
        self._public: Client | None = None
        # One connection pool for every trader's client; requests run at most
        # `max_concurrency` at a time, so that many connections per host are kept.
        self._adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_concurrency)
        self.requests_sent = 0
        self.order_limits: list[RateLimit] = []  # per account, from exchangeInfo
        self._listed: frozenset[str] = frozenset()  # every symbol exchangeInfo names
        self.listing_version = 0  # counts exchangeInfo reads (a market re-checks on a change)
        # Reachability for `lunara status`, marked by every request's outcome.
        self.watch = watch if watch is not None else Watch(configured=True)

    def client(self, api_key: str | None = None, api_secret: str | None = None) -> Client:
        """A python-binance client for one set of keys, on the shared connection pool; no
        request is made here."""
        return _PooledClient(
            api_key,
            api_secret,
            adapter=self._adapter,
            api_url=self._api_url,
            timeout_s=self._timeout_s,
        )

    async def aclose(self) -> None:
        """Close the shared connections (at shutdown)."""
        self._adapter.close()

    @property
    def public(self) -> Client:
        """A key-less client for market data."""
        if self._public is None:
            self._public = self.client()
        return self._public

    async def call(
        self,
        client: Client,
        weight: float,
        method: Callable[..., Any],
        *,
        retry_unknown: bool = True,
        max_wait_s: float | None = None,
        **params: Any,
    ) -> Any:
        """Send one request; see the module docstring for what is retried.

        ``retry_unknown=False`` is for requests that change state (orders): a network
        error or 5xx then raises ``ExchangeUnavailable`` for the caller to resolve.
        """
        retryable: tuple[type[BaseException], ...] = (
            (ExchangeUnavailable, RateLimited) if retry_unknown else (RateLimited,)
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry.attempts),
            wait=self._retry.wait,
            # A ban or one account's order limit outlasts any retry: fail fast.
            retry=retry_if_exception_type(retryable)
            & retry_if_not_exception_type((IpBanned, OrdersRateLimited)),
            reraise=True,
        )
        request = _Request(client, weight, method, params, max_wait_s)
        async for attempt in retrying:
            with attempt:
                return await self._send_resyncing(request)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send_resyncing(self, request: _Request) -> Any:
        try:
            return await self._send(request)
        except _ClockSkew:
            await self.resync_time(request.client)
        try:
            return await self._send(request)
        except _ClockSkew:
            raise ExchangeUnavailable(
                "Binance refuses our clock even after resynchronising; check the system time"
            ) from None

    async def resync_time(self, client: Client) -> int:
        """Set the client's ``timestamp_offset`` to server time minus local time (ms)."""
        before = time.time()
        reply = await self._send(_Request(client, Weight.SERVER_TIME, client.get_server_time))
        after = time.time()
        local_ms = int((before + after) / 2 * 1000)
        offset = int(reply["serverTime"]) - local_ms
        client.timestamp_offset = offset
        logger.info("Binance server time resynchronised (offset %d ms)", offset)
        return offset

    async def _send(self, request: _Request) -> Any:
        await self.limiter.acquire(request.weight, request.max_wait_s)
        async with self._slots:
            self.requests_sent += 1
            try:
                result, headers = await asyncio.to_thread(
                    _run_keeping_headers, request.method, request.params
                )
            except BinanceAPIException as error:
                self._observe(getattr(error.response, "headers", None))
                translated = self._translate(error)
                self._mark(translated)
                raise translated from None
            except (requests.RequestException, BinanceRequestException) as error:
                self.watch.down(f"Binance is unreachable ({type(error).__name__})")
                raise ExchangeUnavailable(
                    f"Binance is unreachable: {type(error).__name__}"
                ) from None
            self.watch.ok()
            self._observe(headers)
            return result

    def _mark(self, error: Exception) -> None:
        """An answer that is an error: Binance is down for us when it bans this server or
        fails on its side; anything else (a refusal, a rate limit) it answered."""
        if isinstance(error, IpBanned):
            self.watch.down(f"Binance banned this server's IP for {error.retry_after_s:.0f} s")
        elif isinstance(error, ExchangeUnavailable):
            self.watch.down(str(error)[:120])
        else:
            self.watch.ok()

    async def ping(self) -> None:
        """Ask Binance for nothing (weight 1), to learn whether it answers."""
        await self.call(self.public, Weight.SERVER_TIME, self.public.ping, retry_unknown=False)

    def _observe(self, headers: Mapping[str, str] | None) -> None:
        used = used_weight(headers)
        if used is not None:
            self.limiter.observe_used(used)

    def _translate(self, error: BinanceAPIException) -> Exception:
        status = int(error.status_code)
        code = error.code if isinstance(error.code, int) else None
        message = str(error.message or "no message")[:200]
        headers = getattr(error.response, "headers", None) or {}
        if status == 418:
            ban_s = parse_retry_after(headers.get("Retry-After"), longest=MAX_BAN_S)
            self.limiter.ban(ban_s)
            return IpBanned(f"Binance banned this server's IP (418): {message}", ban_s)
        if code == ErrorCode.TOO_MANY_ORDERS:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            return OrdersRateLimited(f"Binance order limit of this account: {message}",
                                     retry_after)  # fmt: skip
        if status == 429 or code == ErrorCode.TOO_MANY_REQUESTS:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            self.limiter.penalize(retry_after)
            return RateLimited(f"Binance rate limit ({status}): {message}", retry_after)
        if code == ErrorCode.TIMESTAMP_OUTSIDE_RECV_WINDOW:
            return _ClockSkew(message)
        if code == ErrorCode.NO_SUCH_ORDER:
            return _NoSuchOrder(message)
        if code in _CREDENTIAL_CODES or status == 401:
            return CredentialsRejected(f"Binance refused the API key: {message}")
        if status >= 500 or status == 408 or code in _UNKNOWN_OUTCOME_CODES:
            # -1006 "An unexpected response was received from the message bus" and -1007
            # "Timeout waiting for response": the order may or may not have executed,
            # whatever HTTP status carried the code.
            return ExchangeUnavailable(f"Binance server error {status}: {message}")
        if code == ErrorCode.INVALID_MESSAGE and message.startswith(_STALE_RULES_MESSAGES):
            return self._refused_on_stale_rules(message)
        if _DUPLICATE_MESSAGE in message.lower():
            return DuplicateOrder(f"Binance refused the order: {message}", code)
        return OrderRefused(f"Binance refused the request: {message}", code)

    def apply_rate_limits(self, entries: object) -> None:
        """``exchangeInfo.rateLimits``: the weight budget for the limiter, the ORDERS limits
        for every account; limits Binance leaves out keep their previous values."""
        limits = parse_rate_limits(entries)
        per_minute = weight_per_minute(limits)
        if per_minute is not None:
            self.limiter.set_limit(per_minute)
        orders = [limit for limit in limits if limit.kind == RateLimitKind.ORDERS]
        if orders:
            self.order_limits = orders

    async def load_exchange_info(self) -> None:
        """Read ``exchangeInfo`` now (at start) so its limits apply from the first tick."""
        await self._refresh_rules_if_stale()

    def _refused_on_stale_rules(self, message: str) -> OrderRefused:
        """Binance judged the order by rules our cache does not hold (a filter or status
        changed within the hour): forget the cache so the next order loads
        ``exchangeInfo`` once more. The refusal stays definite: the order is not resent."""
        self._rules_loaded_at = float("-inf")
        logger.info("Binance refused an order (%s); symbol rules will be reloaded", message)
        return OrderRefused(
            f"Binance refused the order: {message}; its current rules were reloaded, "
            "so check the amount and try again",
            ErrorCode.INVALID_MESSAGE,
        )

    async def average_price(self, symbol: str) -> Decimal:
        """``GET /api/v3/avgPrice``: the price Binance values a market order at."""
        reply = await self.call(
            self.public, Weight.AVERAGE_PRICE, self.public.get_avg_price, symbol=symbol
        )
        return _decimal(reply.get("price", "0"), "average price")

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        """Filters from ``exchangeInfo``, fetched once for all symbols and kept an hour."""
        await self._refresh_rules_if_stale()
        found = self._rules.get(symbol)
        if found is None:
            raise TradingError(f"{symbol} is not traded on Binance")
        return found

    async def _refresh_rules_if_stale(self) -> None:
        async with self._rules_lock:
            if time.monotonic() - self._rules_loaded_at > self._rules_ttl_s:
                info = await self.call(
                    self.public, Weight.EXCHANGE_INFO, self.public.get_exchange_info
                )
                self.apply_rate_limits(info.get("rateLimits"))
                rules: dict[str, SymbolRules] = {}
                listed: set[str] = set()
                for entry in info.get("symbols") or ():
                    if isinstance(entry, Mapping) and isinstance(entry.get("symbol"), str):
                        listed.add(entry["symbol"])
                    try:
                        parsed = parse_symbol(entry)
                    except InvalidSymbolInfo as error:
                        logger.debug("skipping symbol: %s", error)
                        continue
                    rules[parsed.symbol] = parsed
                self._rules = rules
                self._listed = frozenset(listed)
                self.listing_version += 1
                self._rules_loaded_at = time.monotonic()

    async def listed_symbols(self) -> frozenset[str]:
        """Every symbol ``exchangeInfo`` names (read at most once per ``rules_ttl_s``):
        what ``ticker/price`` and ``klines`` accept; any other name makes Binance refuse
        the whole request with -1121 "Invalid symbol."."""
        await self._refresh_rules_if_stale()
        return self._listed

    def listed_now(self) -> frozenset[str]:
        """The symbols of the last ``exchangeInfo`` read, without reading it (empty
        before the first read)."""
        return self._listed


class BinanceExchange:
    """One trader's Binance account."""

    def __init__(self, gateway: BinanceGateway, api_key: str, api_secret: str) -> None:
        self._gateway = gateway
        self._client = gateway.client(api_key, api_secret)
        # Binance's ORDERS limits are per account: a -1015 holds back this trader only.
        self._orders_held_until = 0.0  # on the limiter's (monotonic) clock
        self._orders = WindowCounter(gateway.limiter.wall)

    @property
    def name(self) -> str:
        return VENUE

    @property
    def timestamp_offset_ms(self) -> int:
        return int(self._client.timestamp_offset)

    async def _signed(self, weight: float, method: Callable[..., Any], **params: Any) -> Any:
        """A request signed with this trader's keys; every one goes through the gateway."""
        return await self._gateway.call(self._client, weight, method, **params)

    async def _account(self, max_wait_s: float | None = None) -> Any:
        """``GET /account`` without the assets the trader holds none of."""
        return await self._signed(
            Weight.ACCOUNT, self._client.get_account, max_wait_s=max_wait_s, omitZeroBalances="true"
        )

    async def _market_order(
        self, weight: float, method: Callable[..., Any], symbol: str, side: OrderSide, **params: Any
    ) -> Any:
        """A MARKET order (``POST /order`` or ``/order/test``): it changes state, so a lost
        answer is never resent here (the order path finds out what became of it)."""
        return await self._signed(
            weight,
            method,
            retry_unknown=False,
            symbol=symbol,
            side=side.value,
            type="MARKET",
            **params,
        )

    async def balances(self, max_wait_s: float | None = None) -> list[AssetBalance]:
        account = await self._account(max_wait_s)
        found: list[AssetBalance] = []
        for entry in account.get("balances") or ():
            free = _decimal(entry.get("free", "0"), "free")
            locked = _decimal(entry.get("locked", "0"), "locked")
            if free > 0 or locked > 0:
                found.append(AssetBalance(str(entry.get("asset")), free, locked))
        return found

    async def check_access(self, symbol: str = "BTCUSDT") -> None:
        """Prove the key pair signs requests and may trade spot; `CredentialsRejected` if not.

        ``account.canTrade`` describes the account, not the key: a key created without
        "Enable Spot & Margin Trading" reads the account fine and is refused on its first
        order. So after the signed read, a test order (``POST /order/test``: validated
        like an order, never executed) on ``symbol`` must be accepted too.
        """
        account = await self._account()
        if account.get("canTrade") is False:
            raise CredentialsRejected(NO_TRADING)
        rules = await self._gateway.symbol_rules(symbol)
        try:
            await self._market_order(
                Weight.TEST_ORDER,
                self._client.create_test_order,
                symbol,
                OrderSide.BUY,
                quoteOrderQty=format_amount(max(rules.min_notional, TEST_ORDER_QUOTE)),
            )
        except CredentialsRejected:
            raise CredentialsRejected(NO_TRADING) from None  # the signed read went through
        except OrderRefused as error:
            if error.code == ErrorCode.NEW_ORDER_REJECTED:  # "trading disabled on this account"
                raise CredentialsRejected(f"{NO_TRADING} ({error})") from None
            raise

    async def symbol_rules(self, symbol: str) -> SymbolRules:
        return await self._gateway.symbol_rules(symbol)

    def _hold_orders_if_limited(self) -> None:
        """Refuse (before sending) an order this account's ORDERS limits would refuse."""
        self._orders.set_limits(self._gateway.order_limits)
        held_s = self._orders_held_until - self._gateway.limiter.clock()
        wait = max(held_s, self._orders.seconds_until_allowed())
        if wait > 0:
            raise OrdersRateLimited(
                f"this account placed as many orders as Binance allows for now; "
                f"try again in {wait:.0f} s",
                wait,
            )

    async def place_market_order(
        self, symbol: str, side: OrderSide, quantity: Decimal, client_order_id: str
    ) -> Fill:
        await self._check_market_order(symbol, side, quantity)
        self._hold_orders_if_limited()
        self._orders.record()
        try:
            reply = await self._market_order(
                Weight.ORDER,
                self._client.create_order,
                symbol,
                side,
                quantity=format_amount(quantity),
                newClientOrderId=client_order_id,
                newOrderRespType="FULL",
            )
        except OrdersRateLimited as error:
            self._orders_held_until = self._gateway.limiter.clock() + error.retry_after_s
            logger.warning("one account hit Binance's order limit; its orders wait %.0f s",
                           error.retry_after_s)  # fmt: skip
            raise
        if "code" in reply and "orderId" not in reply:
            # An error body under a 2xx status: python-binance hands it back as a reply.
            code = reply.get("code")
            message = str(reply.get("msg") or "no message")[:200]
            if code in _UNKNOWN_OUTCOME_CODES:
                raise ExchangeUnavailable(f"Binance could not say what became of it: {message}")
            raise OrderRefused(f"Binance refused the request: {message}", code)
        fill = parse_fill(reply, client_order_id)
        if fill is None:
            status = reply.get("status", "?")
            raise OrderRefused(f"Binance did not fill the market order (status {status})")
        return fill

    async def _check_market_order(self, symbol: str, side: OrderSide, quantity: Decimal) -> None:
        """Binance's filters as it applies them to a market order: valued at the average
        price. ``OrderRejected`` (definite, never resent) if they refuse it; when the
        average cannot be read, Binance itself judges the order."""
        rules = await self._gateway.symbol_rules(symbol)
        check_tradable(rules)
        try:
            average = await self._gateway.average_price(symbol)
        except ExchangeError as error:
            logger.info("no average price for %s (%s); Binance will judge the order", symbol, error)
            return
        accepted = check_order(rules, quantity, average, side=side, average_price=average)
        if accepted != quantity:
            raise OrderRejected(
                f"quantity {format_amount(quantity)} is off the lot step of {symbol}"
            )

    async def find_order(self, symbol: str, client_order_id: str) -> Fill | None:
        """The order by its client id, with its real commission; ``None`` if not seen.

        ``GET /order`` reads Binance's database, which can lag an accepted order and
        answer -2013 for a while: ``allOrders`` is asked too before saying it is not
        there. Neither carries the commission, so a filled order's trades are read
        from ``myTrades``. Whether "not there" means "never placed" is the caller's
        call (it waits out the recvWindow first).
        """
        try:
            reply = await self._signed(
                Weight.QUERY_ORDER,
                self._client.get_order,
                symbol=symbol,
                origClientOrderId=client_order_id,
            )
        except _NoSuchOrder:
            listed = await self._signed(
                Weight.ALL_ORDERS, self._client.get_all_orders, symbol=symbol
            )
            matches = [o for o in listed or () if o.get("clientOrderId") == client_order_id]
            if not matches:
                return None
            reply = matches[-1]
        trades: list[Mapping[str, Any]] = []
        if _decimal(reply.get("executedQty", "0"), "executedQty") > 0:
            trades = await self._signed(
                Weight.MY_TRADES,
                self._client.get_my_trades,
                symbol=symbol,
                orderId=reply.get("orderId"),
            )
        fill = parse_fill(reply, client_order_id, trades)
        if fill is None:
            status = str(reply.get("status", "?"))
            if status in ("NEW", "PARTIALLY_FILLED", "PENDING_NEW"):
                raise ExchangeError(f"order {client_order_id} is still {status} on Binance")
            raise OrderRefused(f"Binance ended the order without a fill (status {status})")
        return fill
