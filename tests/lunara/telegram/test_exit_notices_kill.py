"""SIGKILL the real bot three times during a burst of 200 stop exits: every trader gets
the notice of their exit exactly once, but for the one case the Bot API cannot prevent.

200 traders each hold a paper BTCUSDT position under a 5 % stop loss, bought at 50,000
through the real order path. The bot runs as in production (`python -m lunara`, its own
process) on a replayed market whose one candle closes at 30,000, against the fake Bot
API with Telegram's flood limits in this process: its first tick triggers all 200
stops. The bot is killed first while the exits are being recorded (20 of them closed),
then after 70 and 140 notices arrived, and started again each time. Each exit's notice
is written in the exit's own transaction (`lunara.trading.notices`), so afterwards every
position is closed and each trader holds exactly one notice; a second copy is excused
(and counted) only when the first reached Telegram within `CAUGHT_WINDOW_S` of a kill
and the second came after it (sent, not yet marked sent, when the process died).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from lunara.storage import outbox as outbox_store
from lunara.storage import positions, users
from lunara.storage.database import open_database
from lunara.trading.model import OrderSide
from lunara.trading.orders import OrderPath, OrderRequest
from lunara.trading.paper import PaperExchange
from lunara.trading.stops import SqliteStopStore
from lunara.trading.trailing import TrailingParams
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import TOKEN, write_manifest
from tests.lunara.telegram.test_outbox_kill import REPO_ROOT, Bot, duplicates, wait_until

TRADERS = range(30_000, 30_200)
KILL_AMID_EXITS = 20  # positions closed when the first SIGKILL lands (of 200)
KILL_AFTER = (70, 140)  # notices delivered when each later SIGKILL lands
ENTRY = Decimal(50_000)
STOP = TrailingParams(stoploss=-0.05, trailing_stop=False)
NOTICE = "Stop loss hit: sold"


async def seed(database: Path) -> None:
    """200 traders, each with a position bought through the order path on paper."""
    db = await open_database(database)
    stop_db = await open_database(database)

    async def entry_price(symbols: object) -> dict[str, Decimal]:
        return {"BTCUSDT": ENTRY}

    async def params(user_id: int) -> TrailingParams:
        return STOP

    try:
        orders = OrderPath(db, SqliteStopStore(stop_db), default_stop_params=params)
        for user_id in TRADERS:
            await users.register(db, user_id, f"trader{user_id}")
            paper = PaperExchange(db, user_id, entry_price, fee_rate=Decimal("0.001"),
                                  slippage=Decimal(0), start_balance=Decimal(10_000))  # fmt: skip
            await orders.submit(
                paper,
                OrderRequest(user_id, "BTCUSDT", OrderSide.BUY, Decimal("0.01"),
                             ENTRY, stop_params=STOP),
            )  # fmt: skip
    finally:
        await stop_db.close()
        await db.close()


async def final_state(database: Path) -> tuple[int, dict[str, int]]:
    """Positions still open, and the outbox's rows by state."""
    db = await open_database(database)
    try:
        still_open = sum([len(await positions.list_open(db, user_id)) for user_id in TRADERS])
        return still_open, await outbox_store.counts(db)
    finally:
        await db.close()


@pytest.mark.slow
def test_sigkills_during_a_burst_of_200_stop_exits_deliver_each_notice_exactly_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    manifest = write_manifest(tmp_path / "manifest.json")
    prices = tmp_path / "crash.csv"
    prices.write_text("open_time,open,high,low,close,volume\n0,30000,30000,30000,30000,1\n")
    asyncio.run(seed(home / "lunara.db"))
    with FakeTelegram() as fake:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("LUNARA_", "TELEGRAM_", "GEMINI_", "BINANCE_", "REDIS_"))}  # fmt: skip
        env = keep | {
            "PYTHONPATH": str(REPO_ROOT),
            "LUNARA_HOME": str(home),
            "LUNARA_MANIFEST": str(manifest),
            "LUNARA_MARKET": f"replay:{prices}",
            "LUNARA_SYMBOLS": "BTCUSDT",
            "LUNARA_TICK_SECONDS": "1",
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": fake.base_url,
            "LOG_LEVEL": "INFO",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        bot = Bot(env, tmp_path, tmp_path / "bot.log")

        def notices() -> int:
            return sum(1 for m in fake.sent_messages() if m["text"].startswith(NOTICE))

        def closed() -> int:
            uri = f"{(home / 'lunara.db').resolve().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
                row = db.execute("SELECT COUNT(*) FROM positions WHERE status = 'closed'")
                return int(row.fetchone()[0])

        def polling(after: int) -> Callable[[], bool]:
            return lambda: fake.polls_by_token.get(TOKEN, 0) > after

        def reached(count: Callable[[], int], threshold: int) -> Callable[[], bool]:
            return lambda: count() >= threshold

        kills: list[float] = []
        open_at_kills: list[int] = []
        moments = [(reached(closed, KILL_AMID_EXITS), f"{KILL_AMID_EXITS} exits recorded")]
        moments += [(reached(notices, t), f"{t} notices") for t in KILL_AFTER]
        try:
            bot.start()
            for moment, what in moments:
                wait_until(moment, 60, what)
                kills.append(bot.kill())
                open_at_kills.append(asyncio.run(final_state(home / "lunara.db"))[0])
                polls = fake.polls_by_token.get(TOKEN, 0)
                bot.start()
                wait_until(polling(polls), 60, "the restarted bot to poll")
            wait_until(
                lambda: {m["chat_id"] for m in fake.sent_messages()} >= set(TRADERS),
                120,
                "a notice to every trader",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{bot.tail()}") from None
        finally:
            bot.stop()
        sent = fake.sent_messages()
        too_many = fake.too_many_requests

    by_trader: dict[int, list[float]] = defaultdict(list)
    for message in sent:
        if message["chat_id"] not in TRADERS:
            continue  # an admin's report of the previous run's end, say
        assert message["text"].startswith(NOTICE), message
        by_trader[int(message["chat_id"])].append(float(message["at"]))
    caught, uncaught = duplicates(by_trader, kills)
    print(f"notices: {len(sent)} to {len(by_trader)} traders; duplicates caught by a kill: "
          f"{len(caught)}; 429s: {too_many}; positions still open at each kill: "
          f"{open_at_kills}")  # fmt: skip
    assert set(by_trader) == set(TRADERS)
    assert uncaught == []
    assert open_at_kills[0] > 0  # the first kill fell amid the exits
    still_open, rows = asyncio.run(final_state(home / "lunara.db"))
    assert still_open == 0
    assert rows["queued"] == 0
    assert rows["sent"] >= len(TRADERS)
