"""Peak RSS of the whole bot: 1,000 users, 50 symbols, everything on, against the local fakes.

    .venv/bin/python bench/engine_memory.py [--minutes 10] [--users 1000] [--symbols 50]

Starts a private redis-server and the fake Telegram, Binance and Gemini servers as
separate processes (127.0.0.1 only), seeds the users before the bot starts (plans,
settings, a fifth of them in auto mode, Binance keys encrypted at rest, two open
positions each with the matching balances at the fake exchange), then runs the real
bot (`python -m lunara`) in live mode on the fake Binance market with a 1 s tick,
Telegram polling and AI commentary on. While it runs, prices move every second and a
steady stream of commands from random users arrives (/status, /positions, /balance,
/analyze, /buy, /sell, /settings). The bot's RSS is sampled every second.

Printed: peak and final RSS, the slope over the second half (least squares, MiB per
10 minutes), the peak against the 512 MiB container the first version could not fit
in, PASS/MISS against the 200 MiB target, and the RSS of a bare python-telegram-bot
application polling the same fake under the same command stream, as a floor.

`--tracemalloc` runs the bot under tracemalloc and prints its top allocation growth
between the first and the last minute (slow; for finding what grows).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: bench, tests

from bench._common import (
    BASE_ASSETS,
    bench_env,
    report_growth,
    snapshots_of,
    start_price,
    take_snapshot,
    traced_bot_command,
    wait_for,
)
from bench._common import start_fake as common_start_fake

TOKEN = "7312345678:AAH3kq9ZxV0b1c2d3e4f5g6h7i8j9k0lMnOpQ"
GEMINI_KEY = "gemini-bench-key-0123456789"
TARGET_MIB = 200.0
FIRST_VERSION_CONTAINER_MIB = 512.0
MIB = 2**20
FIRST_USER_ID = 100_001
POSITIONS_PER_USER = 2  # the free plan's limit, so every seeded position is legal
POSITION_STAKE_USDT = Decimal("50")
START_USDT = "100000"
AUTO_MODE_EVERY = 5  # every fifth user trades automatically
PLANS = ("free", "pro", "elite")
PEER_SECONDS_MAX = 60.0
LOT_STEP = Decimal("0.00001")  # the fake exchange's LOT_SIZE step
# Prices swing ±4 % around their start over a few minutes, with noise: enough for
# trailing stops to activate and fire, and for stop losses to fire now and then.
SWING = 0.04
NOISE = 0.002
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout)\b.*")
COMMAND_WEIGHTS = {
    "status": 3, "positions": 3, "balance": 3, "analyze": 2, "buy": 2, "sell": 1,
    "settings": 1, "settings_change": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Symbol:
    name: str
    base: str
    start_price: float
    period_s: float
    phase: float

    def price_at(self, elapsed_s: float, noise: random.Random) -> Decimal:
        swing = SWING * math.sin(2 * math.pi * elapsed_s / self.period_s + self.phase)
        price = self.start_price * (1 + swing) * (1 + noise.gauss(0, NOISE))
        return Decimal(f"{price:.2f}")


def make_symbols(count: int) -> list[Symbol]:
    chooser = random.Random(7)
    return [
        Symbol(
            name=f"{base}USDT",
            base=base,
            start_price=start_price(index, base),
            period_s=chooser.uniform(120, 360),
            phase=chooser.uniform(0, 2 * math.pi),
        )
        for index, base in enumerate(BASE_ASSETS[:count])
    ]


@dataclass(frozen=True)
class Trader:
    user_id: int
    api_key: str
    api_secret: str
    symbols: tuple[str, ...]  # the seeded positions' symbols


# -- processes ------------------------------------------------------------------------


@dataclass
class Processes:
    """Every child started for the run, stopped in reverse order."""

    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, child: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            stop(child)


def stop(child: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int | None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
    return child.returncode


def child_env(home: Path) -> dict[str, str]:
    env = bench_env(home)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["no_proxy"] = env["NO_PROXY"]
    return env


def start_fake(
    processes: Processes, module: str, workdir: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    child, url = common_start_fake(module, workdir, child_env(workdir), *args)
    processes.add(child)
    return child, url


# -- seeding --------------------------------------------------------------------------


def make_traders(count: int, symbols: Sequence[Symbol]) -> list[Trader]:
    traders = []
    for index in range(count):
        user_id = FIRST_USER_ID + index
        held = tuple(
            symbols[(index * POSITIONS_PER_USER + k) % len(symbols)].name
            for k in range(POSITIONS_PER_USER)
        )
        traders.append(
            Trader(user_id, f"benchkey{user_id:08d}abcdef", f"benchsecret{user_id:08d}xyz", held)
        )
    return traders


def quantity_for(price: float) -> Decimal:
    raw = POSITION_STAKE_USDT / Decimal(str(price))
    return (raw / LOT_STEP).to_integral_value(ROUND_DOWN) * LOT_STEP


async def seed_database(
    database: Path, encryption_key: str, traders: Sequence[Trader], prices: dict[str, float]
) -> None:
    """Users, plans, settings, encrypted keys and open positions, as the bot would store them."""
    from lunara.crypto import KeyRing
    from lunara.storage import credentials, user_settings, users
    from lunara.storage import positions as position_store
    from lunara.storage.database import open_database

    keyring = KeyRing([encryption_key])
    db = await open_database(database)
    expires = time.time() + 30 * 86400
    try:
        for index, trader in enumerate(traders):
            await users.register(db, trader.user_id, f"trader{trader.user_id}")
            plan = PLANS[index % len(PLANS)]
            if plan != "free":
                await users.set_plan(db, trader.user_id, plan, expires)
            await user_settings.save(
                db,
                user_settings.UserSettings(
                    user_id=trader.user_id,
                    stake_usdt=Decimal("20"),
                    auto_mode=index % AUTO_MODE_EVERY == 0,
                ),
            )
            await credentials.store(
                db, keyring, trader.user_id, credentials.Exchange.BINANCE,
                trader.api_key, trader.api_secret,
            )  # fmt: skip
            for symbol in trader.symbols:
                price = prices[symbol]
                await position_store.open(
                    db, trader.user_id, symbol, quantity_for(price), Decimal(str(price)), None
                )
    finally:
        await db.close()


def seed_exchange(
    binance: httpx.Client, traders: Sequence[Trader], symbols: Sequence[Symbol]
) -> None:
    """Every trader's account at the fake exchange, holding what their positions hold."""
    by_name = {symbol.name: symbol for symbol in symbols}
    binance.post(
        "/_control/price", json={s.name: f"{s.start_price:.2f}" for s in symbols}
    ).raise_for_status()
    for trader in traders:
        balances = {"USDT": START_USDT}
        for name in trader.symbols:
            symbol = by_name[name]
            held = Decimal(balances.get(symbol.base, "0")) + quantity_for(symbol.start_price)
            balances[symbol.base] = str(held)
        binance.post(
            "/_control/account",
            json={"api_key": trader.api_key, "secret": trader.api_secret, "balances": balances},
        ).raise_for_status()


def write_bench_manifest(directory: Path) -> Path:
    """Every Telegram user is a trader by default; no admins are needed."""
    manifest = {
        "version": 1,
        "name": "lunara-bench",
        "program": {"command": [sys.executable, "-m", "lunara"]},
        "roles": {"trader": ["tg.trade.*", "tg.info.*"]},
        "principals": {},
        "defaults": {"telegram": "trader"},
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    path.chmod(0o644)
    return path


# -- load -----------------------------------------------------------------------------


class CommandStream:
    """Commands from random traders, in a fixed mix, at a steady rate."""

    def __init__(
        self,
        traders: Sequence[Trader],
        symbols: Sequence[Symbol],
        seed: int = 11,
        only: str | None = None,
    ):
        self.traders = traders
        self.symbols = [symbol.name for symbol in symbols]
        self.random = random.Random(seed)
        mix = COMMAND_WEIGHTS if only is None else {only: 1}
        self.kinds = list(mix)
        self.weights = list(mix.values())
        self.sent = 0

    def next(self) -> tuple[int, str]:
        trader = self.random.choice(self.traders)
        kind = self.random.choices(self.kinds, self.weights)[0]
        held = self.random.choice(trader.symbols)
        text = {
            "status": "/status",
            "positions": "/positions",
            "balance": "/balance",
            "analyze": f"/analyze {self.random.choice(self.symbols)}",
            "buy": f"/buy {self.random.choice(self.symbols)} 20",
            "sell": f"/sell {held}",
            "settings": "/settings",
            "settings_change": f"/settings stake_usdt={self.random.randint(15, 40)}",
        }[kind]
        return trader.user_id, text

    def push(self, telegram: httpx.Client, count: int) -> None:
        for _ in range(count):
            user_id, text = self.next()
            telegram.post(
                "/_control/push_command",
                json={"user_id": user_id, "text": text, "username": f"trader{user_id}"},
            ).raise_for_status()
            self.sent += 1


def rss_bytes(process: psutil.Process) -> int:
    """The process's RSS plus any children it started."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    def add(self, elapsed_s: float, rss: int) -> None:
        self.seconds.append(elapsed_s)
        self.rss_mib.append(rss / MIB)

    @property
    def peak(self) -> float:
        return max(self.rss_mib)

    @property
    def final(self) -> float:
        return self.rss_mib[-1]

    def slope_second_half(self) -> float:
        """Least-squares slope of RSS over the second half, in MiB per 10 minutes."""
        half = len(self.seconds) // 2
        xs, ys = self.seconds[half:], self.rss_mib[half:]
        if len(xs) < 2:
            return 0.0
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs)
        if spread == 0:
            return 0.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        return slope * 600.0


def drive(
    child: subprocess.Popen[bytes],
    seconds: float,
    telegram: httpx.Client,
    binance: httpx.Client,
    stream: CommandStream,
    symbols: Sequence[Symbol],
    rate: int,
    on_minute: Callable[[int, Samples], None] | None = None,
) -> Samples:
    """Move prices and push `rate` commands every second; sample RSS every second."""
    process = psutil.Process(child.pid)
    noise = random.Random(3)
    samples = Samples()
    started = time.monotonic()
    next_second = started
    minute = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        if child.poll() is not None:
            raise SystemExit(f"the process under test exited early (code {child.returncode})")
        samples.add(elapsed, rss_bytes(process))
        prices = {s.name: str(s.price_at(elapsed, noise)) for s in symbols}
        binance.post("/_control/price", json=prices).raise_for_status()
        stream.push(telegram, rate)
        if on_minute is not None and int(elapsed // 60) > minute:
            minute = int(elapsed // 60)
            on_minute(minute, samples)
        next_second += 1.0
        time.sleep(max(0.0, next_second - time.monotonic()))
    samples.add(time.monotonic() - started, rss_bytes(process))
    return samples


def progress(minute: int, samples: Samples) -> None:
    print(
        f"  minute {minute:>2}: RSS {samples.final:6.1f} MiB (peak so far {samples.peak:6.1f})",
        flush=True,
    )


# -- the bare peer --------------------------------------------------------------------


def run_peer(base_url: str) -> int:
    """A bare python-telegram-bot application that answers every command with "ok"."""
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat is not None:
            await update.get_bot().send_message(update.effective_chat.id, "ok")

    app = (
        Application.builder().token(TOKEN).base_url(f"{base_url}/bot")
        .concurrent_updates(64).build()
    )  # fmt: skip
    app.add_handler(MessageHandler(filters.COMMAND, echo))
    app.run_polling(timeout=10, allowed_updates=Update.ALL_TYPES)
    return 0


# -- the run --------------------------------------------------------------------------


@dataclass
class Outcome:
    ours: Samples
    peer: Samples | None
    commands: int
    replies: int
    rejected: int
    orders: int
    positions_open: int
    log_errors: int
    exceptions: Counter[str]
    exit_code: int | None


def bot_command(workdir: Path, traced: bool) -> list[str]:
    return traced_bot_command(workdir) if traced else [sys.executable, "-m", "lunara"]


def run(args: argparse.Namespace, workdir: Path) -> Outcome:
    # Imported here, not at the top: the bare peer runs this file too and must stay bare.
    from bench.executor_tick import start_redis
    from lunara.crypto import generate_key

    processes = Processes()
    symbols = make_symbols(args.symbols)
    traders = make_traders(args.users, symbols)
    home = workdir / "home"
    home.mkdir()
    try:
        redis, redis_url = start_redis(workdir)
        processes.add(redis)
        _, telegram_url = start_fake(processes, "telegram_api", workdir)
        _, binance_url = start_fake(processes, "binance_api", workdir)
        _, gemini_url = start_fake(processes, "gemini_api", workdir, "--api-key", GEMINI_KEY)
        telegram = httpx.Client(base_url=telegram_url, trust_env=False, timeout=30)
        binance = httpx.Client(base_url=binance_url, trust_env=False, timeout=30)

        encryption_key = generate_key()
        started = time.monotonic()
        seed_exchange(binance, traders, symbols)
        asyncio.run(
            seed_database(
                home / "lunara.db",
                encryption_key,
                traders,
                {s.name: s.start_price for s in symbols},
            )
        )
        print(
            f"  seeded {len(traders)} users, {len(traders) * POSITIONS_PER_USER} open positions "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )

        env = child_env(home)
        env.update({
            "LUNARA_MANIFEST": str(write_bench_manifest(workdir)),
            "LUNARA_MODE": "live",
            "LUNARA_MARKET": "binance",
            "LUNARA_SYMBOLS": ",".join(s.name for s in symbols),
            "LUNARA_TICK_SECONDS": "1",
            "LUNARA_ENCRYPTION_KEY": encryption_key,
            "REDIS_URL": redis_url,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": telegram_url,
            "BINANCE_API_BASE_URL": binance_url,
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_API_BASE_URL": gemini_url,
            "LOG_LEVEL": "INFO",
        })  # fmt: skip
        bot_output: IO[bytes] = (workdir / "bot-output.log").open("wb")
        bot = processes.add(
            subprocess.Popen(
                bot_command(workdir, args.tracemalloc),
                cwd=workdir,
                env=env,
                stdout=bot_output,
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(
            lambda: bot.poll() is not None or telegram_polls(telegram) > 0,
            120,
            "the bot to start polling",
            poll_s=0.2,
        )
        if bot.poll() is not None:
            raise SystemExit(f"the bot exited with {bot.returncode}; see {workdir}/bot-output.log")
        print(f"  bot polling after {time.monotonic() - started:.1f} s; driving load", flush=True)

        stream = CommandStream(traders, symbols, only=args.only)

        def on_minute(minute: int, samples: Samples) -> None:
            progress(minute, samples)
            if args.tracemalloc and minute == args.snapshot_at:
                take_snapshot(bot.pid, workdir)

        ours = drive(
            bot, args.minutes * 60, telegram, binance, stream, symbols, args.rate, on_minute
        )
        if args.tracemalloc:
            take_snapshot(bot.pid, workdir)
        commands = stream.sent
        try:
            wait_for(lambda: telegram_stats(telegram)["pending_updates"] == 0, 60, "the backlog")
        except TimeoutError:  # a bot slowed by tracemalloc may not catch up; still report
            print(f"  backlog not drained: {telegram_stats(telegram)['pending_updates']} updates")
        time.sleep(3)
        stats = telegram_stats(telegram)
        orders = int(binance.get("/_control/stats").json()["orders"])
        exit_code = stop(bot)
        log_errors, exceptions = log_problems(home / "logs", workdir / "bot-output.log")
        positions_open = open_positions(home / "lunara.db")

        peer = None
        if not args.no_peer:
            peer_seconds = min(PEER_SECONDS_MAX, args.minutes * 60)
            print(f"  bare python-telegram-bot peer, {peer_seconds:.0f} s", flush=True)
            peer_process = processes.add(
                subprocess.Popen(
                    [sys.executable, __file__, "--peer-url", telegram_url],
                    cwd=workdir,
                    env=child_env(home),
                    stdout=subprocess.DEVNULL,
                    stderr=(workdir / "peer.log").open("wb"),
                )
            )
            before = telegram_polls(telegram)
            wait_for(lambda: telegram_polls(telegram) > before, 60, "the peer to poll", 0.2)
            peer = drive(
                peer_process, peer_seconds, telegram, binance,
                CommandStream(traders, symbols, seed=12), symbols, args.rate,
            )  # fmt: skip
            stop(peer_process)
        if args.tracemalloc:
            report_growth(snapshots_of(workdir, bot.pid))
        return Outcome(
            ours, peer, commands, int(stats["sent"]), int(stats["rejected"]), orders,
            positions_open, log_errors, exceptions, exit_code,
        )  # fmt: skip
    finally:
        processes.stop_all()


def telegram_stats(telegram: httpx.Client) -> dict[str, Any]:
    reply = telegram.get("/_control/stats")
    reply.raise_for_status()
    stats: dict[str, Any] = reply.json()
    return stats


def telegram_polls(telegram: httpx.Client) -> int:
    return int(sum(telegram_stats(telegram)["polls_by_token"].values()))


def log_problems(*places: Path) -> tuple[int, Counter[str]]:
    """ERROR and CRITICAL lines in the bot's logs, and the exceptions their tracebacks end in."""
    files = [p for place in places for p in ([place] if place.is_file() else place.rglob("*"))]
    errors = 0
    exceptions: Counter[str] = Counter()
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line:
                errors += 1
            elif EXCEPTION_LINE.match(line):
                exceptions[line[:120]] += 1
    return errors, exceptions


def open_positions(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT count(*) FROM positions WHERE status = 'open'").fetchone()[0])


def print_report(args: argparse.Namespace, outcome: Outcome) -> bool:
    ours = outcome.ours
    met = ours.peak <= TARGET_MIB
    print(
        f"whole bot, {args.minutes:g} min, {args.users} users, {args.symbols} symbols, live mode "
        f"on fake Binance, Telegram + Gemini + Redis on, 1 s tick, {args.rate} commands/s"
    )
    print(
        f"  load: {outcome.commands} commands pushed, {outcome.replies} replies, "
        f"{outcome.rejected} replies refused by the fake, {outcome.orders} orders at the exchange, "
        f"{outcome.positions_open} positions open at the end, bot exit code {outcome.exit_code}"
    )
    print(f"  {outcome.log_errors} ERROR log lines; exceptions in the log:")
    for exception, count in outcome.exceptions.most_common(5):
        print(f"    {count:5d}  {exception}")
    print(f"  peak RSS:   {ours.peak:7.1f} MiB")
    print(f"  final RSS:  {ours.final:7.1f} MiB")
    print(f"  slope over the second half: {ours.slope_second_half():+.1f} MiB per 10 min")
    print(
        f"  peak vs the {FIRST_VERSION_CONTAINER_MIB:.0f} MiB container: "
        f"{ours.peak / FIRST_VERSION_CONTAINER_MIB:.2f} "
        f"({FIRST_VERSION_CONTAINER_MIB / ours.peak:.1f}x headroom)"
    )
    if outcome.peer is not None:
        peer = outcome.peer
        print(
            f"  bare python-telegram-bot peer, same fake and command stream: peak "
            f"{peer.peak:.1f} MiB, final {peer.final:.1f} MiB (lunara peak {ours.peak / peer.peak:.1f}x)"
        )
    print(f"  target <= {TARGET_MIB:.0f} MiB peak -> {'PASS' if met else 'MISS'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--symbols", type=int, default=50, choices=range(1, len(BASE_ASSETS) + 1),
                        metavar=f"1..{len(BASE_ASSETS)}")  # fmt: skip
    parser.add_argument("--rate", type=int, default=20, help="commands per second")
    parser.add_argument("--no-peer", action="store_true", help="skip the bare PTB peer")
    parser.add_argument("--only", choices=sorted(COMMAND_WEIGHTS),
                        help="send only this kind of command (to see what memory follows)")  # fmt: skip
    parser.add_argument("--tracemalloc", action="store_true", help="report what grows")
    parser.add_argument("--snapshot-at", type=int, default=1, metavar="MINUTE",
                        help="with --tracemalloc: the minute of the first snapshot (the last "
                        "is taken at the end)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--peer-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_url:
        return run_peer(args.peer_url)
    workdir = Path(tempfile.mkdtemp(prefix="lunara-bench-memory-"))
    try:
        outcome = run(args, workdir)
    finally:
        if args.keep:
            print(f"  scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if print_report(args, outcome) else 1


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    sys.exit(main())
