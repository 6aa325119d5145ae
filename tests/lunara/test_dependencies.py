"""How each client marks its dependency, through the real client libraries and the fakes,
and what the reporter writes for `lunara status` (blueprint.dependencies reads it)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from telegram.error import (
    BadRequest,
    Conflict,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from tenacity import wait_none

from blueprint.dependencies import read_dependencies
from lunara.ai.analyst import Analyst, MarketSummary
from lunara.dependencies import Dependencies, DependencyReporter, Watch
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.telegram.errors import mark_telegram
from lunara.trading.binance import BinanceGateway, RetryPolicy, Weight
from lunara.trading.exchange import ExchangeError
from lunara.trading.limiter import WeightLimiter
from tests.fakes.binance_api import FakeBinance
from tests.fakes.gemini_api import FakeGemini

SUMMARY = MarketSummary(
    symbol="BTCUSDT",
    interval="1m",
    candle_open_time=1_700_000_000_000,
    price=60_000.0,
    indicators={"rsi": 28.5},
    symptoms=[],
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- one dependency ---------------------------------------------------------------------


def test_a_watch_is_off_unless_configured_and_remembers_when_it_was_last_ok() -> None:
    now = [100.0]
    watch = Watch(configured=True, clock=lambda: now[0])
    assert watch.report()["state"] == "ok"
    assert watch.last_ok_at is None
    watch.ok()
    now[0] = 105.0
    watch.down("first")
    now[0] = 107.0
    watch.down("second")
    assert watch.report() == {
        "state": "down",
        "last_ok_at": 100.0,
        "down_since": 105.0,  # the outage began at its first failure
        "reason": "second",
    }
    watch.ok()
    assert watch.report() == {"state": "ok", "last_ok_at": 107.0, "down_since": None,
                              "reason": None}  # fmt: skip
    assert Watch(configured=False).report()["state"] == "off"


def test_a_watch_waiting_is_down_with_its_reason_until_it_resumes() -> None:
    """Reachable but not used (Telegram answers, polling waits for its lease): down, with
    what it waits for; an outage meanwhile speaks first; resuming keeps `last_ok_at`."""
    now = [100.0]
    watch = Watch(configured=True, clock=lambda: now[0])
    watch.ok()
    now[0] = 110.0
    watch.wait("not polling: the lease")
    now[0] = 115.0
    watch.wait("not polling: the lease, still")
    watch.ok()  # a request answered; still not used
    assert watch.report() == {"state": "down", "last_ok_at": 115.0, "down_since": 110.0,
                              "reason": "not polling: the lease, still"}  # fmt: skip
    now[0] = 120.0
    watch.down("the Bot API did not answer")
    assert watch.report()["reason"] == "the Bot API did not answer"
    assert watch.report()["down_since"] == 120.0
    watch.ok()
    watch.resume()
    assert watch.report() == {"state": "ok", "last_ok_at": 120.0, "down_since": None,
                              "reason": None}  # fmt: skip


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (NetworkError("connection refused"), "down"),
        (TimedOut(), "down"),
        (Conflict("terminated by other getUpdates request"), "ok"),
        (RetryAfter(3), "ok"),
        (BadRequest("chat not found"), "ok"),
    ],
)
def test_telegram_is_down_only_when_the_bot_api_did_not_answer(
    error: TelegramError, state: str
) -> None:
    watch = Watch(configured=True)
    mark_telegram(watch, error)
    assert watch.state == state


# -- the exchange, through python-binance and the fake --------------------------------------


def gateway(base_url: str) -> BinanceGateway:
    return BinanceGateway(
        base_url=base_url,
        limiter=WeightLimiter(),
        timeout_s=2.0,
        retry=RetryPolicy(attempts=1, wait=wait_none()),
    )


@pytest.mark.slow
async def test_binance_unreachable_or_failing_is_down_and_a_refusal_is_an_answer() -> None:
    with FakeBinance() as fake:
        exchange = gateway(fake.base_url)
        await exchange.ping()
        assert exchange.watch.state == "ok"
        assert exchange.watch.last_ok_at is not None
        fake.inject("ping", 503, -1001, "Internal error; unable to process your request.")
        with pytest.raises(ExchangeError):
            await exchange.ping()
        assert exchange.watch.state == "down"
        assert exchange.watch.reason is not None
        assert "503" in exchange.watch.reason
        fake.inject_rate_limit("ping", 30)  # 429: Binance answered
        with pytest.raises(ExchangeError):
            await exchange.ping()
        assert exchange.watch.state == "ok"
        fake.inject_rate_limit("ping", 120, banned=True)
        with pytest.raises(ExchangeError):
            await exchange.ping()
        assert exchange.watch.state == "down"
        assert exchange.watch.reason == "Binance banned this server's IP for 120 s"
        await exchange.aclose()
    closed = gateway(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ExchangeError):
        await closed.call(closed.public, Weight.SERVER_TIME, closed.public.ping)
    assert closed.watch.state == "down"
    assert closed.watch.reason == "Binance is unreachable (ConnectionError)"
    await closed.aclose()


# -- Gemini, through google-genai and the fake ---------------------------------------------


async def test_gemini_failing_is_down_a_quota_answer_is_not(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(db, 1, "trader")
        with FakeGemini() as fake:
            analyst = Analyst(
                api_key="test-key",
                model="gemini-2.5-flash",
                base_url=fake.base_url,
                db=db,
                attempts=1,
                retry_initial_delay_s=0.01,
            )
            fake.inject(503, times=1)
            await analyst.comment(1, "free", SUMMARY, limit=5)
            assert analyst.watch.state == "down"
            assert analyst.watch.reason == "Gemini did not answer (HTTP 503)"
            fake.inject(429, times=1)
            await analyst.comment(1, "free", SUMMARY, limit=5)
            assert analyst.watch.state == "ok"
            await analyst.comment(1, "free", SUMMARY, limit=5)
            assert analyst.watch.state == "ok"
            assert analyst.watch.last_ok_at is not None
            await analyst.aclose()
    finally:
        await db.close()


# -- the reporter -------------------------------------------------------------------------


def board_with_redis() -> Dependencies:
    board = Dependencies()
    board.redis.configured = True
    return board


async def test_the_reporter_finds_redis_down_and_writes_a_private_file(home: Path) -> None:
    board = board_with_redis()
    client = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_timeout=2.0)
    reporter = DependencyReporter(home / "dependencies.json", board, redis=client)
    before = time.time() - 1
    try:
        await reporter.probe()
        reporter.write()
    finally:
        await client.aclose()
    assert board.redis.state == "down"
    assert os.stat(home / "dependencies.json").st_mode & 0o777 == 0o600
    shown = read_dependencies(home / "dependencies.json", before)
    assert shown is not None
    assert shown["redis"]["state"] == "down"
    assert shown["redis"]["reason"].startswith("unreachable (ConnectionError)")
    assert shown["telegram"] == {"state": "off", "last_ok_at": None}
    # A report older than the bot asking is the previous bot's: not shown.
    assert read_dependencies(home / "dependencies.json", time.time() + 5) is None


async def test_redis_answering_while_stops_still_run_from_sqlite_is_still_down(
    home: Path, redis_db: str
) -> None:
    on_sqlite = [True]
    board = board_with_redis()
    client = Redis.from_url(redis_db)
    reporter = DependencyReporter(
        home / "dependencies.json", board, redis=client, stops_on_sqlite=lambda: on_sqlite[0]
    )
    try:
        await reporter.probe()
        assert board.redis.state == "down"
        assert board.redis.last_ok_at is not None
        assert board.redis.reason is not None
        assert "answers again" in board.redis.reason
        on_sqlite[0] = False
        reporter._redis_probed_at = float("-inf")  # the next probe is due
        await reporter.probe()
        assert board.redis.state == "ok"
    finally:
        await client.aclose()


async def test_the_reporter_writes_only_when_something_changed(home: Path) -> None:
    board = Dependencies()
    path = home / "dependencies.json"
    reporter = DependencyReporter(path, board)
    reporter.write()
    first = path.stat().st_mtime_ns
    os.utime(path, ns=(first - 10**9, first - 10**9))
    reporter.write()
    assert path.stat().st_mtime_ns == first - 10**9  # unchanged: not written again
    board.ai.configured = True
    reporter.write()
    assert json.loads(path.read_text())["ai"]["state"] == "ok"
