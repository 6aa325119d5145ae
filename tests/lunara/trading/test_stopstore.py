"""The stop state store over a real Redis and a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from lunara.trading.stops import (
    CHECKPOINT_INTERVAL_S,
    MAX_POSITIONS_PER_CALL,
    RedisStopStore,
    SqliteStopStore,
    StopStore,
    TriggeredStop,
    make_stop_store,
)
from lunara.trading.trailing import StopState, TrailingParams, advance, initial_state, is_triggered
from tests.lunara.trading.test_trailing import fee_rates, price_paths, trailing_params
from tests.waiting import until_awaited

NAME = "lunara"
PARAMS = TrailingParams(
    stoploss=-0.10,
    trailing_stop=True,
    trailing_stop_positive=0.02,
    trailing_stop_positive_offset=0.03,
)

FEE = 0.001

TRAILING_STOPS_DDL = """
CREATE TABLE trailing_stops (
    position_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    entry_price REAL NOT NULL,
    peak_price REAL NOT NULL,
    stop_price REAL NOT NULL,
    activated INTEGER NOT NULL,
    updated_at REAL NOT NULL
)
"""


async def create_stop_table(db: aiosqlite.Connection) -> None:
    """The one place the schema comes from in these tests (swap for the migrations)."""
    await db.execute(TRAILING_STOPS_DDL)
    await db.commit()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "lunara.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await aiosqlite.connect(db_path)
    await create_stop_table(connection)
    yield connection
    await connection.close()


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_db)
    yield client
    await client.aclose()


async def saved_rows(db: aiosqlite.Connection) -> dict[int, tuple[float, float, int, float]]:
    query = "SELECT position_id, peak_price, stop_price, activated, updated_at FROM trailing_stops"
    async with db.execute(query) as cursor:
        return {row[0]: tuple(row[1:]) for row in await cursor.fetchall()}


def as_row(state: StopState) -> tuple[float, float, int, float]:
    return (state.peak_price, state.stop_price, int(state.activated), state.updated_at)


async def open_positions(store: StopStore, count: int, entry: float = 100.0) -> None:
    for position_id in range(1, count + 1):
        symbol = f"C{position_id % 7}USDT"
        await store.add(position_id, 1000 + position_id, symbol, initial_state(entry, PARAMS, 0.0))


def every_symbol(price: float) -> dict[str, float]:
    return {f"C{index}USDT": price for index in range(7)}


def params_for(count: int) -> dict[int, TrailingParams]:
    """Settings for the traders of ``open_positions(store, count)``."""
    return dict.fromkeys(range(1001, 1001 + count), PARAMS)


TRADER = 7
TRADER_PARAMS = {TRADER: PARAMS}


def states(store: StopStore) -> dict[int, StopState]:
    return {stop.position_id: stop.state for stop in store.tracked()}


# -- Lua and Python agree --------------------------------------------------------------

_names = itertools.count()


def bits(state: StopState) -> tuple[str, str, str, bool, str]:
    return (
        state.entry_price.hex(),
        state.peak_price.hex(),
        state.stop_price.hex(),
        state.activated,
        state.updated_at.hex(),
    )


async def lua_matches_python(
    redis_url: str,
    entry: float,
    positions: list[tuple[TrailingParams, TrailingParams, list[float]]],
    fee: float,
) -> None:
    """Each position trails with its first settings, then with its second from the middle
    of its path on (a trader changing settings while the position is open)."""
    client = Redis.from_url(redis_url)
    db = await aiosqlite.connect(":memory:")
    try:
        await create_stop_table(db)
        store = RedisStopStore(client, db, name=f"lua{next(_names)}")
        expected: dict[int, StopState] = {}
        for position_id, (params, _, _) in enumerate(positions):
            expected[position_id] = initial_state(entry, params, 0.25)
            await store.add(position_id, position_id, f"S{position_id}", expected[position_id])
        for tick in range(max(len(path) for _, _, path in positions)):
            params_by_user = {
                i: first if tick < len(path) // 2 else later
                for i, (first, later, path) in enumerate(positions)
            }
            now = 1_700_000_000.1 + tick * 0.7
            prices = {
                f"S{i}": entry / 100.0 * path[tick]
                for i, (_, _, path) in enumerate(positions)
                if tick < len(path)
            }
            advanced = await store.advance_all(prices, params_by_user, now, fee_rate=fee)
            priced = sorted(i for i in expected if f"S{i}" in prices)
            assert advanced.positions == len(priced)
            for i in priced:
                expected[i] = advance(expected[i], prices[f"S{i}"], params_by_user[i], now, fee)
            assert {i: bits(state) for i, state in states(store).items()} == {
                i: bits(state) for i, state in expected.items()
            }
            assert [(stop.position_id, bits(stop.state)) for stop in advanced.triggered] == [
                (i, bits(expected[i])) for i in priced if is_triggered(expected[i], prices[f"S{i}"])
            ]
        for position_id, want in expected.items():
            stored = await store.get(position_id)
            assert stored is not None
            assert bits(stored) == bits(want)
    finally:
        await db.close()
        await client.aclose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    entry=st.floats(min_value=0.0001, max_value=100_000.0),
    positions=st.lists(
        st.tuples(trailing_params(), trailing_params(), price_paths(max_size=25).filter(bool)),
        min_size=1,
        max_size=6,
    ),
    fee=fee_rates,
)
def test_lua_script_matches_pure_advance_bit_for_bit_with_fees_and_settings_changes(
    redis_db: str,
    entry: float,
    positions: list[tuple[TrailingParams, TrailingParams, list[float]]],
    fee: float,
) -> None:
    asyncio.run(lua_matches_python(redis_db, entry, positions, fee))


async def memory_matches_python(
    entry: float,
    positions: list[tuple[TrailingParams, TrailingParams, list[float]]],
    fee: float,
) -> None:
    """The SQLite store, and the Redis store while Redis is down, run the one in-memory
    tick: both agree with ``trailing.advance`` bit for bit, and write it through."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Refused at once, without retries: every add finds Redis down.
    down = Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    dbs = [await aiosqlite.connect(":memory:") for _ in range(2)]
    try:
        for db in dbs:
            await create_stop_table(db)
        stores: list[StopStore] = [
            SqliteStopStore(dbs[0]),
            RedisStopStore(down, dbs[1], name=f"down{next(_names)}"),
        ]
        expected: dict[int, StopState] = {}
        for position_id, (params, _, _) in enumerate(positions):
            expected[position_id] = initial_state(entry, params, 0.25)
            for store in stores:
                await store.add(position_id, position_id, f"S{position_id}", expected[position_id])
        for tick in range(max(len(path) for _, _, path in positions)):
            params_by_user = {
                i: first if tick < len(path) // 2 else later
                for i, (first, later, path) in enumerate(positions)
            }
            now = 1_700_000_000.1 + tick * 0.7
            prices = {
                f"S{i}": entry / 100.0 * path[tick]
                for i, (_, _, path) in enumerate(positions)
                if tick < len(path)
            }
            priced = sorted(i for i in expected if f"S{i}" in prices)
            for i in priced:
                expected[i] = advance(expected[i], prices[f"S{i}"], params_by_user[i], now, fee)
            for store in stores:
                advanced = await store.advance_all(prices, params_by_user, now, fee_rate=fee)
                assert advanced.positions == len(priced)
                assert {i: bits(state) for i, state in states(store).items()} == {
                    i: bits(state) for i, state in expected.items()
                }
                assert [(stop.position_id, bits(stop.state)) for stop in advanced.triggered] == [
                    (i, bits(expected[i]))
                    for i in priced
                    if is_triggered(expected[i], prices[f"S{i}"])
                ]
        assert isinstance(stores[1], RedisStopStore)
        assert stores[1].redis_down
        for db in dbs:  # every change written through: nothing waits for a checkpoint
            assert await saved_rows(db) == {i: as_row(state) for i, state in expected.items()}
    finally:
        for db in dbs:
            await db.close()
        await down.aclose()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    entry=st.floats(min_value=0.0001, max_value=100_000.0),
    positions=st.lists(
        st.tuples(trailing_params(), trailing_params(), price_paths(max_size=25).filter(bool)),
        min_size=1,
        max_size=6,
    ),
    fee=fee_rates,
)
def test_the_in_memory_tick_matches_pure_advance_bit_for_bit_in_both_stores(
    entry: float,
    positions: list[tuple[TrailingParams, TrailingParams, list[float]]],
    fee: float,
) -> None:
    asyncio.run(memory_matches_python(entry, positions, fee))


@pytest.mark.parametrize("fee", [-0.01, 1.0, float("nan")])
async def test_unusable_fee_rates_are_refused_before_anything_moves(
    redis: Redis, db: aiosqlite.Connection, fee: float
) -> None:
    for store in (RedisStopStore(redis, db, name=NAME), SqliteStopStore(db)):
        await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
        with pytest.raises(ValueError, match="fee rate"):
            await store.advance_all({"BTCUSDT": 120.0}, TRADER_PARAMS, 1.0, fee_rate=fee)
        assert states(store)[1] == initial_state(100.0, PARAMS, 0.0)


# -- Round trips -----------------------------------------------------------------------


async def command_calls(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): values["calls"] for name, values in stats.items()}


@pytest.mark.parametrize("count", [10, 1000])
async def test_one_round_trip_per_tick_whatever_the_number_of_positions(
    redis: Redis, db: aiosqlite.Connection, count: int
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await open_positions(store, count)
    await store.advance_all(
        every_symbol(101.0), params_for(count), 1.0, fee_rate=FEE
    )  # loads the script
    await redis.config_resetstat()
    before = store.round_trips
    advanced = await store.advance_all(every_symbol(104.0), params_for(count), 2.0, fee_rate=FEE)
    assert store.round_trips - before == 1
    assert advanced.positions == count
    calls = await command_calls(redis)
    # Counted by Redis itself: one EVALSHA from us, the rest ran inside the script.
    assert calls.pop("evalsha") == 1
    assert calls.pop("hmget") == count
    assert calls.pop("hset") == count
    assert set(calls) <= {"config|resetstat"}


async def test_batches_above_the_chunk_size_cost_one_round_trip_per_chunk(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME, max_positions_per_call=10)
    await open_positions(store, 25)
    await store.advance_all(every_symbol(101.0), params_for(25), 1.0, fee_rate=FEE)
    before = store.round_trips
    advanced = await store.advance_all(every_symbol(104.0), params_for(25), 2.0, fee_rate=FEE)
    assert store.round_trips - before == 3
    expected = advance(
        advance(initial_state(100.0, PARAMS, 0.0), 101.0, PARAMS, 1.0, FEE), 104.0, PARAMS, 2.0, FEE
    )
    assert advanced.positions == 25
    assert states(store) == dict.fromkeys(range(1, 26), expected)
    assert states(store) == {i: await store.get(i) for i in range(1, 26)}
    assert MAX_POSITIONS_PER_CALL == 5000


async def test_script_is_reloaded_after_redis_forgets_it(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await open_positions(store, 3)
    await redis.script_flush()
    before = store.round_trips
    await store.advance_all(every_symbol(110.0), params_for(3), 1.0, fee_rate=FEE)
    assert store.round_trips - before == 3  # refused EVALSHA, SCRIPT LOAD, EVALSHA
    assert store.tracked()[0].state.stop_price == 110.0 * 0.98


# -- Ticks -----------------------------------------------------------------------------


async def test_triggered_positions_are_reported_until_removed(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.add(2, TRADER, "ETHUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.advance_all({"BTCUSDT": 110.0, "ETHUSDT": 100.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    advanced = await store.advance_all(
        {"BTCUSDT": 107.8, "ETHUSDT": 95.0}, TRADER_PARAMS, 2.0, fee_rate=FEE
    )
    assert advanced.positions == 2
    assert advanced.triggered == [
        TriggeredStop(1, TRADER, StopState(100.0, 110.0, 110.0 * 0.98, True, 1.0))
    ]
    assert states(store)[2] == StopState(100.0, 100.0, 90.0, False, 0.0)
    await store.remove(1)
    assert await store.get(1) is None
    assert await saved_rows(db) == {2: (100.0, 90.0, 0, 0.0)}
    advanced = await store.advance_all(
        {"BTCUSDT": 1.0, "ETHUSDT": 90.0}, TRADER_PARAMS, 3.0, fee_rate=FEE
    )
    assert advanced.positions == 1
    assert advanced.triggered == [
        TriggeredStop(2, TRADER, StopState(100.0, 100.0, 90.0, False, 0.0))
    ]


async def test_positions_added_between_ticks_are_advanced_from_the_next_tick(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.advance_all({"BTCUSDT": 110.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    await store.add(2, 8, "BTCUSDT", initial_state(110.0, PARAMS, 1.5))
    advanced = await store.advance_all(
        {"BTCUSDT": 120.0}, {TRADER: PARAMS, 8: PARAMS}, 2.0, fee_rate=FEE
    )
    assert advanced.positions == 2
    assert states(store)[2] == advance(initial_state(110.0, PARAMS, 1.5), 120.0, PARAMS, 2.0, FEE)
    assert await store.get(2) == states(store)[2]


async def test_changed_settings_apply_from_the_next_tick(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.advance_all({"BTCUSDT": 110.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    tighter = TrailingParams(
        stoploss=-0.05,
        trailing_stop=True,
        trailing_stop_positive=0.01,
        trailing_stop_positive_offset=0.02,
    )
    await store.advance_all({"BTCUSDT": 111.0}, {TRADER: tighter}, 2.0, fee_rate=FEE)
    expected = advance(
        advance(initial_state(100.0, PARAMS, 0.0), 110.0, PARAMS, 1.0, FEE),
        111.0,
        tighter,
        2.0,
        FEE,
    )
    assert states(store)[1] == expected
    assert await store.get(1) == expected


@pytest.mark.parametrize("store_kind", ["redis", "sqlite"])
async def test_tightening_settings_while_open_does_not_sell_by_itself(
    redis: Redis, db: aiosqlite.Connection, store_kind: str
) -> None:
    store: StopStore = (
        RedisStopStore(redis, db, name=NAME) if store_kind == "redis" else SqliteStopStore(db)
    )
    loose = TrailingParams(stoploss=-0.10, trailing_stop=True, trailing_stop_positive=0.10,
                           trailing_stop_positive_offset=0.15)  # fmt: skip
    tight = TrailingParams(stoploss=-0.01, trailing_stop=True, trailing_stop_positive=0.01,
                           trailing_stop_positive_offset=0.02)  # fmt: skip
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, loose, 0.0))
    await store.advance_all({"BTCUSDT": 130.0}, {TRADER: loose}, 1.0, fee_rate=FEE)
    assert not (
        await store.advance_all({"BTCUSDT": 121.0}, {TRADER: loose}, 2.0, fee_rate=FEE)
    ).triggered
    # Trailed from the old peak (130 x 0.99 = 128.7) the new settings would sell at 121.
    advanced = await store.advance_all({"BTCUSDT": 121.0}, {TRADER: tight}, 3.0, fee_rate=FEE)
    assert advanced.triggered == []
    assert states(store)[1].stop_price == 121.0 * (1.0 - 0.01)
    falling = await store.advance_all({"BTCUSDT": 119.0}, {TRADER: tight}, 4.0, fee_rate=FEE)
    assert [stop.position_id for stop in falling.triggered] == [1]


async def test_positions_without_a_price_are_left_alone(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.add(2, 8, "ETHUSDT", initial_state(100.0, PARAMS, 0.0))
    advanced = await store.advance_all({"BTCUSDT": 120.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    assert advanced.positions == 1
    assert await store.get(2) == initial_state(100.0, PARAMS, 0.0)


@pytest.mark.parametrize("store_kind", ["redis", "sqlite"])
async def test_bad_tick_input_is_refused_before_anything_changes(
    redis: Redis, db: aiosqlite.Connection, store_kind: str
) -> None:
    store: StopStore = (
        RedisStopStore(redis, db, name=NAME) if store_kind == "redis" else SqliteStopStore(db)
    )
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.add(2, 8, "ETHUSDT", initial_state(100.0, PARAMS, 0.0))
    both = {TRADER: PARAMS, 8: PARAMS}
    with pytest.raises(ValueError, match="price of ETHUSDT"):
        await store.advance_all(
            {"BTCUSDT": 120.0, "ETHUSDT": float("nan")}, both, 1.0, fee_rate=FEE
        )
    with pytest.raises(ValueError, match="no trailing-stop settings for trader 8"):
        await store.advance_all(
            {"BTCUSDT": 120.0, "ETHUSDT": 120.0}, TRADER_PARAMS, 1.0, fee_rate=FEE
        )
    assert await store.get(1) == initial_state(100.0, PARAMS, 0.0)


async def test_stops_lost_from_redis_mid_run_are_restored_on_the_next_tick(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await open_positions(store, 4)
    await store.advance_all(every_symbol(110.0), params_for(4), 1.0, fee_rate=FEE)
    await redis.delete(f"lunara:{NAME}:stop:2", f"lunara:{NAME}:stop:3")
    advanced = await store.advance_all(every_symbol(112.0), params_for(4), 2.0, fee_rate=FEE)
    expected = advance(
        advance(initial_state(100.0, PARAMS, 0.0), 110.0, PARAMS, 1.0, FEE), 112.0, PARAMS, 2.0, FEE
    )
    assert advanced.positions == 4
    assert states(store) == dict.fromkeys([1, 2, 3, 4], expected)
    for position_id in range(1, 5):
        assert await store.get(position_id) == expected


# -- Checkpoints -----------------------------------------------------------------------


async def test_checkpoint_writes_only_changed_stops_in_one_go(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.add(2, TRADER, "ETHUSDT", initial_state(100.0, PARAMS, 0.0))
    assert await store.checkpoint() == 0  # add already wrote both sides
    await store.advance_all({"BTCUSDT": 105.0, "ETHUSDT": 99.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    assert await saved_rows(db) == {1: (100.0, 90.0, 0, 0.0), 2: (100.0, 90.0, 0, 0.0)}
    assert await store.checkpoint() == 1
    assert (await saved_rows(db))[1] == as_row(states(store)[1])
    assert await store.checkpoint() == 0
    assert CHECKPOINT_INTERVAL_S == 5.0


# -- Reconcile and recovery ------------------------------------------------------------


async def test_reconcile_restores_a_flushed_redis_from_the_checkpoint(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await open_positions(store, 3)
    await store.advance_all(every_symbol(120.0), params_for(3), 1.0, fee_rate=FEE)
    await store.checkpoint()
    checkpointed = await store.get(1)
    await redis.flushdb()

    restarted = RedisStopStore(redis, db, name=NAME)
    assert await restarted.reconcile() == 3
    assert await restarted.get(1) == checkpointed
    assert [stop.position_id for stop in restarted.tracked()] == [1, 2, 3]
    assert restarted.tracked()[0].user_id == 1001
    await restarted.advance_all(every_symbol(130.0), params_for(3), 2.0, fee_rate=FEE)
    assert checkpointed is not None
    assert states(restarted)[1] == advance(checkpointed, 130.0, PARAMS, 2.0, FEE)


async def test_newer_redis_wins_over_an_older_checkpoint_and_updates_it(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await store.add(1, TRADER, "BTCUSDT", initial_state(100.0, PARAMS, 0.0))
    await store.advance_all({"BTCUSDT": 110.0}, TRADER_PARAMS, 1.0, fee_rate=FEE)
    await store.checkpoint()
    await store.advance_all(
        {"BTCUSDT": 125.0}, TRADER_PARAMS, 2.0, fee_rate=FEE
    )  # not checkpointed
    live = await store.get(1)
    assert live is not None
    assert (await saved_rows(db))[1] != as_row(live)

    restarted = RedisStopStore(redis, db, name=NAME)
    await restarted.reconcile()
    assert await restarted.get(1) == live
    assert (await saved_rows(db))[1] == as_row(live)


async def test_newer_checkpoint_wins_over_a_stale_redis_copy(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    stale = initial_state(100.0, PARAMS, 0.0)
    await store.add(1, 7, "BTCUSDT", stale)
    newer = advance(stale, 130.0, PARAMS, 5.0, FEE)
    await db.execute(
        "UPDATE trailing_stops SET peak_price = ?, stop_price = ?, activated = ?, "
        "updated_at = ? WHERE position_id = 1",
        as_row(newer),
    )
    await db.commit()

    restarted = RedisStopStore(redis, db, name=NAME)
    await restarted.reconcile()
    assert await restarted.get(1) == newer


async def test_unreadable_redis_copy_is_ignored_in_favour_of_sqlite(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    state = initial_state(100.0, PARAMS, 0.0)
    await store.add(1, 7, "BTCUSDT", state)
    await redis.hset(f"lunara:{NAME}:stop:1", mapping={"stop_price": "garbage", "updated_at": "9"})
    restarted = RedisStopStore(redis, db, name=NAME)
    await restarted.reconcile()
    assert await restarted.get(1) == state


async def test_crash_recovery_resumes_from_the_exact_stop(
    redis_db: str, db: aiosqlite.Connection, db_path: Path
) -> None:
    first_redis = Redis.from_url(redis_db)
    try:
        store = RedisStopStore(first_redis, db, name=NAME)
        await open_positions(store, 5)
        for tick, price in enumerate([101.0, 104.5, 109.25, 107.0, 111.125], start=1):
            await store.advance_all(every_symbol(price), params_for(5), float(tick), fee_rate=FEE)
            if tick == 2:
                await store.checkpoint()
        before = [await store.get(position_id) for position_id in range(1, 6)]
    finally:
        await first_redis.aclose()  # the process dies: no final checkpoint

    second_redis = Redis.from_url(redis_db)
    second_db = await aiosqlite.connect(db_path)
    try:
        recovered = RedisStopStore(second_redis, second_db, name=NAME)
        assert await recovered.reconcile() == 5
        after = [await recovered.get(position_id) for position_id in range(1, 6)]
        assert after == before
        third = before[2]
        assert third is not None
        assert (await saved_rows(second_db))[3] == as_row(third)
    finally:
        await second_db.close()
        await second_redis.aclose()


async def test_removed_positions_are_not_resurrected_by_reconcile(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    store = RedisStopStore(redis, db, name=NAME)
    await open_positions(store, 2)
    await store.advance_all(every_symbol(120.0), params_for(2), 1.0, fee_rate=FEE)
    await store.remove(1)
    await store.checkpoint()
    restarted = RedisStopStore(redis, db, name=NAME)
    assert await restarted.reconcile() == 1
    assert await restarted.get(1) is None


async def test_stores_with_other_names_do_not_see_each_other(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    await RedisStopStore(redis, db, name="a*").add(1, 7, "X", initial_state(1.0, PARAMS, 0.0))
    other_db = await aiosqlite.connect(":memory:")
    try:
        await create_stop_table(other_db)
        assert await RedisStopStore(redis, other_db, name="ab").reconcile() == 0
    finally:
        await other_db.close()


# -- SQLite alone ----------------------------------------------------------------------


async def test_sqlite_store_writes_each_change_through(
    db: aiosqlite.Connection, db_path: Path
) -> None:
    store = SqliteStopStore(db)
    await open_positions(store, 3)
    before = store.round_trips
    advanced = await store.advance_all(every_symbol(120.0), params_for(3), 1.0, fee_rate=FEE)
    assert advanced.positions == 3
    assert store.round_trips - before == 1
    assert await store.checkpoint() == 0
    moved = states(store)
    await store.advance_all(every_symbol(119.0), params_for(3), 2.0, fee_rate=FEE)
    assert store.round_trips - before == 1  # nothing moved, nothing written
    assert states(store) == moved

    other = await aiosqlite.connect(db_path)
    try:
        restarted = SqliteStopStore(other)
        assert await restarted.reconcile() == 3
        assert await restarted.get(2) == moved[2]
        expected = advance(initial_state(100.0, PARAMS, 0.0), 120.0, PARAMS, 1.0, FEE)
        assert moved[2] == expected
    finally:
        await other.close()


async def test_factory_picks_redis_only_when_a_client_is_given(
    redis: Redis, db: aiosqlite.Connection
) -> None:
    assert isinstance(make_stop_store(name=NAME, db=db, redis=redis), RedisStopStore)
    assert isinstance(make_stop_store(name=NAME, db=db), SqliteStopStore)


@pytest.mark.parametrize("with_redis", [True, False])
async def test_traders_adding_stops_at_once_all_get_them_saved(
    redis: Redis, db: aiosqlite.Connection, with_redis: bool
) -> None:
    # The executor opens positions of several traders concurrently on one connection.
    store: StopStore = RedisStopStore(redis, db, name=NAME) if with_redis else SqliteStopStore(db)
    await store.reconcile()
    await asyncio.gather(
        *(store.add(n, n, "BTCUSDT", initial_state(100.0, PARAMS, 0.0)) for n in range(1, 6))
    )
    assert sorted(stop.position_id for stop in store.tracked()) == [1, 2, 3, 4, 5]
    assert sorted(await saved_rows(db)) == [1, 2, 3, 4, 5]


async def answers(client: Redis) -> bool:
    """Whether a Redis server answers `client` (False while none listens yet)."""
    with contextlib.suppress(RedisConnectionError):
        return bool(await client.ping())
    return False


@pytest.mark.slow
async def test_stops_ride_out_a_redis_outage_and_are_written_back_when_it_returns(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    store = RedisStopStore(client, db, name=NAME)
    await store.add(1, 1001, "C1USDT", initial_state(100.0, PARAMS, 0.0))  # Redis is down
    await store.add(2, 1002, "C2USDT", initial_state(100.0, PARAMS, 0.0))
    await store.remove(2)
    assert sorted(await saved_rows(db)) == [1]  # the filled order's stop is durable
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until_awaited(lambda: answers(client), what="redis-server to answer")
        await store.advance_all(every_symbol(120.0), params_for(2), 1.0, fee_rate=FEE)
        assert await client.exists(store.key(1))  # written back from memory
        assert (await store.get(1)) == store.tracked()[0].state
    finally:
        await client.aclose()
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


@pytest.mark.slow
async def test_a_store_started_with_redis_down_runs_every_stop_on_sqlite_then_hands_back(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    earlier = SqliteStopStore(db)  # the stops an earlier run checkpointed
    await open_positions(earlier, 3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    now = [0.0]
    store = RedisStopStore(client, db, name=NAME, retry_s=30.0, clock=lambda: now[0])
    assert await store.reconcile() == 3
    assert store.redis_down
    moved = await store.advance_all(every_symbol(120.0), params_for(3), 1.0, fee_rate=FEE)
    assert moved.positions == 3
    assert moved.triggered == []
    expected = advance(initial_state(100.0, PARAMS, 0.0), 120.0, PARAMS, 1.0, FEE)
    assert (await saved_rows(db))[1] == as_row(expected)  # written through, no checkpoint due
    hit = await store.advance_all(every_symbol(110.0), params_for(3), 2.0, fee_rate=FEE)
    assert [stop.position_id for stop in hit.triggered] == [1, 2, 3]  # stops still sell
    await store.remove(3)  # sold while Redis was away
    server = await asyncio.create_subprocess_exec(
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until_awaited(lambda: answers(client), what="redis-server to answer")
        stale = initial_state(100.0, PARAMS, 0.0)
        for position_id in (1, 3):  # what Redis held before it went away
            await client.hset(store.key(position_id), mapping={"entry_price": "100",
                              "peak_price": "100", "stop_price": repr(stale.stop_price),
                              "activated": "0", "updated_at": "0", "user_id": "1001",
                              "symbol": "C1USDT"})  # fmt: skip
        now[0] += 10.0  # not yet due to ask Redis again
        await store.advance_all(every_symbol(120.0), params_for(3), 3.0, fee_rate=FEE)
        assert store.redis_down
        assert (await client.hget(store.key(1), "peak_price")) == b"100"
        now[0] += 30.0
        await store.advance_all(every_symbol(120.0), params_for(3), 4.0, fee_rate=FEE)
        assert not store.redis_down
        assert await client.exists(store.key(3)) == 0  # closed meanwhile: not resurrected
        assert (await store.get(1)) == expected  # Redis holds what memory held
        before = store.round_trips
        await store.advance_all(every_symbol(121.0), params_for(3), 5.0, fee_rate=FEE)
        assert store.round_trips - before == 1  # one script call again
        assert float(await client.hget(store.key(1), "peak_price") or 0) == 121.0
    finally:
        await client.aclose()
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
