"""Telegram throughput: 2,000 updates from 500 users, end to end, against a bare peer.

    .venv/bin/python bench/telegram_updates.py [--updates 2000] [--users 500]

Both runs use the real python-telegram-bot client polling the same local fake Bot API
server (tests/fakes/telegram_api.py). The peer is a bare application that answers every
command with a fixed text; ours is the Lunara bot (guard, audit, rate limit, SQLite,
paper engine) answering /plans and /status. Printed: updates per second for both, the
ratio, and the peak RSS of this process while ours ran (target >= 300 updates/s).

This measures the way in (poll, inbox, handler, outbox), not Telegram's pace: the
server is the friendly one (no flood limits) and the bot's outbox is unpaced. Against
Telegram's limits the replies would go out at about 30 a second whatever the bot does;
`bench/broadcast.py` measures that pace.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from telegram import Update  # noqa: E402
from telegram.ext import Application, ContextTypes, MessageHandler, filters  # noqa: E402

from tests.fakes.telegram_api import FakeTelegram  # noqa: E402
from tests.lunara.telegram.conftest import TOKEN, UNPACED, running_bot  # noqa: E402

COMMANDS = ("/plans", "/status")


def feed(fake: FakeTelegram, updates: int, users: int, first_user: int) -> None:
    for index in range(updates):
        fake.push_text(first_user + index % users, COMMANDS[index % len(COMMANDS)])


async def wait_replies(fake: FakeTelegram, expected: int, timeout_s: float) -> float:
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while len(fake.sent) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(fake.sent)} of {expected} replies")
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def bare_peer(updates: int, users: int) -> float:
    with FakeTelegram(flood_limits=False) as fake:

        async def echo(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
            assert update.effective_chat is not None
            await update.get_bot().send_message(update.effective_chat.id, "ok")

        app = (
            Application.builder().token(TOKEN).base_url(f"{fake.base_url}/bot")
            .concurrent_updates(64).build()
        )  # fmt: skip
        app.add_handler(MessageHandler(filters.COMMAND, echo))
        await app.initialize()
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=1)
        feed(fake, updates, users, 10_000)
        elapsed = await wait_replies(fake, updates, 300)
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        return updates / elapsed


async def ours(updates: int, users: int) -> tuple[float, float]:
    process = psutil.Process()
    peak = process.memory_info().rss
    with FakeTelegram(flood_limits=False) as fake, tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        home.mkdir()
        # Raise the per-user limit: the benchmark measures throughput, not the limiter.
        async with running_bot(
            fake, home, send_limits=UNPACED, LUNARA_RATE_LIMIT_PER_MINUTE="1000"
        ):
            feed(fake, updates, users, 10_000)
            task = asyncio.create_task(wait_replies(fake, updates, 600))
            while not task.done():
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.05)
            elapsed = task.result()
    return updates / elapsed, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    peer_rate = asyncio.run(bare_peer(args.updates, args.users))
    our_rate, peak_mib = asyncio.run(ours(args.updates, args.users))
    print(f"{args.updates} updates from {args.users} users, end to end (poll → handler → reply)")
    print(f"  bare python-telegram-bot echo: {peer_rate:7.1f} updates/s")
    print(f"  lunara:                        {our_rate:7.1f} updates/s "
          f"(ratio {our_rate / peer_rate:.2f} of the bare peer)")  # fmt: skip
    print(f"  peak RSS (bot + fake server in one process): {peak_mib:.1f} MiB")
    print(f"  target >= 300 updates/s -> {'PASS' if our_rate >= 300 else 'FAIL'}")
    return 0 if our_rate >= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
