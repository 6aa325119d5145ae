"""Soak: the real bot under the real watchdog, 500 users and a fault injector, then invariants.

    .venv/bin/python bench/soak.py [--minutes 30] [--seed N] [--users 500] [--rate 6] [--keep]

Starts a private redis-server (AOF on, so a restart keeps its data) and the fake
Telegram, Binance and Gemini servers as separate processes (127.0.0.1 only), then
`lunara start` runs the real bot (`python -m lunara`, live mode on the fake Binance,
0.5 s tick) under the real watchdog. Users onboard through Telegram (/start, /setkeys,
/settings with fixed trailing-stop parameters; in runs under 5 minutes only the first
40, the rest are seeded in the database first, because onboarding runs at ~10
commands/s); then a steady stream of commands arrives (buys, sells, settings changes,
analyses, /positions, /balance, payments, garbage) while prices move as a staircase
(each level held `LEVEL_HOLD_S`, so the live bot observes every level even around
kills) that makes trailing stops activate and trigger.

At seeded random times the fault injector SIGKILLs the bot (and the next bot's first
Telegram call, getMe, gets a 502), SIGKILLs the watchdog (`lunara start` then adopts the
bot), SIGTERMs the bot (getMe again 502), restarts Redis, flushes Redis once, corrupts
the ledger file once; makes the fake Telegram answer 409, 429 with retry_after, 5xx, and
stall getUpdates past the client timeout; makes the fake exchange answer 429 with
Retry-After, -1021 (clock skew), stall an order past the bot's timeout, and execute an
order but drop the reply; makes the fake Gemini answer 429 and 503.
Process faults are spaced so that every price level is observed by a live bot; the
flush never lands within 10 s after a bot kill, and no bot kill follows it within 30 s
(a bot that the flush left deaf to Telegram must show as a polling gap).

At the end (after a clean `lunara stop`) it prints, with PASS/FAIL, and exits 1 on any
FAIL:

- duplicate orders at the exchange, by client order id and by content (an exchange
  order the ledger's positions do not account for; more BUYs than /buy commands);
- every open position's trailing stop equals the pure `trailing.replay` of the price
  levels it lived through;
- 0 stuck: no position is left open under a replayed stop that the last price level
  (held with a live bot, fault-free, until the stop) triggers; stops triggered at an
  earlier level whose price came back above them are counted, not judged;
- every closed position left at most one LOT_SIZE step of its base asset (the step from
  the fake's exchangeInfo), as recorded and as the exchange's fills of it say;
- every closed position's realised P&L equals the exchange's fills of it (quote from the
  sells less quote paid for the buys, less commissions paid in quote) within 1e-8;
- every accepted Telegram command (its update confirmed by the poller) got exactly one
  threaded reply (message or invoice), and every accepted payment (its service message)
  is recorded and was thanked exactly once; the one duplicate excused (and counted) is
  an answer a SIGKILL caught between its send and its record: it reached Telegram within
  `CAUGHT_WINDOW_S` of the kill and is sent again after the restart, because the Bot
  API has no idempotent send;
- notifications delivered vs produced: every message the bot wrote to its outbox other
  than an answer (entries, exits and stops, broadcasts, reports to the admins) and marked
  sent reached Telegram exactly once (a second copy excused, and counted, as for answers:
  the first within `CAUGHT_WINDOW_S` of a SIGKILL, the second after it); nothing reached
  Telegram without an outbox row; those still queued, blocked or refused are counted;
- zero tracebacks / "unexpected" lines in the logs; zero secrets in logs, replies, the
  audit log or the ledger;
- `lunara status --json` always answered within 1 s and was never wrong about whether
  the bot was running (probes within 1.5 s of a process fault are not judged);
- bot RSS: peak (target <= 200 MiB) and least-squares slope over the last half of the
  run (target <= 1 MiB per 10 minutes; judged only in runs of 10 minutes or more, printed
  always). In a judged run every process fault (bot and watchdog kills, SIGTERM, Redis
  restarts and the flush, the corrupt ledger) falls in its first 20 %, so the rest is one
  bot life, well past its warm-up, under the injected faults and the full load. Were
  there several lives in the last half, the slope is pooled over them (each from its own
  mean, after its first 30 s, 60 s in long runs), so a restart does not read as a trend.
  `bench/memory_long.py` reads one bot life without any fault for longer;
- restarts counted by the watchdog equal the bot SIGKILLs plus SIGTERMs injected. A
  killed watchdog does not count: the bot it leaves lives on and the new watchdog
  adopts it, keeping the count.

`--minutes 2` is the short mode that `tests/test_soak.py` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import ROOT, bench_env, wait_for
from _common import start_fake as common_start_fake

sys.path.insert(0, str(ROOT))

from lunara.trading.trailing import (
    StopState,
    TrailingParams,
    advance,
    initial_state,
    is_triggered,
)

TOKEN = "7312345678:AAH3soakTokenQ9ZxV0b1c2d3e4f5g6h7i8j9"
GEMINI_KEY = "gemini-soak-key-5b7e0c1d2a3f4e5d"
MIB = 2**20
FIRST_USER_ID = 300_001
START_PRICES = {"BTCUSDT": 50000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
START_USDT = "100000"
TICK_SECONDS = "0.5"
LEVEL_HOLD_S = 4.0  # each price level is held this long with a live bot (8 ticks)
SWING = 0.045  # prices swing ±4.5 % over PERIOD_LEVELS: stops activate, then trigger
PERIOD_LEVELS = 14
NOISE = 0.004
FLUSH_GAP_S = 10.0  # no Redis flush within this of a bot kill (SQLite lags <= 5 s)
STATUS_BUDGET_S = 1.0
STATUS_EVERY_S = 2.0
STATUS_GRACE_S = 1.5  # probes this close to a process fault are not judged
RSS_TARGET_MIB = 200.0
SLOPE_TARGET_MIB_PER_10MIN = 1.0
SLOPE_MIN_RUN_MIN = 10.0
SLOPE_WARMUP_S = 30.0  # a bot's first seconds (imports, caches) are not a leak
SLOPE_WARMUP_LONG_S = 60.0
PROCESS_FAULTS_UNTIL = 0.2  # judged runs: process faults only in this first part
RECOVERY_DEADLINE_S = 90.0
SHORT_RUN_MIN = 5.0
SHORT_ONBOARD = 40  # Telegram onboarding runs at ~10 commands/s; the short mode must be short
FLUSH_QUIET_S = 30.0  # no bot kill this long after the flush: a bot deafened by it shows
DRAIN_STUCK_S = 20.0  # stop waiting for replies once none came for this long
# A command answered just before a SIGKILL, its answer not yet recorded, is answered again
# after the restart; only an answer this close to the kill can have been caught so.
CAUGHT_WINDOW_S = 0.5
POLL_GAP_LIMIT_S = 20.0  # a live bot never goes this long without polling Telegram
# getUpdates: the bot's CLIENT_TIMEOUT_S (5) plus its poll timeout (10), and some.
TELEGRAM_STALL_S = 17.0
BINANCE_STALL_S = 12.0  # past the bot's 10 s timeout; the late order then fails -1021
PNL_TOLERANCE = Decimal("1e-8")  # quote (and base) a recorded figure may differ from the fills'
PARAMS = TrailingParams(
    stoploss=-0.03,
    trailing_stop=True,
    trailing_stop_positive=0.01,
    trailing_stop_positive_offset=0.015,
    trailing_only_offset_is_reached=False,
)
# The bot's fee rate (LUNARA_PAPER_FEE_RATE unset): the trailing offset is fee-inclusive.
FEE_RATE = 0.001
SETTINGS_COMMAND = (
    "/settings stoploss=-0.03 trailing_stop_positive=0.01 "
    "trailing_stop_positive_offset=0.015 trailing_only_offset_is_reached=off"
)
COMMAND_WEIGHTS = {
    "buy": 4, "sell": 2, "settings": 1, "analyze": 1, "positions": 2, "balance": 1,
    "status": 1, "subscribe": 1, "garbage_text": 1, "garbage_command": 1,
}  # fmt: skip
GARBAGE_TEXT = ("hello?", "gm", "🚀🚀🚀", "<b>not html</b> & co", "buy btc pls", " ")
GARBAGE_COMMANDS = ("/bye", "/buy", "/buy BTCUSDT -5", "/sell", "/settings stake_usdt=abc",
                    "/analyze NOPE", "/subscribe gold", "/buy DOGEUSDT 10", "/%%%")  # fmt: skip
PROCESS_FAULTS = ("kill_bot", "sigterm_bot", "kill_watchdog", "redis_restart", "redis_flush",
                  "corrupt_ledger")  # fmt: skip
INJECTED_FAULTS = ("telegram_409", "telegram_429", "telegram_5xx", "telegram_stall",
                   "binance_429", "binance_1021", "binance_timeout", "binance_drop",
                   "gemini_429", "gemini_503")  # fmt: skip
BOT_FAULTS = ("kill_bot", "sigterm_bot")
TROUBLE = re.compile(r"Traceback|unexpected", re.IGNORECASE)


# -- processes ------------------------------------------------------------------------


@dataclass
class Children:
    """Every child started for the run; all are killed at the end, even on failure."""

    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, child: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(home: Path) -> dict[str, str]:
    env = bench_env(home)
    for name in list(env):
        if name.startswith(("TELEGRAM_", "GEMINI_", "BINANCE_")):
            del env[name]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def start_fake(children: Children, module: str, workdir: Path, *args: str) -> str:
    child, url = common_start_fake(module, workdir, child_env(workdir), *args)
    children.add(child)
    return url


class RedisServer:
    """A private redis-server with AOF, restartable on the same port and directory."""

    def __init__(self, children: Children, directory: Path) -> None:
        self.children = children
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.children.add(
            subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        wait_for(self.answers, 10, "redis-server to answer", poll_s=0.05)

    def answers(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def restart(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)
        self.start()

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()


# -- the installation -------------------------------------------------------------------


def write_manifest(directory: Path) -> Path:
    """The OS user owns the bot; every Telegram user is a trader."""
    manifest = {
        "version": 1,
        "name": "lunara",
        "program": {
            "command": [sys.executable, "-m", "lunara"],
            "stop_timeout_s": 15,
            "restart": {
                "backoff_initial_s": 0.5,
                "backoff_max_s": 2,
                "max_restarts": 500,
                "window_s": 300,
            },
            "memory_limit_mib": 450,
            "heartbeat_timeout_s": 60,
        },
        "roles": {"owner": ["*"], "trader": ["tg.trade.*", "tg.info.*"]},
        "principals": {f"os_user:{getpass.getuser()}": "owner"},
        "defaults": {"telegram": "trader"},
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    path.chmod(0o644)
    return path


@dataclass
class Installation:
    home: Path
    manifest: Path
    env: dict[str, str]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lunara.cli", "--home", str(self.home),
             "--manifest", str(self.manifest), *args],
            env=self.env, cwd=self.home.parent, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def status(self, timeout: float = 30) -> dict[str, Any] | None:
        try:
            result = self.cli("status", "--json", timeout=timeout)
            document: dict[str, Any] = json.loads(result.stdout)
            return document
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def bot_processes(self) -> list[psutil.Process]:
        """The truth: live `python -m lunara` processes of this home."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info.get("cmdline") or []
            if cmdline[-2:] != ["-m", "lunara"]:
                continue
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if process.environ().get("LUNARA_HOME") == str(self.home):
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def watchdog_processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info.get("cmdline") or []
            if "blueprint.watchdog" in cmdline and str(self.home) in cmdline:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if process.status() != psutil.STATUS_ZOMBIE:
                        found.append(process)
        return found

    def kill_everything(self) -> None:
        for process in self.watchdog_processes() + self.bot_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


# -- users and the command stream -------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: int
    api_key: str
    api_secret: str


def make_users(count: int, rng: random.Random) -> list[User]:
    return [
        User(
            FIRST_USER_ID + index,
            f"soakkey{FIRST_USER_ID + index}{rng.getrandbits(64):016x}",
            f"soaksecret{FIRST_USER_ID + index}{rng.getrandbits(96):024x}",
        )
        for index in range(count)
    ]


@dataclass
class Pushed:
    update_id: int
    message_id: int
    user_id: int
    kind: str
    text: str


class Telegram:
    """The fake Bot API's control surface."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=30)
        self.lock = threading.Lock()
        self.pushed: list[Pushed] = []

    def push(self, user_id: int, text: str, kind: str) -> Pushed:
        return self._push("/_control/push_command", {"user_id": user_id, "text": text},
                          user_id, kind, text)  # fmt: skip

    def push_payment(self, user_id: int, payload: str, total: int, charge_id: str) -> Pushed:
        """The service message of a completed payment, answered (thanked) like a command."""
        body = {"user_id": user_id, "payload": payload, "total_amount": total,
                "charge_id": charge_id}  # fmt: skip
        return self._push("/_control/push_successful_payment", body, user_id, "payment",
                          charge_id)  # fmt: skip

    def _push(self, path: str, body: dict[str, Any], user_id: int, kind: str,
              text: str) -> Pushed:  # fmt: skip
        reply = self.http.post(path, json=body)
        reply.raise_for_status()
        pushed = reply.json()
        record = Pushed(int(pushed["update_id"]), int(pushed["message_id"]), user_id, kind, text)
        with self.lock:
            self.pushed.append(record)
        return record

    def get(self, path: str) -> Any:
        reply = self.http.get(path)
        reply.raise_for_status()
        return reply.json()

    def post(self, path: str, body: dict[str, Any]) -> None:
        self.http.post(path, json=body).raise_for_status()

    def replies(self) -> Counter[int]:
        """Threaded answers (messages and invoices) per command message id."""
        counts: Counter[int] = Counter()
        for item in [*self.get("/_control/sent"), *self.get("/_control/invoices")]:
            if item.get("reply_to") is not None:
                counts[int(item["reply_to"])] += 1
        return counts


class CommandLoad:
    """Commands from random users at a steady rate, and the payments that follow invoices."""

    def __init__(self, telegram: Telegram, users: Sequence[User], rate: float, seed: int) -> None:
        self.telegram = telegram
        self.users = users
        self.rate = rate
        self.random = random.Random(seed)
        self.kinds = list(COMMAND_WEIGHTS)
        self.weights = list(COMMAND_WEIGHTS.values())
        self.stop_event = threading.Event()
        self.subscribes: dict[int, int] = {}  # command message id -> user id
        self.paid: set[int] = set()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def command(self, user: User) -> tuple[str, str]:
        kind = self.random.choices(self.kinds, self.weights)[0]
        symbol = self.random.choice(list(START_PRICES))
        text = {
            "buy": f"/buy {symbol} {self.random.choice((10, 15, 20, 25))}",
            "sell": f"/sell {symbol}",
            "settings": f"/settings stake_usdt={self.random.randint(15, 40)}",
            "analyze": f"/analyze {symbol}",
            "positions": "/positions",
            "balance": "/balance",
            "status": "/status",
            "subscribe": f"/subscribe {self.random.choice(('pro', 'elite'))}",
            "garbage_text": self.random.choice(GARBAGE_TEXT),
            "garbage_command": self.random.choice(GARBAGE_COMMANDS),
        }[kind]
        return kind, text

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                user = self.random.choice(self.users)
                kind, text = self.command(user)
                if text.strip():
                    pushed = self.telegram.push(user.user_id, text, kind)
                    if kind == "subscribe":
                        self.subscribes[pushed.message_id] = user.user_id
                if self.random.random() < 0.2:
                    self._pay_invoices()
            except httpx.HTTPError as error:
                self.errors.append(repr(error))
            next_at += 1.0 / self.rate
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))

    def _pay_invoices(self) -> None:
        """Pre-checkout then successful payment, once per invoice that answered a /subscribe."""
        for invoice in self.telegram.get("/_control/invoices"):
            message_id = invoice.get("reply_to")
            if message_id is None or message_id in self.paid or message_id not in self.subscribes:
                continue
            self.paid.add(message_id)
            user_id = self.subscribes[message_id]
            total = sum(int(price["amount"]) for price in invoice.get("prices") or [])
            payload = str(invoice["payload"])
            self.telegram.post("/_control/push_pre_checkout",
                               {"user_id": user_id, "payload": payload, "total_amount": total})  # fmt: skip
            self.telegram.push_payment(user_id, payload, total, f"soak-charge-{message_id}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


# -- prices -------------------------------------------------------------------------------


@dataclass
class Level:
    sent_at: float  # wall clock before the prices were set
    set_at: float  # wall clock once the fake confirmed them
    prices: dict[str, Decimal]


class PriceStaircase:
    """Seeded price levels: a swing per symbol plus noise, two decimals like the tick size."""

    def __init__(self, binance: httpx.Client, seed: int) -> None:
        self.binance = binance
        self.random = random.Random(seed)
        self.phases = {s: self.random.uniform(0, 2 * math.pi) for s in START_PRICES}
        self.levels: list[Level] = []

    def next_prices(self) -> dict[str, Decimal]:
        index = len(self.levels)
        prices = {}
        for symbol, start in START_PRICES.items():
            angle = 2 * math.pi * index / PERIOD_LEVELS + self.phases[symbol]
            value = start * (1 + SWING * math.sin(angle)) * (1 + self.random.gauss(0, NOISE))
            prices[symbol] = Decimal(f"{value:.2f}")
        return prices

    def step(self) -> Level:
        prices = self.next_prices()
        sent_at = time.time()
        reply = self.binance.post("/_control/price", json={s: str(p) for s, p in prices.items()})
        reply.raise_for_status()
        level = Level(sent_at, time.time(), prices)
        self.levels.append(level)
        return level


# -- observers ------------------------------------------------------------------------------


@dataclass
class Probe:
    at: float
    latency_s: float
    code: int | None
    state: str | None
    pid: int | None
    restarts: int | None
    truth_before: frozenset[int]
    truth_after: frozenset[int]


class Observers:
    """Status prober (every 2 s) and RSS sampler (every 1 s), on their own threads."""

    def __init__(self, installation: Installation) -> None:
        self.installation = installation
        self.probes: list[Probe] = []
        self.rss: list[tuple[float, int, float]] = []  # monotonic time, pid, MiB
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._probe_loop, name="status", daemon=True),
            threading.Thread(target=self._rss_loop, name="rss", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)

    def truth(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.installation.bot_processes())

    def _probe_loop(self) -> None:
        while not self.stop_event.wait(STATUS_EVERY_S):
            before = self.truth()
            started = time.monotonic()
            code: int | None = None
            document: dict[str, Any] = {}
            try:
                result = self.installation.cli("status", "--json", timeout=10)
                code = result.returncode
                document = json.loads(result.stdout)
            except (subprocess.TimeoutExpired, ValueError):
                pass
            latency = time.monotonic() - started
            after = self.truth()
            self.probes.append(
                Probe(time.time(), latency, code, document.get("state"), document.get("pid"),
                      document.get("restarts"), before, after)
            )  # fmt: skip

    def _rss_loop(self) -> None:
        process: psutil.Process | None = None
        while not self.stop_event.wait(1.0):
            try:
                if process is None or not process.is_running():
                    bots = self.installation.bot_processes()
                    process = bots[0] if bots else None
                if process is None:
                    continue
                total = process.memory_info().rss
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += child.memory_info().rss
                if total > 0:
                    self.rss.append((time.monotonic(), process.pid, total / MIB))
            except psutil.NoSuchProcess:
                process = None


# -- faults ---------------------------------------------------------------------------------


@dataclass
class FaultLog:
    injected: list[tuple[float, str, str]] = field(default_factory=list)  # wall, kind, detail
    process_times: list[float] = field(default_factory=list)
    last_bot_kill: float = 0.0
    last_flush: float = 0.0

    def count(self, *kinds: str) -> int:
        return sum(1 for _, kind, _ in self.injected if kind in kinds)


def plan_faults(minutes: float, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds into the run, kind): every kind at least once, more in longer runs."""
    duration = minutes * 60
    span_start, span_end = 6.0, duration - 20.0
    # In a judged run every process fault (kills of the bot and the watchdog, SIGTERM,
    # Redis restarts and flushes, a corrupt ledger) falls in its first
    # PROCESS_FAULTS_UNTIL: the rest is one bot life whose RSS trend can be read, while
    # the cheap injected faults go on to the end. Process faults come about once a minute
    # of the span they fall in; the injected ones every few seconds.
    judged = minutes >= SLOPE_MIN_RUN_MIN
    process_end = span_start + (duration * PROCESS_FAULTS_UNTIL if judged else span_end)
    process_end = min(process_end, span_end)
    process_scale = max(1, int((process_end - span_start) / 60 / 6))
    injected_scale = max(1, int(minutes / 2))
    process = ["kill_bot", "kill_bot", "sigterm_bot", "kill_watchdog", "redis_restart"]
    process = process * process_scale + ["redis_flush", "corrupt_ledger"]
    rng.shuffle(process)
    injected = list(INJECTED_FAULTS) * injected_scale
    plan = []
    slot = (process_end - span_start) / max(1, len(process))
    for index, kind in enumerate(process):
        plan.append((span_start + index * slot + rng.uniform(0, slot * 0.3), kind))
    for kind in injected:
        plan.append((rng.uniform(span_start, span_end), kind))
    return sorted(plan)


class FaultInjector:
    def __init__(self, installation: Installation, redis_server: RedisServer,
                 telegram: Telegram, binance: httpx.Client, gemini: httpx.Client) -> None:  # fmt: skip
        self.installation = installation
        self.redis = redis_server
        self.telegram = telegram
        self.binance = binance
        self.gemini = gemini
        self.log = FaultLog()
        self.problems: list[str] = []
        self.skew_reset_at: float | None = None  # when the -1021 clock skew is undone

    def _record(self, kind: str, detail: str = "") -> None:
        self.log.injected.append((time.time(), kind, detail))
        print(f"  {time.strftime('%H:%M:%S')} fault {kind} {detail}".rstrip(), flush=True)

    def may_apply(self, kind: str) -> bool:
        """A flush comes FLUSH_GAP_S after a bot kill at least, and FLUSH_QUIET_S before one."""
        now = time.time()
        if kind == "redis_flush":
            return now - self.log.last_bot_kill >= FLUSH_GAP_S
        if kind in (*BOT_FAULTS, "kill_watchdog"):
            return self.log.last_flush == 0.0 or now - self.log.last_flush >= FLUSH_QUIET_S
        return True

    def apply(self, kind: str) -> None:
        getattr(self, f"_{kind}")()

    # process faults: each returns once the system is back (or records why not)

    def _bot(self) -> psutil.Process | None:
        bots = self.installation.bot_processes()
        return bots[0] if bots else None

    def _signal_bot(self, kind: str, signum: int) -> None:
        bot = self._bot()
        if bot is None:
            self.problems.append(f"{kind}: no bot process to signal")
            return
        self.log.process_times.append(time.time())
        self.log.last_bot_kill = time.time()
        bot.send_signal(signum)
        self._record(kind, f"pid {bot.pid}")
        # The next bot's first call to Telegram fails: it must wait that out, not crash.
        # (Not before the signal: waiting on the fake would time the kill to its answers.)
        self.telegram.post("/_control/inject", {"method": "getMe", "status": 502,
                                                "description": "Bad Gateway", "times": 1})  # fmt: skip
        with contextlib.suppress(psutil.TimeoutExpired):
            bot.wait(20)
        self.wait_running(exclude=bot.pid, what=f"a new bot after {kind}")

    def _kill_bot(self) -> None:
        self._signal_bot("kill_bot", signal.SIGKILL)

    def _sigterm_bot(self) -> None:
        self._signal_bot("sigterm_bot", signal.SIGTERM)

    def _kill_watchdog(self) -> None:
        watchdogs = self.installation.watchdog_processes()
        if not watchdogs:
            self.problems.append("kill_watchdog: no watchdog process")
            return
        self.log.process_times.append(time.time())
        for watchdog in watchdogs:
            watchdog.kill()
        self._record("kill_watchdog", f"pid {watchdogs[0].pid}")
        for watchdog in watchdogs:
            with contextlib.suppress(psutil.TimeoutExpired):
                watchdog.wait(10)
        time.sleep(0.5)
        result = self.installation.cli("start", "--wait", "60", "--json")
        if result.returncode != 0:
            self.problems.append(f"lunara start after a watchdog kill: exit {result.returncode}: "
                                 f"{result.stdout.strip()} {result.stderr.strip()}")  # fmt: skip
        self.log.process_times.append(time.time())
        self.wait_running(exclude=None, what="the bot after the watchdog came back")

    def _redis_restart(self) -> None:
        self.log.process_times.append(time.time())
        self._record("redis_restart")
        self.redis.restart()
        self.log.process_times.append(time.time())

    def _redis_flush(self) -> None:
        self.log.process_times.append(time.time())
        self.log.last_flush = time.time()
        self.redis.flush()
        self._record("redis_flush")

    def _corrupt_ledger(self) -> None:
        self.log.process_times.append(time.time())
        ledger = self.installation.home / "ledger.json"
        ledger.write_text('{"revision": 12, "state": "runn')
        self._record("corrupt_ledger")

    def wait_running(self, exclude: int | None, what: str) -> None:
        """Until one bot process (not `exclude`) runs and status says so."""

        def up() -> bool:
            bots = [p.pid for p in self.installation.bot_processes() if p.pid != exclude]
            if len(bots) != 1:
                return False
            document = self.installation.status(timeout=10) or {}
            return document.get("state") == "running" and document.get("pid") == bots[0]

        try:
            wait_for(up, RECOVERY_DEADLINE_S, what, poll_s=0.25)
        except TimeoutError as error:
            self.problems.append(str(error))

    # injected faults: the fakes misbehave, nothing to wait for

    def _telegram_409(self) -> None:
        self.telegram.post("/_control/inject", {"method": "getUpdates", "status": 409,
                                                "description": "Conflict: injected", "times": 2})  # fmt: skip
        self._record("telegram_409")

    def _telegram_429(self) -> None:
        self.telegram.post("/_control/inject", {"method": "sendMessage", "status": 429,
                                                "description": "Too Many Requests: retry after 1",
                                                "retry_after": 1, "times": 3})  # fmt: skip
        self._record("telegram_429")

    def _telegram_5xx(self) -> None:
        for method in ("sendMessage", "getUpdates"):
            self.telegram.post("/_control/inject", {"method": method, "status": 502,
                                                    "description": "Bad Gateway", "times": 2})  # fmt: skip
        self._record("telegram_5xx")

    def _telegram_stall(self) -> None:
        self.telegram.post("/_control/inject", {"method": "getUpdates", "status": 502,
                                                "description": "Bad Gateway",
                                                "stall_s": TELEGRAM_STALL_S})  # fmt: skip
        self.telegram.post("/_control/inject", {"method": "sendMessage", "status": 502,
                                                "description": "Bad Gateway", "stall_s": 6.0})  # fmt: skip
        self._record("telegram_stall")

    def _binance(self, path: str, body: dict[str, Any]) -> None:
        self.binance.post(path, json=body).raise_for_status()

    def _binance_429(self) -> None:
        for endpoint in ("order", "ticker/price"):
            self._binance("/_control/inject", {
                "endpoint": endpoint, "status": 429, "code": -1003,
                "msg": "Too many requests; please use the websocket.",
                "headers": {"Retry-After": "1"}, "times": 2,
            })  # fmt: skip
        self._record("binance_429")

    def _binance_1021(self) -> None:
        self._binance("/_control/skew", {"skew_ms": 7000})
        self._record("binance_1021", "server clock +7 s for one level")
        self.skew_reset_at = time.monotonic() + LEVEL_HOLD_S

    def _binance_timeout(self) -> None:
        self._binance("/_control/inject",
                      {"endpoint": "order", "status": 0, "stall_s": BINANCE_STALL_S})  # fmt: skip
        self._record("binance_timeout", f"next order stalls {BINANCE_STALL_S:g} s (bot times out)")

    def _binance_drop(self) -> None:
        self._binance("/_control/drop_next_order", {"mode": "close"})
        self._record("binance_drop", "next order executes, its reply is lost")

    def _gemini_429(self) -> None:
        self.gemini.post("/_control/inject", json={"status": 429, "times": 2}).raise_for_status()
        self._record("gemini_429")

    def _gemini_503(self) -> None:
        self.gemini.post("/_control/inject", json={"status": 503, "times": 2}).raise_for_status()
        self._record("gemini_503")

    def maintain(self) -> None:
        if self.skew_reset_at is not None and time.monotonic() >= self.skew_reset_at:
            self._binance("/_control/skew", {"skew_ms": 0})
            self.skew_reset_at = None


# -- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lot:
    """A symbol as the exchange lists it: its assets and its LOT_SIZE step."""

    base: str
    quote: str
    step: Decimal


def read_lots(binance: httpx.Client) -> dict[str, Lot]:
    """Each symbol's assets and lot step, from the fake exchange's own exchangeInfo."""
    reply = binance.get("/api/v3/exchangeInfo")
    reply.raise_for_status()
    lots = {}
    for symbol in reply.json()["symbols"]:
        lot = next(f for f in symbol["filters"] if f["filterType"] == "LOT_SIZE")
        lots[str(symbol["symbol"])] = Lot(
            str(symbol["baseAsset"]), str(symbol["quoteAsset"]), Decimal(lot["stepSize"])
        )
    return lots


@dataclass
class Collected:
    """Everything the checks read, gathered after the clean stop."""

    pushed: list[Pushed]
    confirmed_below: int
    replies: Counter[int]
    polls: list[dict[str, Any]]
    reply_texts: list[str]
    sent: list[dict[str, Any]]  # the fake's sendMessage records (reply_to, text, at)
    invoices: list[dict[str, Any]]  # the fake's sendInvoice records (reply_to, payload, at)
    orders: list[dict[str, Any]]  # the fake exchange's, each with its fills
    binance_stats: dict[str, Any]
    lots: dict[str, Lot]
    levels: list[Level]
    positions: list[dict[str, Any]]
    ledger_orders: dict[str, dict[str, Any]]
    saved_stops: dict[int, dict[str, Any]]
    live_stops: dict[int, StopState]
    probes: list[Probe]
    rss: list[tuple[float, int, float]]
    faults: FaultLog
    fault_problems: list[str]
    restarts: int | None
    final_status: dict[str, Any] | None
    stop_exit: int
    home: Path
    secrets: dict[str, str]
    users: int
    minutes: float
    run_started: float
    run_ended: float
    load_window: tuple[float, float]  # monotonic: the faults and the load (not the drain)
    recorded_payments: set[str]  # charge ids in the payments table
    load_errors: list[str]
    outbox: list[dict[str, Any]]  # every outbox row: chat_id, text, state, priority


def open_accounts(binance: httpx.Client, users: Sequence[User]) -> None:
    """Every user's key pair and USDT at the fake exchange (keys are validated live)."""
    for user in users:
        binance.post(
            "/_control/account",
            json={"api_key": user.api_key, "secret": user.api_secret,
                  "balances": {"USDT": START_USDT}},
        ).raise_for_status()  # fmt: skip


async def seed_users(database: Path, encryption_key: str, users: Sequence[User]) -> None:
    """Users as /start, /setkeys and the trailing /settings leave them, written directly."""
    from lunara.crypto import KeyRing
    from lunara.storage import credentials, user_settings
    from lunara.storage import users as user_store
    from lunara.storage.database import open_database

    keyring = KeyRing([encryption_key])
    db = await open_database(database)
    try:
        for user in users:
            await user_store.register(db, user.user_id, None)
            await credentials.store(db, keyring, user.user_id, credentials.Exchange.BINANCE,
                                    user.api_key, user.api_secret)  # fmt: skip
            await user_settings.save(
                db,
                user_settings.UserSettings(
                    user_id=user.user_id,
                    stoploss=PARAMS.stoploss,
                    trailing_stop_positive=PARAMS.trailing_stop_positive,
                    trailing_stop_positive_offset=PARAMS.trailing_stop_positive_offset,
                    trailing_only_offset_is_reached=PARAMS.trailing_only_offset_is_reached,
                ),
            )
    finally:
        await db.close()


def onboard(telegram: Telegram, users: Sequence[User]) -> None:
    """/start, /setkeys and the trailing /settings through Telegram, as a trader would."""
    for user in users:
        telegram.push(user.user_id, "/start", "start")
        telegram.push(user.user_id, f"/setkeys {user.api_key} {user.api_secret}", "setkeys")
    wait_answered(telegram, 180, "every /start and /setkeys to be answered")
    for user in users:
        telegram.push(user.user_id, SETTINGS_COMMAND, "trailing_settings")
    wait_answered(telegram, 180, "every trailing-settings command to be answered")


def wait_answered(telegram: Telegram, timeout_s: float, what: str) -> None:
    with telegram.lock:
        wanted = [p.message_id for p in telegram.pushed]
    wait_for(lambda: all(telegram.replies()[m] >= 1 for m in wanted), timeout_s, what, 0.5)


def drain(telegram: Telegram, deadline_s: float) -> None:
    """Until every pushed update is confirmed and every accepted command answered."""
    with telegram.lock:
        last_update = max(p.update_id for p in telegram.pushed)
    with contextlib.suppress(TimeoutError):
        wait_for(
            lambda: int(telegram.get("/_control/stats")["confirmed_below"]) > last_update,
            deadline_s, "the poller to confirm every update", 0.5,
        )  # fmt: skip
    progress = {"replies": -1, "at": time.monotonic()}

    def done_or_stuck() -> bool:
        if settled(telegram):
            return True
        total = sum(telegram.replies().values())
        if total != progress["replies"]:
            progress.update(replies=total, at=time.monotonic())
        return time.monotonic() - progress["at"] > DRAIN_STUCK_S

    with contextlib.suppress(TimeoutError):
        wait_for(done_or_stuck, deadline_s, "every accepted command answered", 1.0)


def settled(telegram: Telegram) -> bool:
    confirmed = int(telegram.get("/_control/stats")["confirmed_below"])
    replies = telegram.replies()
    with telegram.lock:
        return all(replies[p.message_id] >= 1 for p in telegram.pushed if p.update_id < confirmed)


def run(args: argparse.Namespace, workdir: Path) -> Collected:
    rng = random.Random(args.seed)
    children = Children()
    home = workdir / "home"
    home.mkdir(mode=0o700)
    users = make_users(args.users, random.Random(rng.random()))
    installation: Installation | None = None
    try:
        redis_server = RedisServer(children, workdir)
        redis_server.start()
        telegram_url = start_fake(children, "telegram_api", workdir, "--max-poll-s", "10")
        binance_url = start_fake(
            children, "binance_api", workdir,
            *[f"--price={s}={p:.2f}" for s, p in START_PRICES.items()],
        )  # fmt: skip
        gemini_url = start_fake(children, "gemini_api", workdir, "--api-key", GEMINI_KEY)
        telegram = Telegram(telegram_url)
        binance = httpx.Client(base_url=binance_url, trust_env=False, timeout=30)
        gemini = httpx.Client(base_url=gemini_url, trust_env=False, timeout=30)

        from lunara.crypto import generate_key

        encryption_key = generate_key()
        env = child_env(home)
        env.update({
            "LUNARA_MODE": "live",
            "LUNARA_MARKET": "binance",
            "LUNARA_SYMBOLS": ",".join(START_PRICES),
            "LUNARA_TICK_SECONDS": TICK_SECONDS,
            "LUNARA_ENCRYPTION_KEY": encryption_key,
            "LUNARA_RATE_LIMIT_PER_MINUTE": "30",
            "REDIS_URL": redis_server.url,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": telegram_url,
            "BINANCE_API_BASE_URL": binance_url,
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_API_BASE_URL": gemini_url,
            "LOG_LEVEL": "INFO",
        })  # fmt: skip
        installation = Installation(home, write_manifest(workdir), env)
        secrets = {"telegram token": TOKEN, "telegram token secret": TOKEN.split(":", 1)[1],
                   "gemini key": GEMINI_KEY, "encryption key": encryption_key}  # fmt: skip
        for user in users:
            secrets[f"api key of {user.user_id}"] = user.api_key
            secrets[f"api secret of {user.user_id}"] = user.api_secret

        onboarded = users[: args.onboard if args.onboard is not None else len(users)]
        open_accounts(binance, users)
        asyncio.run(seed_users(home / "lunara.db", encryption_key, users[len(onboarded) :]))
        started = time.monotonic()
        result = installation.cli("start", "--wait", "90", "--json")
        if result.returncode != 0:
            raise SystemExit(f"lunara start failed ({result.returncode}): {result.stdout}"
                             f"{result.stderr}\n{log_tail(home)}")  # fmt: skip
        print(f"  bot running after {time.monotonic() - started:.1f} s", flush=True)
        staircase = PriceStaircase(binance, rng.randrange(2**32))
        staircase.step()
        onboard(telegram, onboarded)
        print(f"  {len(onboarded)} users onboarded through Telegram after "
              f"{time.monotonic() - started:.1f} s ({len(users) - len(onboarded)} seeded in "
              f"the database before the start)", flush=True)  # fmt: skip

        observers = Observers(installation)
        injector = FaultInjector(installation, redis_server, telegram, binance, gemini)
        load = CommandLoad(telegram, users, args.rate, rng.randrange(2**32))
        plan = plan_faults(args.minutes, rng) if getattr(args, "faults", True) else []
        observers.start()
        load.start()
        run_started = time.time()
        load_started = time.monotonic()
        drive(args.minutes * 60, staircase, injector, plan)
        load_window = (load_started, time.monotonic())
        load.stop()
        drain(telegram, 90)
        restarts_status = installation.status()
        run_ended = time.time()
        observers.stop()
        stop = installation.cli("stop", "--timeout", "60", "--json")
        print(f"  lunara stop: exit {stop.returncode}", flush=True)

        sent = telegram.get("/_control/sent")
        invoices = telegram.get("/_control/invoices")
        stats = telegram.get("/_control/stats")
        database = home / "lunara.db"
        positions, ledger_orders, saved, paid = read_database(database)
        return Collected(
            pushed=list(telegram.pushed),
            confirmed_below=int(stats["confirmed_below"]),
            replies=telegram.replies(),
            polls=telegram.get("/_control/polls"),
            reply_texts=[str(m.get("text", "")) for m in sent] + [json.dumps(i) for i in invoices],
            sent=sent,
            invoices=invoices,
            orders=binance.get("/_control/orders").json(),
            binance_stats=binance.get("/_control/stats").json(),
            lots=read_lots(binance),
            levels=staircase.levels,
            positions=positions,
            ledger_orders=ledger_orders,
            saved_stops=saved,
            live_stops=read_redis_stops(redis_server.url),
            probes=observers.probes,
            rss=observers.rss,
            faults=injector.log,
            fault_problems=injector.problems,
            restarts=None if restarts_status is None else restarts_status.get("restarts"),
            final_status=restarts_status,
            stop_exit=stop.returncode,
            home=home,
            secrets=secrets,
            users=len(users),
            minutes=args.minutes,
            run_started=run_started,
            run_ended=run_ended,
            load_window=load_window,
            recorded_payments=paid,
            load_errors=load.errors,
            outbox=read_outbox(database),
        )
    finally:
        if installation is not None:
            with contextlib.suppress(Exception):
                installation.cli("stop", "--timeout", "20", timeout=60)
            installation.kill_everything()
        children.stop_all()


def drive(
    seconds: float,
    staircase: PriceStaircase,
    injector: FaultInjector,
    plan: list[tuple[float, str]],
) -> None:
    """Step the prices; apply due faults at level starts; hold each level with a live bot."""
    started = time.monotonic()
    pending = list(plan)
    while time.monotonic() - started < seconds:
        staircase.step()
        elapsed = time.monotonic() - started
        due = [item for item in pending if item[0] <= elapsed]
        process_done = False
        for item in due:
            kind = item[1]
            if kind in PROCESS_FAULTS:
                if process_done or not injector.may_apply(kind):
                    continue
                process_done = True
            pending.remove(item)
            try:
                injector.apply(kind)
            except (httpx.HTTPError, OSError, psutil.Error) as error:
                injector.problems.append(f"{kind}: {error!r}")
        injector.maintain()
        time.sleep(LEVEL_HOLD_S)  # held after any recovery, so a live bot sees the level
    for _, kind in pending:
        injector.problems.append(f"{kind}: not injected before the end of the run")


def read_database(
    database: Path,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[int, dict[str, Any]], set[str]]:
    """Positions, ledger orders by client id, saved stops by position, recorded charge ids."""
    with contextlib.closing(
        sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    ) as db:
        db.row_factory = sqlite3.Row
        positions = [dict(row) for row in db.execute("SELECT * FROM positions")]
        orders = {
            str(row["client_order_id"]): dict(row) for row in db.execute("SELECT * FROM orders")
        }
        stops = {
            int(row["position_id"]): dict(row) for row in db.execute("SELECT * FROM trailing_stops")
        }
        paid = {str(row["charge_id"]) for row in db.execute("SELECT charge_id FROM payments")}
    return positions, orders, stops, paid


def read_outbox(database: Path) -> list[dict[str, Any]]:
    """Every row of the bot's outbox (a broadcast's rows with the broadcast's text)."""
    with contextlib.closing(
        sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    ) as db:
        db.row_factory = sqlite3.Row
        return [
            dict(row)
            for row in db.execute(
                "SELECT o.chat_id, COALESCE(o.text, b.text) AS text, o.invoice, o.state,"
                " o.priority FROM outbox AS o LEFT JOIN broadcasts AS b ON b.id = o.broadcast_id"
            )
        ]


def read_redis_stops(url: str) -> dict[int, StopState]:
    from redis.asyncio import Redis

    from lunara.trading.stops import read_live_stops

    async def read() -> dict[int, StopState]:
        client = Redis.from_url(url)
        try:
            return {k: v.state for k, v in (await read_live_stops(client)).items()}
        finally:
            await client.aclose()

    return asyncio.run(read())


def log_tail(home: Path, lines: int = 30) -> str:
    logs = sorted((home / "logs").glob("*")) if (home / "logs").exists() else []
    return "\n".join(
        f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
        for p in logs
        if p.is_file()
    )


# -- checks ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    passed: bool | None  # None: measured, not judged in this run
    figures: list[str]


def check_orders(data: Collected) -> Verdict:
    ids = [str(o["clientOrderId"]) for o in data.orders]
    by_id = [i for i, n in Counter(ids).items() if n > 1]
    owner = {cid: row["user_id"] for cid, row in data.ledger_orders.items()}
    exchange = Counter(
        (owner.get(str(o["clientOrderId"])), o["symbol"], o["side"], Decimal(o["executedQty"]))
        for o in data.orders
    )
    # Each exchange order must be a filled order of some position. A position holds what
    # its buy executed less a commission in the base asset, and an exit can be partial,
    # so orders are matched by the executed quantity their ledger row records, and the
    # position by its id.
    positions = {position["id"]: position for position in data.positions}
    accounted: Counter[tuple[Any, ...]] = Counter()
    for row in data.ledger_orders.values():
        position = positions.get(row["position_id"])
        if row["status"] != "filled" or position is None:
            continue
        key = (position["user_id"], position["symbol"], row["side"], Decimal(row["quantity"]))
        accounted[key] += 1
    extra = exchange - accounted
    buys = Counter(owner.get(str(o["clientOrderId"])) for o in data.orders if o["side"] == "BUY")
    commands = Counter(p.user_id for p in data.pushed if p.kind == "buy")
    too_many = {u: n for u, n in buys.items() if u is None or n > commands[u]}
    unsettled = [
        c
        for c, row in data.ledger_orders.items()
        if row["status"] in ("pending", "sent", "unknown")
    ]
    sells = sum(1 for o in data.orders if o["side"] == "SELL")
    figures = [
        f"{len(ids)} orders at the exchange ({len(ids) - sells} buys, {sells} sells), "
        f"{data.binance_stats.get('duplicate_attempts', 0)} reused client ids refused by it",
        f"duplicates by client order id: {len(by_id)}",
        f"duplicates by content (exchange orders no position accounts for): "
        f"{sum(extra.values())} {dict(list(extra.items())[:5]) if extra else ''}",
        f"users with more buys than /buy commands: {len(too_many)}",
        f"ledger orders left unsettled after the stop: {len(unsettled)}",
    ]
    passed = not by_id and not extra and not too_many
    return Verdict("zero duplicate orders", passed, figures)


def entry_level(entry: float, opened_at: float, symbol: str, levels: Sequence[Level]) -> int:
    """The index of the level a position was filled at: the last one sent before it
    opened or, if a level changed while the order filled, the one whose price it got."""
    start = 0
    for index, level in enumerate(levels):
        if level.sent_at <= opened_at:
            start = index
    for index in range(start, -1, -1):
        if float(levels[index].prices[symbol]) == entry or levels[index].set_at <= opened_at:
            return index
    return start


def replayed_stops(
    entry: float, opened_at: float, symbol: str, levels: Sequence[Level]
) -> list[tuple[int, StopState]]:
    """Replay: the stop after each level, from the one the position was filled at on."""
    state = initial_state(entry, PARAMS, 0.0)
    replayed = []
    for index in range(entry_level(entry, opened_at, symbol, levels), len(levels)):
        state = advance(state, float(levels[index].prices[symbol]), PARAMS, 0.0, FEE_RATE)
        replayed.append((index, state))
    return replayed


def expected_stop(
    entry: float, opened_at: float, symbol: str, levels: Sequence[Level]
) -> StopState:
    """The stop a position reaches through every level it lived through."""
    replayed = replayed_stops(entry, opened_at, symbol, levels)
    return replayed[-1][1] if replayed else initial_state(entry, PARAMS, 0.0)


def check_stops(data: Collected) -> Verdict:
    open_positions = [p for p in data.positions if p["status"] == "open"]
    wrong = []
    activated = 0
    for position in open_positions:
        entry = float(Decimal(position["entry_price"]))
        expected = expected_stop(
            entry, float(position["opened_at"]), position["symbol"], data.levels
        )
        saved = data.saved_stops.get(int(position["id"]))
        if saved is None:
            wrong.append(f"position {position['id']}: no saved stop")
            continue
        got = (float(saved["peak_price"]), float(saved["stop_price"]), bool(saved["activated"]))
        activated += got[2]
        if float(saved["entry_price"]) != entry or got != expected.levels():
            wrong.append(f"position {position['id']} {position['symbol']} entry {entry}: "
                         f"stored {got}, replay {expected.levels()}")  # fmt: skip
        live = data.live_stops.get(int(position["id"]))
        if live is not None and live.levels() != got:
            wrong.append(f"position {position['id']}: Redis {live.levels()} != SQLite {got}")
    closed = [p for p in data.positions if p["status"] == "closed"]
    reasons = Counter(str(p.get("exit_reason")) for p in closed)
    figures = [
        f"{len(data.levels)} price levels; {len(open_positions)} open positions checked "
        f"({activated} with an activated trailing stop); {len(closed)} closed "
        f"({', '.join(f'{n} {r}' for r, n in reasons.most_common())})",
        f"stops differing from the replay: {len(wrong)}",
        *[f"    {line}" for line in wrong[:10]],
    ]
    return Verdict("trailing stops equal the replay", not wrong, figures)


def first_trigger(position: dict[str, Any], levels: Sequence[Level]) -> int | None:
    """The first level at which the replayed stop of `position` is triggered (advanced by
    the level's price, then compared with it, as each tick does) while it was open."""
    entry = float(Decimal(position["entry_price"]))
    closed_at = position["closed_at"]
    replayed = replayed_stops(entry, float(position["opened_at"]), position["symbol"], levels)
    for index, state in replayed:
        if closed_at is not None and levels[index].sent_at > float(closed_at):
            break
        if is_triggered(state, float(levels[index].prices[position["symbol"]])):
            return index
    return None


def check_exits(data: Collected) -> Verdict:
    """0 stuck: no position is left open under a stop that its market has triggered.

    What the end of the run can prove: the last price level is held LEVEL_HOLD_S with a
    live bot, then through the drain until the clean stop, with no fault left (the last
    is injected 20 s before the end of the load), so every tick in that time sees it. A
    position still open at the stop whose replayed stop (the pure rules over the levels
    it lived through; check_stops holds the bot's stored stop to the same replay) is at
    or above that last price had each of those ticks to sell it and none did: it is
    stuck. Judged: stuck == 0, with the last level held at least LEVEL_HOLD_S.

    A stop triggered at an earlier level and not exited before the price came back above
    it is counted, not judged: a fault at that level (a clock skew refusing every signed
    request for the whole level, an order stalled past the timeout holding the tick) can
    rightly keep an exit from going through; the position stays under its stop, and the
    next fall through it sells.
    """
    final = data.levels[-1]
    held_s = data.run_ended - final.set_at
    stuck: list[str] = []
    missed: list[str] = []
    exited = 0
    delays: list[float] = []
    for position in data.positions:
        triggered = first_trigger(position, data.levels)
        if triggered is None:
            continue
        symbol = position["symbol"]
        if position["status"] == "closed":
            exited += 1
            if position["closed_at"] is not None and position["exit_reason"] != "manual":
                delays.append(float(position["closed_at"]) - data.levels[triggered].set_at)
            continue
        stop = expected_stop(float(Decimal(position["entry_price"])),
                             float(position["opened_at"]), symbol, data.levels)  # fmt: skip
        attempts = Counter(
            str(row["status"])
            for row in data.ledger_orders.values()
            if row["position_id"] == position["id"] and row["side"] == "SELL"
        )
        line = (f"position {position['id']} {symbol}: stop {stop.stop_price:.2f} first hit at "
                f"level {triggered} ({data.levels[triggered].prices[symbol]}), last price "
                f"{final.prices[symbol]}; exit orders {dict(attempts) or 'none'}")  # fmt: skip
        if is_triggered(stop, float(final.prices[symbol])):
            stuck.append(line)
        else:
            missed.append(line)
    hit = exited + len(stuck) + len(missed)
    delays.sort()
    figures = [
        f"{hit} positions hit their stop in the replay while open: {exited} exited, "
        f"{len(stuck)} stuck "
        f"(open under a stop the last price triggers; that price held {held_s:.0f} s, "
        f"{held_s / float(TICK_SECONDS):.0f} ticks, before the stop)",
        f"open with a stop hit at an earlier level, the price now above it (not judged): "
        f"{len(missed)}",
        "stop exits after the level that first triggered them: "
        + (f"median {delays[len(delays) // 2]:.1f} s, max {delays[-1]:.1f} s" if delays
           else "none"),
        *[f"    stuck: {line}" for line in stuck[:10]],
        *[f"    earlier: {line}" for line in missed[:5]],
    ]  # fmt: skip
    return Verdict("0 stuck: every stop the market triggered was exited",
                   not stuck and held_s >= LEVEL_HOLD_S, figures)  # fmt: skip


@dataclass
class Flows:
    """What a position's fills at the exchange moved on the account: quote (a commission
    paid in it included), base (a commission taken from it included), and commissions
    paid in any other asset (BNB)."""

    quote: Decimal = Decimal(0)
    base: Decimal = Decimal(0)
    other_fees: dict[str, Decimal] = field(default_factory=dict)
    fills: int = 0


def exchange_orders_by_position(data: Collected) -> dict[int, list[dict[str, Any]]]:
    """The exchange's orders of each position, found by the client ids of its ledger
    orders (a client id names its trader, so it is unique across the run)."""
    position_of: dict[str, int] = {}
    for client_id, row in data.ledger_orders.items():
        if row["position_id"] is not None:
            position_of[client_id] = int(row["position_id"])
    for position in data.positions:
        for column in ("entry_client_order_id", "exit_client_order_id"):
            if position[column]:
                position_of.setdefault(str(position[column]), int(position["id"]))
    found: dict[int, list[dict[str, Any]]] = {}
    for order in data.orders:
        position_id = position_of.get(str(order["clientOrderId"]))
        if position_id is not None:
            found.setdefault(position_id, []).append(order)
    return found


def fill_flows(orders: Sequence[dict[str, Any]], lot: Lot) -> Flows:
    """Sum the exchange's fills of some orders, each at its own price and commission."""
    flows = Flows()
    for order in orders:
        bought = 1 if order["side"] == "BUY" else -1
        for fill in order.get("fills") or []:
            quantity, price = Decimal(fill["qty"]), Decimal(fill["price"])
            fee, asset = Decimal(fill["commission"]), str(fill["commissionAsset"])
            flows.base += bought * quantity
            flows.quote -= bought * quantity * price
            if asset == lot.quote:
                flows.quote -= fee
            elif asset == lot.base:
                flows.base -= fee
            else:
                flows.other_fees[asset] = flows.other_fees.get(asset, Decimal(0)) + fee
            flows.fills += 1
    return flows


def check_residue(data: Collected) -> Verdict:
    """The base left behind by each closed position is at most one LOT_SIZE step.

    A position holds what its buy received (the commission taken in the base asset is
    not there to sell), and an exit sells whole steps only, so less than one step may
    stay on the account as dust; more means a position was not sold out. Judged from
    both sides: the residue the bot recorded when it closed the position, and the base
    the exchange's fills of that position left (bought, less the commission taken from
    it, less sold). The step is the symbol's LOT_SIZE in the fake's exchangeInfo. Out
    of [0, step] on either side fails, as does a recorded residue that differs from the
    fills' by more than PNL_TOLERANCE of the base.
    """
    exchange = exchange_orders_by_position(data)
    closed = [p for p in data.positions if p["status"] == "closed"]
    worst = Decimal(0)
    bad: list[str] = []
    differ: list[str] = []
    for position in closed:
        lot = data.lots[position["symbol"]]
        left = fill_flows(exchange.get(int(position["id"]), []), lot).base
        label = f"position {position['id']} {position['symbol']}"
        recorded = position["residue_quantity"]
        if recorded is None:
            bad.append(f"{label}: closed with no residue recorded")
            continue
        for source, residue in (("recorded", Decimal(recorded)), ("fills", left)):
            worst = max(worst, abs(residue) / lot.step)
            if not 0 <= residue <= lot.step:
                bad.append(f"{label}: {source} residue {residue} "
                           f"({residue / lot.step:.2f} steps of {lot.step})")  # fmt: skip
        if abs(Decimal(recorded) - left) > PNL_TOLERANCE:
            differ.append(f"{label}: recorded {recorded}, fills {left}")
    figures = [
        f"{len(closed)} closed positions; largest residue {worst:.3f} lot steps (limit 1)",
        f"outside [0, 1 step]: {len(bad)}; recorded residue not the fills': {len(differ)}",
        *[f"    {line}" for line in bad[:8]],
        *[f"    {line}" for line in differ[:5]],
    ]
    return Verdict("base residue per closed position <= one lot step",
                   not bad and not differ, figures)  # fmt: skip


def check_pnl(data: Collected) -> Verdict:
    """Every closed position's realised P&L equals what the exchange's fills of it say.

    Recomputed from the fake exchange's own record of the position's orders (each fill's
    price, quantity and commission), not from the bot's: quote received on the sell
    fills minus quote paid on the buy fills, minus every commission paid in the quote
    asset. A commission taken in the base asset needs no valuing: the base it took was
    never there to sell, so the quote the sells brought is already short of it. One paid
    in a third asset (BNB) moves no quote; the bot records it per asset, and the count
    is shown. Equal within PNL_TOLERANCE of the quote; a position closed with no P&L
    recorded, or with no fills at the exchange, is a mismatch.
    """
    exchange = exchange_orders_by_position(data)
    closed = [p for p in data.positions if p["status"] == "closed"]
    largest = Decimal(0)
    mismatched: list[str] = []
    other_fees = 0
    total = Decimal(0)
    for position in closed:
        flows = fill_flows(exchange.get(int(position["id"]), []), data.lots[position["symbol"]])
        other_fees += bool(flows.other_fees)
        label = f"position {position['id']} {position['symbol']}"
        recorded = position["realized_pnl"]
        if recorded is None or flows.fills == 0:
            mismatched.append(f"{label}: P&L {recorded}, {flows.fills} fills at the exchange")
            continue
        difference = abs(Decimal(recorded) - flows.quote)
        largest = max(largest, difference)
        total += flows.quote
        if difference > PNL_TOLERANCE:
            mismatched.append(f"{label}: recorded {recorded}, fills {flows.quote}")
    figures = [
        f"{len(closed)} closed positions, P&L from the fills {total:+.8f} in all; mismatches "
        f"over {PNL_TOLERANCE:f}: {len(mismatched)}; largest difference {largest:f}",
        f"commissions paid in a third asset (outside the quote flows): {other_fees} positions",
        *[f"    {line}" for line in mismatched[:8]],
    ]
    return Verdict("realised P&L equals the fills", not mismatched, figures)


def check_replies(data: Collected) -> Verdict:
    accepted = [p for p in data.pushed if p.update_id < data.confirmed_below]
    none = [p for p in accepted if data.replies[p.message_id] == 0]
    twice = [p for p in accepted if data.replies[p.message_id] > 1]
    caught = {p.message_id: gap for p in twice if (gap := caught_by_kill(data, p)) is not None}
    many = [p for p in twice if p.message_id not in caught]
    unconfirmed = len(data.pushed) - len(accepted)
    paid = [p for p in accepted if p.kind == "payment"]
    unrecorded = [p for p in paid if p.text not in data.recorded_payments]
    gaps = polling_gaps(data)
    figures = [
        f"{len(data.pushed)} commands and payments pushed, {len(accepted)} accepted, "
        f"{unconfirmed} never confirmed",
        f"accepted with no reply: {len(none)}; with more than one: {len(many)}",
        f"answered again because a SIGKILL fell between an answer's send and its record: "
        f"{len(caught)}"
        + "".join(
            f" (first answer {gap * 1000:+.0f} ms before the kill)" for gap in caught.values()
        ),
        f"payments accepted: {len(paid)}, recorded: {len(paid) - len(unrecorded)}",
        f"a live bot went more than {POLL_GAP_LIMIT_S:g} s without polling: {len(gaps)} times",
        *[f"    bot pid {pid}: no getUpdates for {gap:.0f} s" for pid, gap in gaps[:5]],
        *[f"    no reply: {p.kind} {p.text[:40]!r} (update {p.update_id})" for p in none[:5]],
        *[f"    not recorded: payment {p.text} (update {p.update_id})" for p in unrecorded[:5]],
        *[line for p in many[:5] for line in describe_replies(data, p)],
    ]
    passed = not none and not many and not unconfirmed and not unrecorded and not gaps
    return Verdict("exactly one reply per accepted command and payment; payments recorded",
                   passed, figures)  # fmt: skip


ANSWER_PRIORITY = 0  # lunara.storage.outbox.Priority.ANSWER


def check_notifications(data: Collected) -> Verdict:
    """Notifications delivered vs produced: each outbox row other than an answer, by
    (chat, text), against the messages Telegram took for that chat with that text."""
    produced: Counter[tuple[int, str]] = Counter()
    marked_sent: Counter[tuple[int, str]] = Counter()
    states: Counter[str] = Counter()
    written = set()
    for row in data.outbox:
        key = (int(row["chat_id"]), str(row["text"]))
        written.add(key)
        if row["text"] is None or int(row["priority"]) == ANSWER_PRIORITY:
            continue
        produced[key] += 1
        states[str(row["state"])] += 1
        if row["state"] == "sent":
            marked_sent[key] += 1
    delivered: dict[tuple[int, str], list[float]] = {}
    strays = []
    for message in data.sent:
        key = (int(message["chat_id"]), str(message.get("text", "")))
        if key in produced:
            delivered.setdefault(key, []).append(float(message.get("at") or 0.0))
        elif message.get("reply_to") is None and key not in written:
            strays.append(message)
    kills = [at for at, kind, _ in data.faults.injected if kind == "kill_bot"]
    once = lost = caught = uncaught = 0
    for key, sent_rows in marked_sent.items():
        moments = sorted(delivered.get(key, []))
        once += min(len(moments), sent_rows)
        lost += max(sent_rows - len(moments), 0)
        for earlier, extra in zip(moments, moments[sent_rows:], strict=False):
            if any(abs(earlier - at) <= CAUGHT_WINDOW_S and extra > at for at in kills):
                caught += 1
            else:
                uncaught += 1
    figures = [
        f"produced {sum(produced.values())} (not answers), delivered {once}; marked sent but "
        f"never delivered: {lost}; delivered again: {uncaught} (+{caught} a SIGKILL caught "
        "between the send and its record)",
        f"not delivered: still queued {states['queued']}, to users who blocked the bot "
        f"{states['blocked']}, refused by Telegram {states['failed']}",
        f"sent without an outbox row: {len(strays)}",
        *[f"    stray to {m['chat_id']}: {str(m.get('text', ''))[:50]!r}" for m in strays[:5]],
    ]
    return Verdict("notifications delivered vs produced", not lost and not uncaught and not strays,
                   figures)  # fmt: skip


def answers_to(data: Collected, command: Pushed) -> list[dict[str, Any]]:
    """The messages and invoices threaded to `command`, in the order Telegram got them."""
    answers = [*data.sent, *({**i, "text": f"invoice {i.get('payload')}"} for i in data.invoices)]
    threaded = [a for a in answers if a.get("reply_to") == command.message_id]
    return sorted(threaded, key=lambda a: float(a.get("at") or 0.0))


def caught_by_kill(data: Collected, command: Pushed) -> float | None:
    """How long before a bot SIGKILL (negative: after it) the first of exactly two
    answers reached Telegram, if that was within CAUGHT_WINDOW_S and the second answer
    came after the kill.

    That is the one duplicate no bot can avoid: the Bot API has no idempotent send, so
    an answer sent but not yet recorded when the process dies is sent again by the next
    run's replay (the inbox chooses answering twice over never answering). The fake may
    take in an answer the bot wrote just before it died a little after the kill. Anything
    else answered twice is a bug.
    """
    answers = answers_to(data, command)
    if len(answers) != 2:
        return None
    first, second = (float(a.get("at") or 0.0) for a in answers)
    for at, kind, _ in data.faults.injected:
        if kind == "kill_bot" and abs(at - first) <= CAUGHT_WINDOW_S and second > at:
            return at - first
    return None


def describe_replies(data: Collected, command: Pushed) -> list[str]:
    """A command answered more than once: when each answer came, after which fault."""
    lines = [f"    {data.replies[command.message_id]} replies: {command.kind} {command.text[:40]!r} "
             f"(update {command.update_id})"]  # fmt: skip
    for answer in answers_to(data, command):
        at = float(answer.get("at") or 0.0)
        text = str(answer.get("text", "")).replace("\n", " ")[:60]
        lines.append(f"      {clock(at)} ({after_fault(data, at)}): {text!r}")
    return lines


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def after_fault(data: Collected, at: float) -> str:
    """Which faults came in the 30 s before `at`, the latest first."""
    recent = [(t, kind) for t, kind, _ in data.faults.injected if at - 30 <= t <= at]
    if not recent:
        return "no fault in the 30 s before"
    return ", ".join(f"{at - t:.1f} s after {kind}" for t, kind in reversed(recent[-3:]))


def polling_gaps(data: Collected) -> list[tuple[int, float]]:
    """(bot pid, seconds) for each stretch one live bot spent without polling Telegram.

    The fake and this process share CLOCK_MONOTONIC, so its poll times compare with the
    RSS samples, which say which bot pid was alive when.
    """
    polls = sorted((float(p["started"]), float(p["ended"] or p["started"])) for p in data.polls)
    end_of_run = data.rss[-1][0] if data.rss else 0.0
    quiet = [(ended, started) for (_, ended), (started, _) in itertools.pairwise(polls)]
    if polls:
        quiet.append((max(ended for _, ended in polls), end_of_run))
    gaps = []
    for begin, end in quiet:
        if end - begin <= POLL_GAP_LIMIT_S:
            continue
        lives: dict[int, list[float]] = {}
        for t, pid, _ in data.rss:
            if begin <= t <= end:
                lives.setdefault(pid, []).append(t)
        for pid, times in lives.items():
            if times[-1] - times[0] > POLL_GAP_LIMIT_S:
                gaps.append((pid, times[-1] - times[0]))
    return gaps


def check_logs(data: Collected) -> tuple[Verdict, Verdict]:
    files = [p for p in (data.home / "logs").rglob("*") if p.is_file()]
    files += [data.home / name for name in ("audit.jsonl", "ledger.json")]
    trouble: list[str] = []
    leaks: Counter[str] = Counter()
    for path in files:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            if TROUBLE.search(line):
                trouble.append(f"{path.name}: {line.strip()[:150]}")
        for name, secret in data.secrets.items():
            if secret in text:
                leaks[f"{name} in {path.name}"] += 1
    replies = "\n".join(data.reply_texts)
    for name, secret in data.secrets.items():
        if secret in replies:
            leaks[f"{name} in replies"] += 1
    names = Counter(line.split(":", 1)[0] for line in trouble)
    exceptions = Verdict(
        "zero unhandled exceptions in the logs",
        not trouble,
        [f"Traceback/unexpected lines: {len(trouble)} ({dict(names)})",
         *[f"    {line}" for line in trouble[:8]]],
    )  # fmt: skip
    secrets = Verdict(
        "zero secrets in logs, replies, audit, ledger",
        not leaks,
        [f"{len(data.secrets)} secrets looked for in {len(files)} files and "
         f"{len(data.reply_texts)} replies; found: {sum(leaks.values())}",
         *[f"    {what}" for what in list(leaks)[:8]]],
    )  # fmt: skip
    return exceptions, secrets


def check_status(data: Collected) -> Verdict:
    slow = [p for p in data.probes if p.latency_s > STATUS_BUDGET_S or p.code is None]
    judged = wrong = 0
    examples = []
    for probe in data.probes:
        if any(abs(probe.at - t) < STATUS_GRACE_S for t in data.faults.process_times):
            continue
        if probe.truth_before != probe.truth_after or probe.code is None:
            continue  # a real transition during the probe
        judged += 1
        truth = probe.truth_after
        claims_running = probe.pid is not None and probe.state in ("running", "starting",
                                                                   "orphaned", "stopping")  # fmt: skip
        right = claims_running == bool(truth) and (probe.pid in truth if claims_running else True)
        if not right:
            wrong += 1
            examples.append(f"    {time.strftime('%H:%M:%S', time.localtime(probe.at))} "
                            f"state {probe.state} pid {probe.pid}, live bots {sorted(truth)}")  # fmt: skip
    latencies = sorted(p.latency_s for p in data.probes) or [0.0]
    figures = [
        f"{len(data.probes)} probes, {judged} judged; latency median "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"over {STATUS_BUDGET_S:g} s: {len(slow)}; wrong about the bot: {wrong}",
        *examples[:5],
        *[f"    slow: {clock(p.at)} {p.latency_s * 1000:.0f} ms, exit {p.code} "
          f"({after_fault(data, p.at)})" for p in slow[:5]],
    ]  # fmt: skip
    return Verdict("status within 1 s and never wrong", not slow and wrong == 0, figures)


def pooled_slope_mib_per_10min(groups: Sequence[Sequence[tuple[float, float]]]) -> float | None:
    """Least-squares slope shared by several series, each around its own mean.

    Every bot life has its own level (a restarted bot starts small); pooling the
    within-life deviations measures how RSS grows while a bot lives, not the restarts.
    """
    covariance = spread = 0.0
    count = 0
    for points in groups:
        if len(points) < 2:
            continue
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        covariance += sum((x - mean_x) * (y - mean_y) for x, y in points)
        spread += sum((x - mean_x) ** 2 for x, _ in points)
        count += len(points)
    if count < 10 or spread == 0:
        return None
    return covariance / spread * 600.0


def check_rss(data: Collected) -> Verdict:
    if not data.rss:
        return Verdict("bot RSS", False, ["no RSS samples"])
    peak = max(m for _, _, m in data.rss)
    judged_run = data.minutes >= SLOPE_MIN_RUN_MIN
    warmup = SLOPE_WARMUP_LONG_S if judged_run else SLOPE_WARMUP_S
    began, ended = data.load_window
    half = (began + ended) / 2
    born: dict[int, float] = {}
    for t, pid, _ in data.rss:
        born.setdefault(pid, t)
    lives: dict[int, list[tuple[float, float]]] = {}
    for t, pid, mib in data.rss:
        if half <= t <= ended and t >= born[pid] + warmup:
            lives.setdefault(pid, []).append((t, mib))
    slope = pooled_slope_mib_per_10min(list(lives.values()))
    samples = sum(len(points) for points in lives.values())
    judged = judged_run and slope is not None
    slope_ok = slope is not None and slope <= SLOPE_TARGET_MIB_PER_10MIN
    shown = "n/a" if slope is None else f"{slope:+.2f}"
    verdict = (
        "judged"
        if judged
        else f"not judged: needs a run of >= {SLOPE_MIN_RUN_MIN:.0f} min"
        if not judged_run
        else "NOT JUDGED: too few samples"
    )
    figures = [
        f"peak {peak:.1f} MiB (target <= {RSS_TARGET_MIB:.0f}); final {data.rss[-1][2]:.1f} MiB; "
        f"{len(born)} bot processes sampled",
        f"slope over the last half of the load ({samples} samples from {len(lives)} bot "
        f"lives, each after its first {warmup:.0f} s, pooled): {shown} MiB per 10 min (target <= "
        f"{SLOPE_TARGET_MIB_PER_10MIN:g}; {verdict})",
    ]
    passed = peak <= RSS_TARGET_MIB and (slope_ok if judged_run else True)
    return Verdict("bot RSS", passed, figures)


def write_rss(data: Collected, path: Path) -> None:
    """The RSS samples as CSV (seconds since the load began, bot pid, MiB), for a closer look."""
    began, _ = data.load_window
    lines = [f"{t - began:.1f},{pid},{mib:.2f}" for t, pid, mib in data.rss]
    path.write_text("seconds,pid,mib\n" + "\n".join(lines) + "\n", encoding="utf-8")


def check_restarts(data: Collected) -> Verdict:
    kills = data.faults.count(*BOT_FAULTS)
    watchdog_kills = data.faults.count("kill_watchdog")
    figures = [
        f"watchdog restarts {data.restarts}; bot SIGKILLs + SIGTERMs injected {kills} "
        f"(watchdog SIGKILLs {watchdog_kills}: adopted, not counted)",
        "faults: " + ", ".join(f"{k} {n}" for k, n in
                               sorted(Counter(k for _, k, _ in data.faults.injected).items())),
        *[f"    problem: {p}" for p in data.fault_problems[:8]],
    ]  # fmt: skip
    return Verdict("restarts counted equal kills injected",
                   data.restarts == kills and not data.fault_problems, figures)  # fmt: skip


def report(data: Collected) -> bool:
    verdicts = [check_orders(data), check_stops(data), check_exits(data), check_residue(data),
                check_pnl(data), check_replies(data), check_notifications(data),
                *check_logs(data), check_status(data),
                check_rss(data), check_restarts(data)]  # fmt: skip
    verdicts.append(Verdict("clean lunara stop", data.stop_exit == 0,
                            [f"exit {data.stop_exit}"]))  # fmt: skip
    print(f"soak: {data.minutes:g} min of faults and load, {data.users} users, live mode on the "
          f"fake Binance, tick {TICK_SECONDS} s, Redis + Telegram + Gemini fakes")  # fmt: skip
    if data.load_errors:
        print(f"  load generator errors: {len(data.load_errors)} (first: {data.load_errors[0]})")
    for verdict in verdicts:
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[verdict.passed]
        print(f"  [{mark}] {verdict.name}")
        for line in verdict.figures:
            print(f"         {line}")
    failed = [v.name for v in verdicts if v.passed is False]
    print(f"  {'FAIL: ' + '; '.join(failed) if failed else 'PASS'}")
    return not failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=6.0, help="commands per second")
    parser.add_argument("--onboard", type=int, default=None,
                        help="users onboarded through Telegram (/start, /setkeys, /settings); "
                        f"the rest are seeded in the database (default: all, "
                        f"{SHORT_ONBOARD} in runs under {SHORT_RUN_MIN:g} minutes)")  # fmt: skip
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (with bot-rss.csv, the RSS samples)",
    )
    args = parser.parse_args(argv)
    if args.onboard is None and args.minutes < SHORT_RUN_MIN:
        args.onboard = SHORT_ONBOARD
    print(f"soak seed {args.seed} (rerun with --seed {args.seed})", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="lunara-soak-"))
    try:
        data = run(args, workdir)
        if args.keep:
            write_rss(data, workdir / "bot-rss.csv")
        return 0 if report(data) else 1
    finally:
        if args.keep:
            print(f"  scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    sys.exit(main())
