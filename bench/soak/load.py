"""What the users of a soak do, and the market they trade in.

Users and their exchange accounts, onboarding through Telegram (or seeded in the
database for the short mode), the steady stream of commands with the payments that
follow invoices, the fake Bot API's control surface that carries them, and the seeded
price staircase that makes trailing stops activate and trigger.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from bench._common import wait_for
from lunara.trading.trailing import TrailingParams

FIRST_USER_ID = 300_001
START_PRICES = {"BTCUSDT": 50000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0}
START_USDT = "100000"
LEVEL_HOLD_S = 4.0  # each price level is held this long with a live bot (8 ticks)
SWING = 0.045  # prices swing ±4.5 % over PERIOD_LEVELS: stops activate, then trigger
PERIOD_LEVELS = 14
NOISE = 0.004
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
DRAIN_STUCK_S = 20.0  # stop waiting for replies once none came for this long


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
