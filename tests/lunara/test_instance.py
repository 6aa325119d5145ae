"""The instance lease and its fencing epoch, over a real Redis and real SQLite.

Two leases in one process stand for two bots: what decides is what Redis holds, so the
behaviour is the same as across processes (the CLI tests run it across processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypedDict, Unpack

import aiosqlite
import pytest
from redis.asyncio import Redis

from blueprint.errors import ExitCode
from lunara.instance import (
    Holder,
    InstanceConflict,
    InstanceLease,
    LeaseLost,
    StaleEpoch,
    lease_key,
)
from lunara.services import TradingError
from lunara.storage import positions as store
from lunara.storage import users
from lunara.storage.database import open_database
from lunara.storage.deployment import deployment_id
from lunara.trading.binance import BinanceExchange, BinanceGateway
from lunara.trading.limiter import WeightLimiter
from lunara.trading.model import OrderSide, OrderStatus
from lunara.trading.orders import OrderPath, OrderRequest
from lunara.trading.stops import RedisStopStore, SqliteStopStore
from lunara.trading.trailing import StopState, TrailingParams
from tests.fakes.binance_api import FakeBinance
from tests.lunara.trading.test_stopstore import create_stop_table
from tests.waiting import until, until_awaited

NAME = "lunara-test"
DEPLOYMENT = "a" * 32
OTHER_DEPLOYMENT = "b" * 32
PARAMS = TrailingParams(stoploss=-0.10, trailing_stop=True)
KEY, SECRET = "k" * 64, "s" * 64


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_db)
    yield client
    await client.aclose()


class LeaseOptions(TypedDict, total=False):
    ttl_s: float
    clock: Callable[[], float]


def _lease(
    redis: Redis, home: Path, deployment: str = DEPLOYMENT, **options: Unpack[LeaseOptions]
) -> InstanceLease:
    home.mkdir(parents=True, exist_ok=True)
    return InstanceLease(
        name=NAME, deployment_id=deployment, home=home, redis=redis, host="host-" + home.name,
        **options,
    )  # fmt: skip


async def _expired(redis: Redis) -> None:
    async def gone() -> bool:
        return not await redis.exists(lease_key(NAME))

    await until_awaited(gone, what="the instance lease expired")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_fresh_database_gets_a_deployment_id_once(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "lunara.db")
    first = await deployment_id(db)
    await db.close()
    db = await open_database(tmp_path / "lunara.db")
    try:
        assert await deployment_id(db) == first
        assert len(first) == 32
        assert int(first, 16) >= 0
    finally:
        await db.close()
    other = await open_database(tmp_path / "other.db")
    try:
        assert await deployment_id(other) != first
    finally:
        await other.close()


async def test_a_second_instance_of_the_deployment_waits_then_takes_over_with_a_new_epoch(
    redis: Redis, tmp_path: Path
) -> None:
    active = _lease(redis, tmp_path / "a")
    standby = _lease(redis, tmp_path / "b")
    assert await active.try_redis() is None
    assert active.epoch == 1
    assert active.may_act()
    holder = await standby.try_redis()
    assert holder == Holder(DEPLOYMENT, "host-a", str(tmp_path / "a"), active.pid, 1)
    assert standby.epoch is None
    assert not standby.may_act()
    stop = asyncio.Event()
    waiting = asyncio.create_task(standby.acquire(stop))
    await until(lambda: standby.standby_for is not None, what="the standby to find the holder")
    assert not waiting.done()
    assert standby.standby_for is not None
    assert standby.standby_for.home == str(tmp_path / "a")
    await active.release()
    assert await asyncio.wait_for(waiting, 5.0) is True
    assert standby.epoch == 2
    assert standby.fence.epoch == "2"
    assert standby.may_act()
    await standby.release()


async def test_a_bot_restarted_in_its_home_takes_its_dead_predecessors_lease_at_once(
    redis: Redis, tmp_path: Path
) -> None:
    """Holding the home's lock proves the lease's holder in this home is dead (killed, so
    it released nothing): the restarted bot does not wait out the TTL."""
    predecessor = _lease(redis, tmp_path / "home")
    assert await predecessor.try_redis() is None  # then SIGKILLed: the lease stays
    restarted = _lease(redis, tmp_path / "home")
    assert await asyncio.wait_for(restarted.acquire(asyncio.Event()), 5.0) is True
    assert restarted.epoch == 2
    assert restarted.standby_for is None
    with pytest.raises(LeaseLost):
        await predecessor.renew_once()
    await restarted.release()


async def test_another_deployment_under_the_same_name_is_refused_naming_the_holder(
    redis: Redis, tmp_path: Path
) -> None:
    production = _lease(redis, tmp_path / "production")
    assert await production.try_redis() is None
    laptop = _lease(redis, tmp_path / "laptop", OTHER_DEPLOYMENT)
    with pytest.raises(InstanceConflict) as refused:
        await laptop.acquire(asyncio.Event())
    assert refused.value.exit_code == ExitCode.INVALID_CONFIG
    message = refused.value.message
    assert "host-production" in message
    assert str(tmp_path / "production") in message
    assert "give this one its own `name`" in message
    assert laptop.epoch is None
    assert not laptop.may_act()
    fields = await redis.hgetall(lease_key(NAME))
    assert fields[b"deployment_id"] == DEPLOYMENT.encode()  # untouched
    await production.release()


async def test_a_holder_whose_lease_expired_and_was_taken_loses_it_on_its_next_renewal(
    redis: Redis, tmp_path: Path
) -> None:
    paused = _lease(redis, tmp_path / "a", ttl_s=0.3)
    assert await paused.try_redis() is None
    await _expired(redis)  # paused past its TTL
    successor = _lease(redis, tmp_path / "b")
    assert await successor.try_redis() is None
    assert successor.epoch == 2
    with pytest.raises(LeaseLost):
        await paused.renew_once()
    assert paused.lost.is_set()
    assert not paused.may_act()
    assert paused.fence.epoch == "0"
    await paused.release()  # releases nothing of the successor's
    assert (await redis.hgetall(lease_key(NAME)))[b"epoch"] == b"2"
    await successor.renew_once()
    assert successor.may_act()


async def test_a_lease_that_vanished_is_taken_back_by_its_holder_if_no_one_took_it(
    redis: Redis, tmp_path: Path
) -> None:
    lease = _lease(redis, tmp_path / "a")
    assert await lease.try_redis() is None
    await redis.delete(lease_key(NAME))  # Redis restarted empty, or the TTL ran out
    await lease.renew_once()
    fields = await redis.hgetall(lease_key(NAME))
    assert fields[b"epoch"] == b"1"
    assert lease.may_act()


async def test_a_holder_that_has_not_heard_from_redis_for_two_thirds_of_the_ttl_may_not_act(
    redis: Redis, tmp_path: Path
) -> None:
    clock = Clock()
    lease = _lease(redis, tmp_path / "a", clock=clock)
    assert await lease.try_redis() is None
    clock.now += lease.ttl_s * 2 / 3 - 0.1
    assert lease.may_act()
    clock.now += 0.2  # paused: no renewal for ⅔ of the TTL
    assert not lease.may_act()
    with pytest.raises(LeaseLost):
        lease.check()
    await lease.renew_once()  # still its own: it may act again
    assert lease.may_act()


async def test_redis_down_at_start_runs_on_the_home_lock_and_a_second_bot_of_the_home_waits(
    tmp_path: Path,
) -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    first = _lease(down, tmp_path / "home")
    assert await first.acquire(asyncio.Event()) is True
    assert first.redis_down
    assert first.may_act()
    assert first.epoch is None
    second = _lease(down, tmp_path / "home")
    stop = asyncio.Event()
    waiting = asyncio.create_task(second.acquire(stop))
    await until(lambda: second.standby_for is not None, what="the second to find the home locked")
    assert not waiting.done()
    assert second.standby_for is not None
    await first.release()
    assert await asyncio.wait_for(waiting, 5.0) is True
    await second.release()
    await down.aclose()


async def _stop_store(
    redis: Redis, db: aiosqlite.Connection, lease: InstanceLease
) -> RedisStopStore:
    await create_stop_table(db)
    return RedisStopStore(redis, db, name=NAME, fence=lease.fence)


async def test_the_stop_script_refuses_a_stale_epoch_and_moves_nothing(
    redis: Redis, tmp_path: Path
) -> None:
    old = _lease(redis, tmp_path / "a", ttl_s=0.3)
    assert await old.try_redis() is None
    async with aiosqlite.connect(tmp_path / "a.db") as db:
        old_store = await _stop_store(redis, db, old)
        await _refused_then_taken_over(redis, tmp_path, old, old_store)


async def _refused_then_taken_over(
    redis: Redis, tmp_path: Path, old: InstanceLease, old_store: RedisStopStore
) -> None:
    state = StopState(100.0, 100.0, 90.0, False, 1.0)
    await old_store.add(1, 7, "BTCUSDT", state)
    await old_store.advance_all({"BTCUSDT": 101.0}, {7: PARAMS}, 2.0, fee_rate=0.0)
    moved = await redis.hgetall(f"lunara:{NAME}:stop:1")
    await _expired(redis)
    new = _lease(redis, tmp_path / "b")
    assert await new.try_redis() is None
    # The old holder still believes its epoch is current (it was paused): the script says no.
    assert old.fence.epoch == "1"
    with pytest.raises(StaleEpoch):
        await old_store.advance_all({"BTCUSDT": 150.0}, {7: PARAMS}, 3.0, fee_rate=0.0)
    with pytest.raises(StaleEpoch):
        await old_store._write(deletes=[old_store.key(1)])
    assert await redis.hgetall(f"lunara:{NAME}:stop:1") == moved
    async with aiosqlite.connect(tmp_path / "b.db") as db:
        new_store = await _stop_store(redis, db, new)
        new_store._tracked = dict(old_store._tracked)
        advance = await new_store.advance_all({"BTCUSDT": 150.0}, {7: PARAMS}, 3.0, fee_rate=0.0)
    assert advance.positions == 1
    assert float((await redis.hgetall(f"lunara:{NAME}:stop:1"))[b"peak_price"]) == 150.0


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance() as server:
        server.add_account(KEY, SECRET, USDT="1000")
        yield server


async def test_an_instance_that_lost_the_lease_places_no_order(
    redis: Redis, tmp_path: Path, fake: FakeBinance
) -> None:
    old = _lease(redis, tmp_path / "a", ttl_s=0.3)
    assert await old.try_redis() is None
    db = await open_database(tmp_path / "lunara.db")
    await users.register(db, 5, "live")

    async def params(user_id: int) -> TrailingParams:
        return PARAMS

    orders = OrderPath(db, SqliteStopStore(db), default_stop_params=params, may_act=old.check)
    gateway = BinanceGateway(base_url=fake.base_url, limiter=WeightLimiter(), timeout_s=2.0)
    exchange = BinanceExchange(gateway, KEY, SECRET)
    try:
        request = OrderRequest(5, "BTCUSDT", OrderSide.BUY, Decimal("0.001"), Decimal(50000))
        bought = await orders.submit(exchange, request)  # holding the lease: placed
        assert bought.order.status is OrderStatus.FILLED
        assert fake.count("POST", "order") == 1
        await _expired(redis)
        assert await _lease(redis, tmp_path / "b").try_redis() is None
        with pytest.raises(LeaseLost):
            await old.renew_once()
        with pytest.raises(TradingError, match="no order is placed"):
            await orders.submit(exchange, request)
        assert fake.count("POST", "order") == 1  # nothing reached Binance
        assert len(await store.list_open(db, 5)) == 1
    finally:
        await gateway.aclose()
        await db.close()
