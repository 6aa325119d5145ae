"""One executor tick for N traders × 5 open positions: paper exchange, sim market, real
Redis; then the Binance request weight a minute of ticks costs at 1,000 traders and 50
symbols, against the limit Binance publishes.

    .venv/bin/python bench/executor_tick.py [--ticks 50] [--falls 1]

Uses REDIS_URL when set; otherwise starts a private redis-server on a free loopback
port for the run. Prints p50/p99 tick time for 1,000 traders and the Redis round trips
per tick for 100 vs 1,000 traders (they should be equal: one call per tick).

Weight: the real engine in live mode, with its BinanceMarket (one batched ticker/price
per tick, one klines request per symbol per closed minute) and its WeightLimiter, on
the fake Binance of tests/fakes/binance_api.py (in this process, on 127.0.0.1), which
counts each request's weight per minute as Binance does, answers with
X-MBX-USED-WEIGHT-1M and publishes the 6,000/min REQUEST_WEIGHT limit in exchangeInfo.
1,000 traders hold 5 positions each on 50 symbols (100 per symbol), their keys
encrypted in the database and their coins at the fake exchange. After the start
(exchangeInfo, each symbol's history) and a warm-up minute of ticks, one minute of
ticks at the bot's default tick interval (LUNARA_TICK_SECONDS) is measured. Halfway
through it `--falls` symbols drop 10 % through every stop on them (the assumption, by
default: one symbol in 50 crashing each minute), so 100 positions per fallen symbol
exit through the real order path; each exit reads /account and avgPrice before its
market order.
Time is simulated: the fake's rate windows and klines, the limiter, the market and the
engine read one clock, and a limiter wait moves it on, so the minute takes seconds.
Printed: the weight the fake counted in that minute against the limit the bot read
from exchangeInfo (used, limit, ratio), its market-data and exit parts, each exit's
weight, how many exits a minute the bot's own budget leaves room for, and the requests
and weight of every tick.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: bench, tests

from redis.asyncio import Redis

from bench._common import BASE_ASSETS, start_price
from lunara.config import Mode, Settings
from lunara.crypto import KeyRing, generate_key
from lunara.storage import credentials, users
from lunara.storage import positions as store
from lunara.storage.database import open_database, transaction
from lunara.trading.binance import BinanceGateway
from lunara.trading.engine import EngineConfig, TradingEngine
from lunara.trading.limiter import WeightLimiter
from lunara.trading.market import BinanceMarket, SimMarket
from lunara.trading.stops import RedisStopStore
from lunara.trading.trailing import initial_state
from tests.fakes.binance_api import FakeBinance, request_weight

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
WEIGHT_TRADERS = 1000
WEIGHT_SYMBOLS = 50
POSITIONS_PER_TRADER = 5
POSITION_STAKE_USDT = Decimal(20)
LOT_STEP = Decimal("0.00001")  # the fake exchange's LOT_SIZE step
FALL = Decimal("0.9")  # a fallen symbol is 10 % down: under the default 5 % stop loss
MINUTE_S = 60.0
MARKET_DATA = ("ticker/price", "klines")
EXIT_ENDPOINTS = ("account", "avgPrice", "order")


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


class SimClock:
    """The one clock of the weight measurement (Unix seconds): the fake exchange's rate
    windows and klines, the weight limiter, the market and the engine all read it."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.before_wait: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """A limiter wait: simulated time passes (``before_wait`` sees the time it left),
        nothing sleeps."""
        self.before_wait()
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass
class TickCost:
    requests: int
    weight: int


@dataclass
class WeightReport:
    tick_s: float
    limit: float | None  # REQUEST_WEIGHT per minute, as the gateway read it from exchangeInfo
    budget: float  # what the bot's limiter plans to use of it
    startup: int  # weight the fake counted for the start and the warm-up minute
    minutes: list[int]  # weight the fake counted in each minute the measured ticks ran in
    seen: float  # the last of those as the bot's limiter has it (from the replies' header)
    by_endpoint: Counter[str]  # the measured ticks' weight per endpoint
    calls: Counter[str]  # the measured ticks' requests per endpoint
    ticks: list[TickCost]
    exits: int
    fallen: list[str]
    waited_s: float
    penalties: int


def weight_positions(
    traders: int, names: list[str], prices: dict[str, Decimal]
) -> dict[int, dict[str, Decimal]]:
    """Each trader's positions (symbol -> quantity): POSITIONS_PER_TRADER symbols in
    turn, so every symbol carries the same number; a POSITION_STAKE_USDT stake each."""
    held: dict[int, dict[str, Decimal]] = {}
    for index in range(traders):
        symbols = [names[(index * POSITIONS_PER_TRADER + k) % len(names)]
                   for k in range(POSITIONS_PER_TRADER)]  # fmt: skip
        held[index + 1] = {
            symbol: (POSITION_STAKE_USDT / prices[symbol] / LOT_STEP).to_integral_value(ROUND_DOWN)
            * LOT_STEP
            for symbol in symbols
        }
    return held


def weight_of(binance: FakeBinance, since: int) -> tuple[Counter[str], Counter[str]]:
    """Weight and requests per endpoint of the requests the fake recorded from `since`,
    each weighed by the fake's own `request_weight`."""
    weight: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for request in binance.recorded[since:]:
        weight[request.endpoint] += request_weight(request.method, request.endpoint, request.params)
        calls[request.endpoint] += 1
    return weight, calls


async def measure_weight(
    traders: int, symbol_count: int, falls: int, redis_url: str, workdir: Path
) -> WeightReport:
    """A minute of the live engine's ticks against the fake Binance; see the module doc."""
    tick_s = float(Settings.model_fields["tick_seconds"].default)
    names = [f"{base}USDT" for base in BASE_ASSETS[:symbol_count]]
    prices = {
        f"{base}USDT": Decimal(f"{start_price(index, base):.2f}")
        for index, base in enumerate(BASE_ASSETS[:symbol_count])
    }
    held = weight_positions(traders, names, prices)
    first_minute = time.time() // MINUTE_S * MINUTE_S
    clock = SimClock(first_minute + 0.5)
    keyring = KeyRing([generate_key()])
    # One connection for the engine and its stop store, as `open_trading` wires them: the
    # writers then queue on its lock instead of meeting as "database is locked".
    db = await open_database(workdir / "weight.db")
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    with FakeBinance(prices=dict(prices), clock=clock, market_clock=clock) as binance:
        gateway = BinanceGateway(
            base_url=binance.base_url,
            limiter=WeightLimiter(clock=clock, wall=clock, sleep=clock.sleep),
        )
        engine = TradingEngine(
            db=db,
            stops=RedisStopStore(redis, db, name="weight"),
            market=BinanceMarket(gateway, clock=clock),
            config=EngineConfig(mode=Mode.LIVE, symbols=tuple(names), tick_seconds=tick_s),
            gateway=gateway,
            keyring=keyring,
            clock=clock,
        )
        try:
            async with transaction(db):
                for user_id, positions in held.items():
                    key, secret = f"weightkey{user_id:06d}", f"weightsecret{user_id:06d}"
                    coins = {symbol.removesuffix("USDT"): str(q) for symbol, q in positions.items()}
                    binance.add_account(key, secret, USDT="1000", **coins)
                    await users.register(db, user_id, None)
                    await credentials.store(
                        db, keyring, user_id, credentials.Exchange.BINANCE, key, secret
                    )
                    for symbol, quantity in positions.items():
                        await store.open(db, user_id, symbol, quantity, prices[symbol], None,
                                         entry_cost=quantity * prices[symbol])  # fmt: skip
            await engine.start()  # exchangeInfo, every symbol's history, a stop per position
            measured = first_minute + MINUTE_S
            while clock.now + tick_s < measured:  # the warm-up minute's ticks
                clock.now += tick_s
                await engine.executor.tick()
            startup = binance.used_weight()
            counted: dict[int, int] = {}  # minute -> the fake's count, as last seen in it

            def note() -> None:
                counted[int(clock.now // MINUTE_S)] = binance.used_weight()

            clock.before_wait = note
            since = len(binance.recorded)
            fallen = names[:falls]
            ticks: list[TickCost] = []
            count = math.ceil(MINUTE_S / tick_s)
            for index in range(count):
                clock.now = max(clock.now, measured + index * tick_s)
                if index == count // 2:
                    for symbol in fallen:
                        binance.set_price(symbol, prices[symbol] * FALL)
                before = len(binance.recorded)
                await engine.executor.tick()
                weight, calls = weight_of(binance, before)
                ticks.append(TickCost(sum(calls.values()), sum(weight.values())))
                note()
            by_endpoint, calls = weight_of(binance, since)
            async with db.execute("SELECT COUNT(*) FROM positions WHERE status = 'closed'") as cur:
                row = await cur.fetchone()
            exits = int(row[0]) if row is not None else 0
            limiter = gateway.limiter
            return WeightReport(
                tick_s=tick_s,
                limit=limiter.binance_limit,
                budget=limiter.budget,
                startup=startup,
                minutes=[counted[minute] for minute in sorted(counted)],
                seen=limiter.used_weight,
                by_endpoint=by_endpoint,
                calls=calls,
                ticks=ticks,
                exits=exits,
                fallen=fallen,
                waited_s=limiter.waited_s,
                penalties=limiter.penalties + limiter.bans,
            )
        finally:
            await gateway.aclose()
            await redis.aclose()
            await db.close()


def print_weight(report: WeightReport, traders: int, symbols: int) -> None:
    """The measured minute's weight against the published limit, and what it is made of.

    Were the exits more than the bot's budget holds, its limiter waits for the next
    minute: the weight of each minute the ticks ran in is then shown, the peak judged.
    """
    market = sum(report.by_endpoint[e] for e in MARKET_DATA)
    exiting = sum(report.by_endpoint[e] for e in EXIT_ENDPOINTS)
    recorded = sum(report.by_endpoint.values())
    per_exit = exiting / report.exits if report.exits else 0.0
    limit = report.limit or float("nan")
    peak = max(report.minutes)

    def each(endpoint: str) -> str:
        calls = report.calls[endpoint]
        return f"{endpoint} {calls} x {report.by_endpoint[endpoint] // max(1, calls)}"

    print(
        f"Binance request weight, live engine on the fake Binance: {traders} traders x "
        f"{POSITIONS_PER_TRADER} positions on {symbols} symbols, tick {report.tick_s:g} s "
        f"({len(report.ticks)} ticks in the measured minute)"
    )
    print(f"  start and warm-up minute: {report.startup} weight (exchangeInfo, {symbols} "
          "histories, then a minute of ticks)")  # fmt: skip
    print(
        f"  weight per minute: {peak} used (the fake's X-MBX-USED-WEIGHT-1M count), limit "
        f"{limit:.0f} (REQUEST_WEIGHT read from exchangeInfo): used/limit {peak / limit:.3f}, "
        f"{'under' if peak < limit else 'NOT under'} the limit"
    )
    if len(report.minutes) > 1:
        print(f"    the ticks ran into {len(report.minutes)} Binance minutes (the limiter held "
              f"requests {report.waited_s:.0f} s for the next): "
              + ", ".join(str(w) for w in report.minutes))  # fmt: skip
    print(f"    market data: {market} ({each('ticker/price')}, {each('klines')}): "
          f"{market / limit:.3f} of the limit")  # fmt: skip
    if report.fallen:
        print(
            f"    exits: {report.exits} (every position on {len(report.fallen)} of {symbols} "
            f"symbols, {', '.join(report.fallen)}, 10 % down through its stop), "
            f"{per_exit:.0f} weight each: {exiting} "
            f"({', '.join(each(endpoint) for endpoint in EXIT_ENDPOINTS)})"
        )
    else:
        print("    exits: none (--falls 0)")
    other = {
        e: w for e, w in report.by_endpoint.items() if e not in (*MARKET_DATA, *EXIT_ENDPOINTS)
    }
    if other:
        print(f"    other: {other}")
    print(f"    the requests the fake recorded weigh {recorded}; the bot's limiter, from the "
          f"replies' headers, counts {report.seen:.0f} in the last minute")  # fmt: skip
    if per_exit:
        room = (report.budget - market) / per_exit
        everyone = traders * POSITIONS_PER_TRADER
        print(
            f"  the bot's budget is {report.budget:.0f}/min ({report.budget / limit:.0%} of the "
            f"limit): beside the market data it has room for {room:.0f} exits a minute; "
            f"all {everyone} positions exiting at once would take {everyone / room:.0f} min"
        )
    print("  requests per tick: " + " ".join(str(t.requests) for t in report.ticks))
    print("  weight per tick:   " + " ".join(str(t.weight) for t in report.ticks))
    print(f"  limiter waits {report.waited_s:.1f} s; 429/418 answers {report.penalties}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--falls", type=int, default=1, choices=range(WEIGHT_SYMBOLS + 1),
                        metavar=f"0..{WEIGHT_SYMBOLS}",
                        help="symbols that fall through every stop on them in the measured "
                        "minute (default 1)")  # fmt: skip
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lunara-bench-"))
    server = None
    redis_url = os.environ.get("REDIS_URL")
    try:
        if not redis_url:
            server, redis_url = start_redis(workdir)
        small, small_trips = await measure(100, args.ticks, redis_url, workdir)
        large, large_trips = await measure(1000, args.ticks, redis_url, workdir)
        weight = await measure_weight(
            WEIGHT_TRADERS, WEIGHT_SYMBOLS, args.falls, redis_url, workdir
        )
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
    print_weight(weight, WEIGHT_TRADERS, WEIGHT_SYMBOLS)


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    asyncio.run(main())
