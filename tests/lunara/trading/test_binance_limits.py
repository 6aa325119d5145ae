"""Binance's rate limits as Binance counts them: the limiter's pure parts, then the real
python-binance client against the fake Binance (whose windows run on the same fake clock,
so nothing here waits in real time)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from binance.client import Client
from tenacity import wait_none

from lunara.services import TradingError
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.trading.binance import NO_TRADING, BinanceExchange, BinanceGateway, RetryPolicy
from lunara.trading.engine import EngineConfig, TradingEngine
from lunara.trading.exchange import CredentialsRejected, IpBanned, OrdersRateLimited
from lunara.trading.limiter import (
    DEFAULT_WEIGHT_PER_MINUTE,
    MAX_BAN_S,
    MAX_RETRY_AFTER_S,
    SAFETY_MARGIN,
    RateLimit,
    WeightLimiter,
    WindowCounter,
    parse_rate_limits,
    parse_retry_after,
    weight_per_minute,
)
from lunara.trading.market import BinanceMarket
from lunara.trading.model import OrderSide
from lunara.trading.stops import SqliteStopStore
from tests.fakes.binance_api import FakeBinance
from tests.lunara.trading.support import FakeClock

KEY, SECRET = "k" * 64, "s" * 64
OTHER_KEY, OTHER_SECRET = "o" * 64, "p" * 64
START = 1_000_040.0  # 20 s into a minute, at the start of a 10 s window


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeBinance]:
    with FakeBinance(clock=clock) as server:
        server.add_account(KEY, SECRET, USDT="1000")
        server.add_account(OTHER_KEY, OTHER_SECRET, USDT="1000")
        yield server


def _limiter(
    clock: FakeClock, weight_per_minute: float = DEFAULT_WEIGHT_PER_MINUTE
) -> WeightLimiter:
    return WeightLimiter(weight_per_minute, clock=clock, wall=clock, sleep=clock.sleep)


def _gateway(fake: FakeBinance, clock: FakeClock) -> BinanceGateway:
    return BinanceGateway(
        base_url=fake.base_url,
        limiter=_limiter(clock),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=3, wait=wait_none()),
    )


def _other_program(fake: FakeBinance) -> Client:
    """Another program on the same IP: its weight counts against ours at Binance."""

    class Local(Client):  # type: ignore[misc]  # python-binance ships no type information
        API_URL = fake.api_url

    return Local(KEY, SECRET, ping=False)


# -- the limiter's pure parts -------------------------------------------------------------


def test_exchange_info_rate_limits_are_read_and_malformed_entries_skipped() -> None:
    entries = [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        {"rateLimitType": "ORDERS", "interval": "FORTNIGHT", "intervalNum": 1, "limit": 9},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": "1", "limit": 9},
        "not a limit",
    ]
    limits = parse_rate_limits(entries)
    assert limits == [
        RateLimit("REQUEST_WEIGHT", 60, 6000),
        RateLimit("ORDERS", 10, 100),
        RateLimit("ORDERS", 86400, 200000),
        RateLimit("RAW_REQUESTS", 300, 61000),
    ]
    assert weight_per_minute(limits) == 6000
    assert weight_per_minute([RateLimit("REQUEST_WEIGHT", 10, 500)]) == 3000  # per 10 s
    assert parse_rate_limits(None) == []
    assert weight_per_minute([]) is None


def test_the_budget_is_binances_limit_less_the_margin_once_it_is_known(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    assert limiter.budget == DEFAULT_WEIGHT_PER_MINUTE
    assert limiter.binance_limit is None
    limiter.set_limit(6000)
    assert limiter.budget == 6000 * SAFETY_MARGIN
    assert limiter.binance_limit == 6000


async def test_binance_counting_more_than_we_sent_holds_requests_until_the_next_minute(
    clock: FakeClock,
) -> None:
    limiter = _limiter(clock, 100)
    limiter.set_limit(125)  # Binance publishes 125 a minute: 100 planned, 100 counted at most
    await limiter.acquire(10)
    assert limiter.used_weight == 10
    assert clock.slept == []
    limiter.observe_used(95)  # Binance counted more: another program on this IP
    await limiter.acquire(10)
    assert clock.slept == [pytest.approx(40 + 1)]  # to the minute's end, plus slack
    assert limiter.used_weight == 10  # a new minute: only this request


async def test_a_restart_after_a_busy_minute_is_held_only_past_binances_limit(
    clock: FakeClock,
) -> None:
    # Before exchangeInfo is read the bot plans the start-up budget, but Binance's own
    # count (earlier lives of the bot included) is judged against Binance's usual limit.
    limiter = _limiter(clock, 100)
    limiter.observe_used(3300)
    await limiter.acquire(10)
    assert clock.slept == []
    limiter.observe_used(4795)
    await limiter.acquire(10)
    assert clock.slept == [pytest.approx(40 + 1)]


async def test_a_ban_fails_every_request_at_once_until_it_ends(clock: FakeClock) -> None:
    limiter = _limiter(clock)
    limiter.ban(7200)
    with pytest.raises(IpBanned) as banned:
        await limiter.acquire(1)
    assert banned.value.retry_after_s == 7200
    assert "2.0 h" in str(banned.value)
    assert clock.slept == []  # not slept through
    assert limiter.banned_until == START + 7200
    assert limiter.bans == 1
    limiter.ban(60)  # a shorter answer never shortens the ban, nor counts as a new one
    assert limiter.banned_for_s == 7200
    assert limiter.bans == 1
    clock.now += 7200
    await limiter.acquire(1)
    assert limiter.banned_until is None


def test_a_418_retry_after_is_believed_up_to_three_days_a_429_up_to_five_minutes() -> None:
    assert parse_retry_after("86400", longest=MAX_BAN_S) == 86400
    assert parse_retry_after("999999", longest=MAX_BAN_S) == MAX_BAN_S
    assert parse_retry_after("86400") == MAX_RETRY_AFTER_S


def test_a_window_counter_refuses_once_full_until_the_window_ends(clock: FakeClock) -> None:
    counter = WindowCounter(clock)
    counter.set_limits([RateLimit("ORDERS", 10, 2), RateLimit("ORDERS", 86400, 3)])
    counter.record()
    counter.record()
    assert counter.seconds_until_allowed() == 10  # START sits on a 10 s boundary
    clock.now += 10
    assert counter.seconds_until_allowed() == 0
    counter.record()
    assert counter.seconds_until_allowed() == pytest.approx(86400 - clock.now % 86400)


# -- through python-binance against the fake ----------------------------------------------


async def test_every_replys_used_weight_header_becomes_the_limiters_count(
    fake: FakeBinance, clock: FakeClock
) -> None:
    gateway = _gateway(fake, clock)
    exchange = BinanceExchange(gateway, KEY, SECRET)
    await exchange.balances()
    assert fake.used_weight() == 20
    assert gateway.limiter.used_weight == 20
    _other_program(fake).get_account()  # 20 more that the bot never sent
    await BinanceMarket(gateway).prices(["BTCUSDT"])  # ticker/price with `symbols`: 4
    assert fake.used_weight() == 44
    assert gateway.limiter.used_weight == 44  # Binance's count, not our 24


async def test_exchange_info_sets_the_weight_budget_and_every_accounts_order_limits(
    fake: FakeBinance, clock: FakeClock
) -> None:
    gateway = _gateway(fake, clock)
    await gateway.load_exchange_info()
    assert gateway.limiter.budget == 6000 * SAFETY_MARGIN
    assert gateway.order_limits == [
        RateLimit("ORDERS", 10, 100),
        RateLimit("ORDERS", 86400, 200000),
    ]


async def test_weight_used_by_another_program_makes_the_bot_wait_instead_of_a_429(
    fake: FakeBinance, clock: FakeClock
) -> None:
    fake.weight_limit = 100  # budget 80 once exchangeInfo is read
    gateway = _gateway(fake, clock)
    await gateway.load_exchange_info()  # 20
    other = _other_program(fake)
    for _ in range(3):
        other.get_account()  # 60: Binance is at 80, the bot believes 20
    exchange = BinanceExchange(gateway, KEY, SECRET)
    await exchange.balances()  # sent (the bot could not know); the reply says 100
    assert gateway.limiter.used_weight == 100
    await exchange.balances()
    assert clock.slept == [pytest.approx(40 + 1)]  # waited for Binance's next minute
    assert fake.used_weight() == 20  # a 429 would have raised: the bot never got one


async def test_a_418_ban_is_honoured_in_full_and_fails_every_trader_fast(
    fake: FakeBinance, clock: FakeClock
) -> None:
    gateway = _gateway(fake, clock)
    first = BinanceExchange(gateway, KEY, SECRET)
    second = BinanceExchange(gateway, OTHER_KEY, OTHER_SECRET)
    fake.inject_rate_limit("account", 7200, banned=True)
    with pytest.raises(IpBanned):
        await first.balances()
    assert gateway.limiter.banned_for_s == 7200  # not cut to 300 s
    sent = gateway.requests_sent
    with pytest.raises(IpBanned):
        await second.balances()
    with pytest.raises(IpBanned):
        await second.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "c1")
    assert gateway.requests_sent == sent
    assert clock.slept == []  # nothing sent, nothing slept


async def test_after_a_429_the_bot_waits_out_retry_after_and_is_never_banned(
    fake: FakeBinance, clock: FakeClock
) -> None:
    fake.weight_limit = 40
    exchange = BinanceExchange(_gateway(fake, clock), KEY, SECRET)
    await exchange.balances()
    await exchange.balances()  # 40: at the limit; the next is refused with a 429
    balances = await exchange.balances()  # retried after Retry-After, in the next minute
    assert clock.slept == [pytest.approx(40)]
    assert balances[0].asset == "USDT"
    assert fake.ban_ends_in() == 0


async def test_one_accounts_order_limit_holds_back_that_account_only(
    fake: FakeBinance, clock: FakeClock
) -> None:
    fake.orders_per_10s = 1
    gateway = _gateway(fake, clock)
    busy = BinanceExchange(gateway, KEY, SECRET)
    calm = BinanceExchange(gateway, OTHER_KEY, OTHER_SECRET)
    await busy.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "busy-1")
    with pytest.raises(OrdersRateLimited) as limited:
        await busy.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "busy-2")
    assert 0 < limited.value.retry_after_s <= 10
    # The order check read exchangeInfo, so its published ORDERS limit held the second
    # order back before Binance had to refuse it; never retried into the limit.
    assert fake.count("POST", "order") == 1
    with pytest.raises(OrdersRateLimited):
        await busy.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "busy-3")
    assert fake.count("POST", "order") == 1  # held back before sending
    assert gateway.limiter.blocked_for_s == 0  # the shared budget was not touched
    fill = await calm.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "calm-1")
    assert fill.quantity == Decimal("0.001")
    clock.now += 10
    await busy.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "busy-4")


async def test_the_published_order_limit_is_kept_before_binance_refuses(
    fake: FakeBinance, clock: FakeClock
) -> None:
    fake.orders_per_10s = 1
    gateway = _gateway(fake, clock)
    await gateway.load_exchange_info()
    exchange = BinanceExchange(gateway, KEY, SECRET)
    await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "a-1")
    with pytest.raises(OrdersRateLimited):
        await exchange.place_market_order("BTCUSDT", OrderSide.BUY, Decimal("0.001"), "a-2")
    assert fake.count("POST", "order") == 1  # the bot knew the limit: nothing sent


async def test_setkeys_check_refuses_a_key_that_reads_but_may_not_trade(
    fake: FakeBinance, clock: FakeClock
) -> None:
    gateway = _gateway(fake, clock)
    fake.no_trading.add(OTHER_KEY)  # the account can trade; this key lacks the permission
    with pytest.raises(CredentialsRejected, match="may not trade"):
        await BinanceExchange(gateway, OTHER_KEY, OTHER_SECRET).check_access("BTCUSDT")
    assert fake.count("GET", "account") == 1  # the signed read went through
    assert fake.count("POST", "order/test") == 1
    await BinanceExchange(gateway, KEY, SECRET).check_access("BTCUSDT")
    assert fake.count("POST", "order/test") == 2
    assert fake.orders == []
    assert fake.balances[KEY]["USDT"] == Decimal(1000)  # never executed


async def test_setkeys_check_refuses_an_account_with_trading_disabled(
    fake: FakeBinance, clock: FakeClock
) -> None:
    fake.trading_disabled.add(KEY)
    with pytest.raises(CredentialsRejected) as refused:
        await BinanceExchange(_gateway(fake, clock), KEY, SECRET).check_access("BTCUSDT")
    assert str(refused.value) == NO_TRADING


class AdminInbox:
    def __init__(self) -> None:
        self.to_admins: list[str] = []

    async def notify(self, user_id: int, text: str) -> None:
        raise AssertionError("a ban is no trader's business")

    async def notify_admins(self, text: str) -> None:
        self.to_admins.append(text)


async def test_a_ban_is_told_to_the_admins_once_and_shown_in_the_engine_status(
    fake: FakeBinance, clock: FakeClock, tmp_path: Path
) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        gateway = _gateway(fake, clock)
        inbox = AdminInbox()
        engine = TradingEngine(
            db=db, stops=SqliteStopStore(db), market=BinanceMarket(gateway),
            config=EngineConfig(), gateway=gateway, notifier=inbox,
        )  # fmt: skip
        await users.register(db, 1, "trader")
        assert await engine.report_ban_if_new() is False
        fake.inject_rate_limit("ticker/price", 3600, banned=True)
        with pytest.raises(IpBanned):
            await BinanceMarket(gateway).prices(["BTCUSDT"])
        assert await engine.report_ban_if_new() is True
        assert await engine.report_ban_if_new() is False  # once per ban
        assert len(inbox.to_admins) == 1
        assert "HTTP 418" in inbox.to_admins[0]
        status = await engine.engine_status()
        assert status["binance_banned_for_s"] == 3600
        assert status["binance_banned_until"] is not None
        with pytest.raises(TradingError, match="blocked this bot's server for 60 minutes"):
            await engine.buy(1, "BTCUSDT", Decimal(10))
    finally:
        await db.close()
