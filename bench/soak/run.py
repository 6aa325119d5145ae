"""One soak from start to finish: bring the system up, drive the load and the faults,
stop cleanly, and collect everything the checks read."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.soak.cluster import (
    DEPLOYMENT,
    Children,
    Installation,
    Observers,
    Probe,
    RedisServer,
    child_env,
    start_fake,
    write_manifest,
)
from bench.soak.faults import PROCESS_FAULTS, FaultInjector, FaultLog, plan_faults
from bench.soak.load import (
    LEVEL_HOLD_S,
    START_PRICES,
    CommandLoad,
    Level,
    PriceStaircase,
    Pushed,
    Telegram,
    drain,
    make_users,
    onboard,
    open_accounts,
    seed_users,
)
from lunara.trading.trailing import StopState

TOKEN = "7312345678:AAH3soakTokenQ9ZxV0b1c2d3e4f5g6h7i8j9"
GEMINI_KEY = "gemini-soak-key-5b7e0c1d2a3f4e5d"
TICK_SECONDS = "0.5"
SHORT_RUN_MIN = 5.0
SHORT_ONBOARD = 40  # Telegram onboarding runs at ~10 commands/s; the short mode must be short


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


def read_redis_stops(url: str) -> dict[int, StopState]:
    from redis.asyncio import Redis

    from lunara.trading.stops import read_live_stops

    async def read() -> dict[int, StopState]:
        client = Redis.from_url(url)
        try:
            live = await read_live_stops(client, name=DEPLOYMENT)
            return {k: v.state for k, v in live.items()}
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
