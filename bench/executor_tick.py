"""One executor tick for N traders × 5 open positions: paper exchange, sim market, real Redis.

    .venv/bin/python bench/executor_tick.py [--ticks 50]

Uses REDIS_URL when set; otherwise starts a private redis-server on a free loopback
port for the run. Prints p50/p99 tick time for 1,000 traders and the Redis round trips
per tick for 100 vs 1,000 traders (they should be equal: one call per tick).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from lunara.storage import positions as store
from lunara.storage import users
from lunara.storage.database import open_database, transaction
from lunara.trading.engine import EngineConfig, TradingEngine
from lunara.trading.market import SimMarket
from lunara.trading.stopstore import RedisStopStore
from lunara.trading.trailing import initial_state

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    server.kill()
    raise SystemExit("redis-server did not start")


async def measure(
    traders: int, ticks: int, redis_url: str, workdir: Path
) -> tuple[list[float], list[int]]:
    path = workdir / f"bench-{traders}.db"
    db = await open_database(path)
    stop_db = await open_database(path)
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    market = SimMarket(seed=1, volatility=0.0002)
    engine = TradingEngine(
        db=db,
        stops=RedisStopStore(redis, stop_db, name="bench"),
        market=market,
        config=EngineConfig(),
    )
    prices = await market.prices(SYMBOLS)
    opened = []
    async with transaction(db):
        for user_id in range(1, traders + 1):
            await users.register(db, user_id, None)
            for symbol in SYMBOLS:
                opened.append(
                    await store.open(db, user_id, symbol, Decimal(1), prices[symbol], None)
                )
    await engine.start()
    params = engine.settings_cache.params_for(1)
    for position in opened:
        state = initial_state(float(position.entry_price), params, time.time())
        await engine.stop_store.add(position.id, position.user_id, position.symbol, state)
    await engine.executor.tick()  # loads the Lua script once
    durations: list[float] = []
    round_trips: list[int] = []
    for _ in range(ticks):
        report = await engine.executor.tick()
        assert report.positions == traders * len(SYMBOLS), report
        durations.append(report.duration_s * 1000)
        round_trips.append(report.store_round_trips)
    await redis.aclose()
    await db.close()
    await stop_db.close()
    return durations, round_trips


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lunara-bench-"))
    server = None
    redis_url = os.environ.get("REDIS_URL")
    try:
        if not redis_url:
            server, redis_url = start_redis(workdir)
        small, small_trips = await measure(100, args.ticks, redis_url, workdir)
        large, large_trips = await measure(1000, args.ticks, redis_url, workdir)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"executor tick, paper exchange, sim market, Redis stop store, {args.ticks} ticks")
    for label, durations, trips in (
        ("100 traders x 5", small, small_trips),
        ("1000 traders x 5", large, large_trips),
    ):
        print(
            f"  {label:>17}: p50 {statistics.median(durations):6.2f} ms  "
            f"p99 {percentile(durations, 0.99):6.2f} ms  "
            f"Redis round trips/tick {statistics.mean(trips):.1f}"
        )
    ratio = statistics.mean(large_trips) / statistics.mean(small_trips)
    print(f"  round trips 1000 vs 100 traders: x{ratio:.2f} (1.00 = constant in traders)")
    print(
        f"  p99 target <= 50 ms at 1000 traders: {'met' if percentile(large, 0.99) <= 50 else 'MISSED'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
