"""SIGKILL the real bot 50 times while it trades; no order is ever doubled, no stop lost.

The bot runs as it does in production: ``python -m lunara`` in live mode against the
fake Binance server (the real python-binance client, signed requests), traders' keys
stored encrypted, stops in Redis checkpointed to SQLite, a 50 ms tick. Auto-mode
traders enter on a real analyzer signal (each start warms the analyzers up on klines
that end in a dip), prices then walk so that trailing stops climb and trigger, and the
process is killed at seeded random moments: during a walk (stop updates and
checkpoints), a few milliseconds after an order reached the exchange, or after an order
whose reply the exchange dropped.

After each kill the stop state is read from Redis and SQLite. The bot is restarted with
every price held at its stop's peak, where no level can move, so what the restarted bot
holds is exactly what it recovered: for every position still open it must be the Redis
state from before the kill, field for field (Redis is written first, SQLite lags it,
and reconciliation keeps the newest). A position the kill caught between its fill and
its first stop gets the initial stop at its entry price.

At the end the exchange and the bot's ledger must tell the same story: every client
order id once, per trader and symbol a strict BUY/SELL alternation of equal quantities
(a duplicate by content would show as two BUYs or two SELLs in a row), and exactly the
filled orders and open positions the exchange shows.

The seed is printed and attached to any failure; rerun with LUNARA_CRASH_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from lunara.crypto import KeyRing, generate_key
from lunara.storage import credentials, user_settings, users
from lunara.storage.database import open_database
from lunara.trading.trailing import TrailingParams, initial_state
from tests.fakes.binance_api import DROP_CLOSE, FakeBinance
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[3]
KILLS = 50
DEFAULT_SEED = 20240607
STOP_KEY_PREFIX = "lunara:lunara:stop:"  # a bot run without a manifest: the default name
TICK_SECONDS = "0.05"
WALK_STEP_S = 0.01
WALK_VOLATILITY = 0.004  # standard deviation of one walk step's log return
START_PRICES = {
    "BTCUSDT": 60000.0,
    "ETHUSDT": 3000.0,
    "BNBUSDT": 600.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 2.5,
}
# One owner per symbol: a price that moves no stop then exists for every symbol.
TRADERS: dict[int, tuple[str, ...]] = {
    101: ("BTCUSDT", "ETHUSDT"),
    102: ("BNBUSDT", "SOLUSDT"),
    103: ("XRPUSDT",),
}
STOP_SETTINGS: dict[str, object] = {
    "stake_usdt": Decimal(20),
    "stoploss": -0.02,
    "trailing_stop_positive": 0.01,
    "trailing_stop_positive_offset": 0.015,
    "trailing_only_offset_is_reached": False,
    "auto_mode": True,
}
PARAMS = TrailingParams(
    stoploss=-0.02,
    trailing_stop=True,
    trailing_stop_positive=0.01,
    trailing_stop_positive_offset=0.015,
)
# Closes relative to the last one: calm, then a dip (RSI oversold, close under the lower
# band). The bot drops the last kline as still open, so its analyzer sees the dip.
DIP = [1.0 + 0.004 * math.sin(i / 2) for i in range(50)] + [0.99, 0.975, 0.96, 0.945, 1.0]
UP_DEADLINE_S = 15.0
ORDER_WAIT_S = 1.5


def api_key(user_id: int) -> str:
    return f"crash-key-{user_id}"


def api_secret(user_id: int) -> str:
    return f"crash-secret-{user_id}-0123456789"


def as_price(value: float) -> Decimal:
    """Seven significant digits: the bot's float of it prints back to the same text."""
    return Decimal(f"{value:.7g}")


class ObservedBinance(FakeBinance):
    """The fake exchange, also telling the test the moment an order is executed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.order_executed = threading.Event()

    def _place(self, api_key: str, params: dict[str, str]) -> Any:
        result = super()._place(api_key, params)
        self.order_executed.set()
        return result


class PriceWalk:
    """Moves every price by a seeded random walk while running, from a background thread."""

    def __init__(self, fake: FakeBinance, rng: random.Random) -> None:
        self._fake = fake
        self._rng = rng
        self._running = threading.Event()
        self._closed = threading.Event()
        self._stepping = threading.Lock()  # held through each step of the walk
        self._thread = threading.Thread(target=self._run, name="price-walk", daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._running.set()

    def pause(self) -> None:
        """Stop the walk; once this returns, no price moves until `resume`."""
        self._running.clear()
        with self._stepping:  # a step under way finishes; the next sees the walk paused
            pass

    def close(self) -> None:
        self._closed.set()
        self._running.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._running.wait()
            with self._stepping:
                if self._closed.is_set():
                    return
                if not self._running.is_set():  # paused since it woke
                    continue
                for symbol in START_PRICES:
                    current = float(self._fake.prices[symbol])
                    moved = current * math.exp(self._rng.gauss(0.0, WALK_VOLATILITY))
                    self._fake.set_price(symbol, as_price(moved))
            self._closed.wait(WALK_STEP_S)


@dataclass
class StopSnapshot:
    """What survived a kill: the Redis hashes, the SQLite checkpoint, the open positions."""

    redis: dict[int, dict[str, str]]
    sqlite: dict[int, dict[str, Any]]
    open_positions: dict[int, dict[str, Any]]
    unsettled_orders: list[tuple[str, str, str]]  # client order id, symbol, side


@dataclass
class Bot:
    """``python -m lunara`` as a child process over one home."""

    home: Path
    env: dict[str, str]
    output: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lunara"],
                cwd=self.home.parent,  # no developer .env is read
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(20)
        self.process = None
        return code

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"the bot exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Tally:
    """How the kills landed, so the test can show it exercised what it claims."""

    modes: dict[str, int] = field(default_factory=dict)
    unsettled_at_kill: int = 0
    exchange_ahead_at_kill: int = 0  # an order executed that the ledger had not settled
    dropped_replies: int = 0
    positions_checked: int = 0
    stops_recovered_from_redis: int = 0
    stops_behind_in_sqlite: int = 0


def bot_environment(home: Path, fake: FakeBinance, redis_url: str, key: str) -> dict[str, str]:
    keep = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("LUNARA_", "TELEGRAM_", "GEMINI_", "BINANCE_", "REDIS_"))
    }
    return keep | {
        "PYTHONPATH": str(REPO_ROOT),
        "LUNARA_HOME": str(home),
        "LUNARA_MODE": "live",
        "LUNARA_MARKET": "binance",
        "BINANCE_API_BASE_URL": fake.base_url,
        "REDIS_URL": redis_url,
        "LUNARA_ENCRYPTION_KEY": key,
        "LUNARA_TICK_SECONDS": TICK_SECONDS,
        "LUNARA_SYMBOLS": ",".join(START_PRICES),
        "LOG_LEVEL": "INFO",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


async def register_traders(database: Path, keyring: KeyRing) -> None:
    """Traders as /start, /keys and /set would leave them: keys encrypted, auto mode on."""
    db = await open_database(database)
    try:
        for user_id, symbols in TRADERS.items():
            await users.register(db, user_id, f"trader{user_id}")
            await credentials.store(
                db,
                keyring,
                user_id,
                credentials.Exchange.BINANCE,
                api_key(user_id),
                api_secret(user_id),
            )
            await user_settings.update(db, user_id, {**STOP_SETTINGS, "symbols": symbols})
    finally:
        await db.close()


def read_snapshot(database: Path, client: redis.Redis) -> StopSnapshot:
    live: dict[int, dict[str, str]] = {}
    for raw_key in client.scan_iter(match=STOP_KEY_PREFIX + "*"):
        key = raw_key.decode()
        fields = cast("dict[bytes, bytes]", client.hgetall(key))  # the client does not decode
        live[int(key.removeprefix(STOP_KEY_PREFIX))] = {
            name.decode(): value.decode() for name, value in fields.items()
        }
    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        saved = {
            int(row["position_id"]): dict(row)
            for row in db.execute("SELECT * FROM trailing_stops").fetchall()
        }
        positions = {
            int(row["id"]): dict(row)
            for row in db.execute("SELECT * FROM positions WHERE status = 'open'").fetchall()
        }
        unsettled = [
            (str(row[0]), str(row[1]), str(row[2]))
            for row in db.execute(
                "SELECT client_order_id, symbol, side FROM orders "
                "WHERE status IN ('pending', 'sent', 'unknown')"
            )
        ]
    db.close()
    return StopSnapshot(live, saved, positions, unsettled)


def check_sqlite_lags_redis(snapshot: StopSnapshot, tally: Tally) -> None:
    """The checkpoint is never ahead of Redis: reconciliation must keep the Redis copy."""
    for position_id, row in snapshot.sqlite.items():
        live = snapshot.redis.get(position_id)
        if live is None:
            continue  # a closed position whose checkpoint row was not deleted yet
        assert float(row["updated_at"]) <= float(live["updated_at"]), (
            f"position {position_id}: SQLite {row} is newer than Redis {live}"
        )
        if float(row["updated_at"]) < float(live["updated_at"]):
            tally.stops_behind_in_sqlite += 1


def hold_prices(fake: FakeBinance, before: StopSnapshot) -> dict[str, Decimal]:
    """Per symbol, a price that moves no stop: the peak of the position held on it, or
    the entry price of a position that has no stop yet (also one whose buy the exchange
    filled but the ledger has not settled)."""
    held = {symbol: fake.prices[symbol] for symbol in START_PRICES}
    executed = {order["clientOrderId"]: order for order in list(fake.orders)}
    for client_order_id, symbol, side in before.unsettled_orders:
        order = executed.get(client_order_id)
        if side == "BUY" and order is not None:
            held[symbol] = Decimal(order["fills"][0]["price"])
    for position_id, position in before.open_positions.items():
        live = before.redis.get(position_id)
        peak = Decimal(live["peak_price"] if live else position["entry_price"])
        held[position["symbol"]] = peak
    return held


def script_dip(fake: FakeBinance, prices: dict[str, Decimal]) -> None:
    """Klines ending in a dip (an entry signal at warm-up), the current price as given."""
    for symbol, price in prices.items():
        path = [as_price(float(price) * level) for level in DIP[:-1]] + [price]
        fake.script_prices(symbol, path)
        fake.advance(symbol, len(path) - 1)


def wait_for_ticks(bot: Bot, fake: FakeBinance, ticks: int) -> None:
    """Until the new process has asked for prices ``ticks`` times (its start is done)."""
    before = fake.count("GET", "ticker/price")

    def ticked() -> bool:
        bot.check_alive()
        return fake.count("GET", "ticker/price") >= before + ticks

    wait_until(ticked, UP_DEADLINE_S, lambda: f"the bot to tick:\n{bot.log_tail()}", poll_s=0.005)


def check_recovered(before: StopSnapshot, after: StopSnapshot, tally: Tally) -> None:
    """Every open position's stop is the one Redis held at the kill, or a fresh initial one."""
    for position_id, position in after.open_positions.items():
        tally.positions_checked += 1
        recovered = after.redis.get(position_id)
        assert recovered is not None, f"open position {position_id} has no stop in Redis"
        saved = after.sqlite.get(position_id)
        assert saved is not None, f"open position {position_id} has no stop in SQLite"
        assert (
            float(saved["peak_price"]),
            float(saved["stop_price"]),
            bool(saved["activated"]),
            float(saved["updated_at"]),
        ) == (
            float(recovered["peak_price"]),
            float(recovered["stop_price"]),
            recovered["activated"] == "1",
            float(recovered["updated_at"]),
        ), f"position {position_id}: SQLite {saved} differs from Redis {recovered}"
        expected = before.redis.get(position_id)
        if expected is not None:
            tally.stops_recovered_from_redis += 1
            assert recovered == expected, (
                f"position {position_id}: recovered stop {recovered} is not the stop "
                f"Redis held at the kill {expected}"
            )
        else:
            fresh = initial_state(float(Decimal(position["entry_price"])), PARAMS, 0.0)
            assert (
                float(recovered["entry_price"]),
                float(recovered["peak_price"]),
                float(recovered["stop_price"]),
                recovered["activated"],
            ) == (fresh.entry_price, fresh.peak_price, fresh.stop_price, "0"), (
                f"position {position_id}: a stop started after the kill must be the "
                f"initial one, got {recovered}"
            )
    for position_id in after.redis.keys() - after.open_positions.keys():
        raise AssertionError(f"Redis holds a stop for position {position_id}, which is not open")


def check_exchange_matches_ledger(fake: FakeBinance, database: Path) -> None:
    orders = list(fake.orders)
    client_ids = [order["clientOrderId"] for order in orders]
    assert len(client_ids) == len(set(client_ids)), "a client order id was executed twice"
    assert fake.duplicates == [], f"the bot re-sent executed orders: {fake.duplicates}"
    owner = {order["orderId"]: fake._owner[order["orderId"]] for order in orders}
    by_trader_symbol: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for order in orders:
        by_trader_symbol.setdefault((owner[order["orderId"]], order["symbol"]), []).append(order)
    expected_open: dict[tuple[int, str], Decimal] = {}
    for (key, symbol), sequence in by_trader_symbol.items():
        sides = [order["side"] for order in sequence]
        assert sides[::2] == ["BUY"] * len(sides[::2]), f"{key} {symbol}: two entries in {sides}"
        assert sides[1::2] == ["SELL"] * len(sides[1::2]), f"{key} {symbol}: two exits in {sides}"
        for buy, sell in zip(sequence[::2], sequence[1::2], strict=False):
            assert Decimal(sell["executedQty"]) == Decimal(buy["executedQty"]), (
                f"{key} {symbol}: exit {sell} does not sell what {buy} bought"
            )
        if sides[-1] == "BUY":
            user_id = next(u for u in TRADERS if api_key(u) == key)
            expected_open[(user_id, symbol)] = Decimal(sequence[-1]["executedQty"])
    with sqlite3.connect(database) as db:
        filled = {
            row[0]: Decimal(row[1])
            for row in db.execute(
                "SELECT client_order_id, quantity FROM orders WHERE status = 'filled'"
            )
        }
        unsettled = db.execute(
            "SELECT client_order_id, status FROM orders "
            "WHERE status IN ('pending', 'sent', 'unknown')"
        ).fetchall()
        open_positions = {
            (int(row[0]), str(row[1])): Decimal(row[2])
            for row in db.execute(
                "SELECT user_id, symbol, quantity FROM positions WHERE status = 'open'"
            )
        }
    db.close()
    executed = {order["clientOrderId"]: Decimal(order["executedQty"]) for order in orders}
    assert filled == executed, "the ledger's filled orders differ from the exchange's orders"
    assert unsettled == [], f"orders left unresolved after a clean stop: {unsettled}"
    assert open_positions == expected_open, "open positions differ from what the exchange holds"


@pytest.fixture
def fake_binance() -> Iterator[ObservedBinance]:
    # Friendly on fees only: the ledger checks below pair each exit with the quantity its
    # entry bought, which a commission in the base asset would make differ (the fee path
    # has its own tests in test_order_fidelity.py). Lookup lag and reused ids stay strict.
    # The weight limit is published ten times Binance's: this test packs dozens of bot
    # starts (each reading exchangeInfo and resolving its orders) into a minute or two,
    # which a real deployment never does; the limits have their own tests
    # (test_binance_limits.py), and the bot still obeys whatever limit is published.
    fake = ObservedBinance(
        prices={symbol: as_price(p) for symbol, p in START_PRICES.items()},
        commission_rate=Decimal(0),
        weight_limit=60_000,
    )
    for user_id in TRADERS:
        fake.add_account(api_key(user_id), api_secret(user_id), USDT="1000000")
    with fake:
        yield fake


@pytest.mark.slow
def test_sigkill_during_orders_and_stop_updates_never_doubles_an_order_or_loses_a_stop(
    home: Path, redis_db: str, fake_binance: ObservedBinance, tmp_path: Path
) -> None:
    seed = int(os.environ.get("LUNARA_CRASH_SEED", DEFAULT_SEED))
    print(f"crash test seed: {seed} (rerun with LUNARA_CRASH_SEED={seed})")
    try:
        run_crash_test(seed, home, redis_db, fake_binance, tmp_path)
    except BaseException as error:
        error.add_note(f"crash test seed: {seed} (rerun with LUNARA_CRASH_SEED={seed})")
        raise


def run_crash_test(
    seed: int, home: Path, redis_url: str, fake: ObservedBinance, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    key = generate_key()
    database = home / "lunara.db"
    asyncio.run(register_traders(database, KeyRing([key])))
    client = redis.Redis.from_url(redis_url)
    bot = Bot(home, bot_environment(home, fake, redis_url, key), tmp_path / "bot-output.log")
    walk = PriceWalk(fake, random.Random(rng.random()))
    tally = Tally()
    try:
        before = read_snapshot(database, client)
        for _ in range(KILLS):
            restart_and_check(bot, fake, database, client, before, tally)
            mode = rng.choice(("walk", "walk", "order", "order", "dropped reply"))
            tally.modes[mode] = tally.modes.get(mode, 0) + 1
            fake.order_executed.clear()
            if mode == "dropped reply":
                fake.drop_mode = DROP_CLOSE
                fake.drop_next_order_response = True
            walk.resume()
            if mode == "walk":
                time.sleep(rng.uniform(0.05, 0.4))
            elif fake.order_executed.wait(ORDER_WAIT_S):
                time.sleep(rng.uniform(0.0, 0.01))  # the kill lands inside the order path
            bot.kill()
            walk.pause()
            if mode == "dropped reply" and not fake.drop_next_order_response:
                tally.dropped_replies += 1
            fake.drop_next_order_response = False
            before = read_snapshot(database, client)
            check_sqlite_lags_redis(before, tally)
            tally.unsettled_at_kill += bool(before.unsettled_orders)
            executed = {order["clientOrderId"] for order in list(fake.orders)}
            tally.exchange_ahead_at_kill += any(
                client_order_id in executed for client_order_id, _, _ in before.unsettled_orders
            )
        restart_and_check(bot, fake, database, client, before, tally)
        assert bot.stop() == 0, bot.log_tail()
    finally:
        walk.close()
        if bot.process is not None:
            bot.kill()
        client.close()
    print(f"kills: {tally}, exchange orders: {len(fake.orders)}")
    check_exchange_matches_ledger(fake, database)
    exits = sum(order["side"] == "SELL" for order in fake.orders)
    # Not vacuous: orders and stops really were in flight when the kills landed.
    assert bot.starts == KILLS + 1
    assert exits >= KILLS // 2, f"only {exits} stops triggered an exit"
    assert tally.unsettled_at_kill >= 3, f"too few kills caught an order in flight: {tally}"
    assert tally.exchange_ahead_at_kill >= 1, (
        f"no kill caught a fill before its settlement: {tally}"
    )
    assert tally.dropped_replies >= 3, f"too few replies were dropped: {tally}"
    assert tally.stops_recovered_from_redis >= KILLS, tally
    assert tally.stops_behind_in_sqlite >= 1, tally


def restart_and_check(
    bot: Bot,
    fake: ObservedBinance,
    database: Path,
    client: redis.Redis,
    before: StopSnapshot,
    tally: Tally,
) -> None:
    """Start the bot with every price held where no stop moves; check what it recovered."""
    script_dip(fake, hold_prices(fake, before))
    bot.start()
    wait_for_ticks(bot, fake, ticks=3)  # start-up recovery, then two whole ticks
    after = read_snapshot(database, client)
    check_recovered(before, after, tally)
