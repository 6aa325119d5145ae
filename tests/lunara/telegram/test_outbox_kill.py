"""SIGKILL the real bot three times during a 500-recipient broadcast: every recipient gets
the message exactly once, but for the one case the Bot API cannot prevent.

The bot runs as in production (`python -m lunara`, its own process) against the fake
Bot API with Telegram's flood limits, in this process. An admin sends /broadcast; the
bot is killed after 60, 200 and 350 copies went out and started again each time. Five
recipients blocked the bot. Afterwards each of the others holds exactly one copy; a
second copy is excused (and counted) only when the first reached Telegram within
`CAUGHT_WINDOW_S` of a kill and the second came after it: sent, not yet marked sent,
when the process died (the Bot API has no idempotent send). The admin gets one summary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from lunara.storage import outbox as outbox_store
from lunara.storage import users
from lunara.storage.database import open_database
from tests import waiting
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, TOKEN, write_manifest

REPO_ROOT = Path(__file__).resolve().parents[3]
RECIPIENTS = range(20_000, 20_500)
BLOCKED = {20_007, 20_123, 20_250, 20_377, 20_499}
KILL_AFTER = (60, 200, 350)  # copies delivered when each SIGKILL lands
CAUGHT_WINDOW_S = 0.5  # as the soak's: a copy this close to a kill may be the one in flight


def duplicates(
    moments_by_chat: dict[int, list[float]], kills: list[float]
) -> tuple[list[int], list[int]]:
    """The chats that got a message twice, split in two: those whose first copy went
    within `CAUGHT_WINDOW_S` of a kill and the second after it (the copy in flight when
    the bot died, which Telegram cannot tell us it took), and the rest (a real fault)."""
    caught, uncaught = [], []
    for chat_id, moments in moments_by_chat.items():
        if len(moments) == 1:
            continue
        first, *later = sorted(moments)
        if len(later) == 1 and any(
            abs(first - killed) <= CAUGHT_WINDOW_S and later[0] > killed for killed in kills
        ):
            caught.append(chat_id)
        else:
            uncaught.append(chat_id)
    return caught, uncaught


TEXT = "Maintenance tonight at 22:00 UTC"


# Polled often: the kill tests aim their SIGKILLs at a count of messages delivered.
wait_until = partial(waiting.wait_until, poll_s=0.005)


class Bot:
    """`python -m lunara` as a child process over one home."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lunara"], cwd=self.cwd, env=self.env,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> float:
        assert self.process is not None
        killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return killed_at

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


async def seed(database: Path) -> None:
    db = await open_database(database)
    try:
        for user_id in RECIPIENTS:
            await users.register(db, user_id, f"user{user_id}")
    finally:
        await db.close()


async def outbox_counts(database: Path) -> dict[str, int]:
    db = await open_database(database)
    try:
        return await outbox_store.counts(db)
    finally:
        await db.close()


@pytest.mark.slow
def test_sigkills_during_a_500_recipient_broadcast_deliver_each_copy_exactly_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    manifest = write_manifest(tmp_path / "manifest.json")
    asyncio.run(seed(home / "lunara.db"))
    with FakeTelegram() as fake:
        for user_id in BLOCKED:
            fake.block(user_id, tell=False)
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("LUNARA_", "TELEGRAM_", "GEMINI_", "BINANCE_", "REDIS_"))}  # fmt: skip
        env = keep | {
            "PYTHONPATH": str(REPO_ROOT),
            "LUNARA_HOME": str(home),
            "LUNARA_MANIFEST": str(manifest),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": fake.base_url,
            "LOG_LEVEL": "INFO",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        bot = Bot(env, tmp_path, tmp_path / "bot.log")

        def copies() -> int:
            return sum(1 for m in fake.sent_messages() if m["text"] == TEXT)

        def polling(after: int) -> Callable[[], bool]:
            return lambda: fake.polls_by_token.get(TOKEN, 0) > after

        def copied(threshold: int) -> Callable[[], bool]:
            return lambda: copies() >= threshold

        kills: list[float] = []
        try:
            bot.start()
            wait_until(polling(0), 60, "the bot to poll")
            fake.push_text(ADMIN, f"/broadcast {TEXT}")
            for threshold in KILL_AFTER:
                wait_until(copied(threshold), 60, f"{threshold} copies")
                kills.append(bot.kill())
                polls = fake.polls_by_token.get(TOKEN, 0)
                bot.start()
                wait_until(polling(polls), 60, "the restarted bot to poll")
            wait_until(
                lambda: any("Broadcast finished" in m for m in fake.messages_to(ADMIN)),
                120,
                "the summary",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{bot.tail()}") from None
        finally:
            bot.stop()
        sent = fake.sent_messages()
        too_many = fake.too_many_requests

    by_recipient: dict[int, list[float]] = defaultdict(list)
    for message in sent:
        if message["text"] == TEXT:
            by_recipient[int(message["chat_id"])].append(float(message["at"]))
    missing = [u for u in RECIPIENTS if u not in BLOCKED and not by_recipient.get(u)]
    caught, uncaught = duplicates(by_recipient, kills)
    print(f"copies: {sum(map(len, by_recipient.values()))} to {len(by_recipient)} recipients; "
          f"duplicates caught by a kill: {len(caught)}; 429s: {too_many}")  # fmt: skip
    assert missing == []
    assert uncaught == []
    assert not BLOCKED & set(by_recipient)
    summaries = [m["text"] for m in sent if "Broadcast finished" in m["text"]]
    assert len(summaries) == 1
    assert f"Sent: {len(RECIPIENTS) - len(BLOCKED)}" in summaries[0]
    assert f"marked inactive): {len(BLOCKED)}" in summaries[0]
    assert asyncio.run(outbox_counts(home / "lunara.db"))["queued"] == 0
