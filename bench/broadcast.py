"""A broadcast to 10,000 users at Telegram's pace, against a bare paced client side by side.

    .venv/bin/python bench/broadcast.py [--recipients 10000]

Ours: the real bot (`python -m lunara`, its own process) with 10,000 active users in its
database; an admin sends /broadcast, the outbox sends one copy to each, and the admin
gets the summary. The peer, at the same time against its own server: a bare
python-telegram-bot client with AIORateLimiter (the library's answer to flood limits,
retrying a 429 up to 3 times) sending the same 10,000 messages, holding nothing on disk.
Both servers are tests/fakes/telegram_api.py with Telegram's flood limits (about 30
messages a second per bot, 1 a second per private chat).

Printed for both: messages per second sustained (first copy to last), 429s received,
duplicates and missing copies; the ratio of our rate to the peer's; the bot's RSS while
it sends (peak, and at the end). Targets: >= 28 messages/s, 0 429s, 0 duplicates,
0 missing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telegram.error import TelegramError  # noqa: E402
from telegram.ext import AIORateLimiter, ExtBot  # noqa: E402
from telegram.request import HTTPXRequest  # noqa: E402
from telegram.warnings import PTBDeprecationWarning  # noqa: E402

from lunara.storage import users  # noqa: E402
from lunara.storage.database import open_database, transaction  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402
from tests.lunara.telegram.conftest import ADMIN, TOKEN, write_manifest  # noqa: E402

PEER_TOKEN = "7398765432:AAPeerTokenForTheBenchmarkOnly000000"
TEXT = "Scheduled maintenance tonight at 22:00 UTC: trading pauses for 10 minutes."
FIRST_USER = 100_000
TARGET_RATE = 28.0


@dataclass
class Tally:
    copies: int
    rate: float  # copies per second, first to last
    took_s: float
    too_many_requests: int
    duplicates: int
    missing: int


def tally(fake: FakeTelegram, recipients: range) -> Tally:
    moments = [float(m["at"]) for m in fake.sent_messages() if m["text"] == TEXT]
    per_chat = Counter(int(m["chat_id"]) for m in fake.sent_messages() if m["text"] == TEXT)
    took = max(moments) - min(moments) if len(moments) > 1 else 0.0
    return Tally(
        copies=len(moments),
        rate=(len(moments) - 1) / took if took else 0.0,
        took_s=took,
        too_many_requests=fake.too_many_requests,
        duplicates=sum(count - 1 for count in per_chat.values() if count > 1),
        missing=sum(1 for user_id in recipients if per_chat[user_id] == 0),
    )


async def seed(database: Path, recipients: range) -> None:
    db = await open_database(database)
    try:
        async with transaction(db):
            for user_id in recipients:
                await users.register(db, user_id, f"user{user_id}")
    finally:
        await db.close()


async def peer(fake: FakeTelegram, recipients: range) -> int:
    """The same messages through python-telegram-bot's AIORateLimiter; failures."""
    # Its give-ups are counted as missing copies; their tracebacks would only clutter.
    logging.getLogger("telegram.ext.AIORateLimiter").setLevel(logging.CRITICAL)
    bot: ExtBot[int] = ExtBot(
        PEER_TOKEN,
        base_url=f"{fake.base_url}/bot",
        request=HTTPXRequest(connection_pool_size=8),
        rate_limiter=AIORateLimiter(max_retries=3),
    )
    async with bot:
        results = await asyncio.gather(
            *(bot.send_message(user_id, TEXT) for user_id in recipients), return_exceptions=True
        )
    return sum(1 for result in results if isinstance(result, TelegramError | Exception))


def bot_environment(home: Path, manifest: Path, fake: FakeTelegram) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("LUNARA_", "TELEGRAM_", "GEMINI_", "BINANCE_", "REDIS_"))}  # fmt: skip
    return keep | {
        "PYTHONPATH": str(ROOT),
        "LUNARA_HOME": str(home),
        "LUNARA_MANIFEST": str(manifest),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def wait_for(condition: Any, timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def main() -> int:
    warnings.filterwarnings("ignore", category=PTBDeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    recipients = range(FIRST_USER, FIRST_USER + args.recipients)
    budget_s = args.recipients / 20 + 120

    with tempfile.TemporaryDirectory(prefix="lunara-bench-") as scratch:
        base = Path(scratch)
        home = base / "home"
        home.mkdir(mode=0o700)
        manifest = write_manifest(base / "manifest.json")
        asyncio.run(seed(home / "lunara.db", recipients))
        with FakeTelegram() as ours, FakeTelegram() as theirs:
            log = (base / "bot.log").open("wb")
            bot = subprocess.Popen(
                [sys.executable, "-m", "lunara"], cwd=base,
                env=bot_environment(home, manifest, ours), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            rss: list[float] = []
            peer_failures: list[int] = []
            try:
                wait_for(lambda: ours.polls_by_token.get(TOKEN, 0) > 0, 60, "the bot to poll")
                process = psutil.Process(bot.pid)
                runner = threading.Thread(
                    target=lambda: peer_failures.append(asyncio.run(peer(theirs, recipients)))
                )
                runner.start()
                ours.push_text(ADMIN, f"/broadcast {TEXT}")
                deadline = time.monotonic() + budget_s
                while not any("Broadcast finished" in m for m in ours.messages_to(ADMIN)):
                    if time.monotonic() > deadline or bot.poll() is not None:
                        raise SystemExit(f"the broadcast did not finish (see {base / 'bot.log'})")
                    rss.append(process.memory_info().rss / 2**20)
                    time.sleep(0.5)
                rss.append(process.memory_info().rss / 2**20)
                runner.join(budget_s)
            finally:
                bot.send_signal(signal.SIGTERM)
                bot.wait(30)
                log.close()
            mine, peers = tally(ours, recipients), tally(theirs, recipients)

    print(f"{args.recipients} recipients through the fake Bot API with Telegram's flood limits")
    print(f"  {'':34}{'msgs/s':>8}{'429s':>7}{'duplicates':>12}{'missing':>9}{'took':>9}")
    for name, row in (
        ("lunara outbox (/broadcast)", mine),
        ("python-telegram-bot AIORateLimiter", peers),
    ):
        print(f"  {name:34}{row.rate:8.1f}{row.too_many_requests:7d}{row.duplicates:12d}"
              f"{row.missing:9d}{row.took_s:8.0f}s")  # fmt: skip
    print(f"  ratio of our rate to the peer's: {mine.rate / peers.rate:.2f}"
          if peers.rate else "  the peer sent nothing")  # fmt: skip
    if peer_failures and peer_failures[0]:
        print(f"  the peer gave up on {peer_failures[0]} messages")
    print(f"  the bot's RSS while sending: peak {max(rss):.1f} MiB, median "
          f"{statistics.median(rss):.1f} MiB, at the end {rss[-1]:.1f} MiB")  # fmt: skip
    checks = {
        f">= {TARGET_RATE:g} msgs/s": mine.rate >= TARGET_RATE,
        "0 429s": mine.too_many_requests == 0,
        "0 duplicates": mine.duplicates == 0,
        "0 missing": mine.missing == 0,
    }
    print("  targets: " + "; ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in checks.items()))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
