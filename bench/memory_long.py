"""Memory over one long bot life: the soak's steady load, no faults, RSS every 30 s.

    .venv/bin/python bench/memory_long.py [--minutes 120] [--seed N] [--users 500] [--rate 6]

The real bot runs under the real watchdog exactly as in the soak (`bench/soak/`) (live mode on the
fake Binance, the fake Telegram and Gemini, a private Redis, 500 users, a steady stream
of commands, prices moving so that stops activate and trigger), but nothing is killed
or injected: one bot life. Its RSS (the bot's process tree) is sampled every 30 s.

The peer, run side by side for the same time: a bare python-telegram-bot application
polling its own fake Bot API and answering the same rate of commands with a fixed text,
its RSS sampled the same way. It shows how much of a trend the Telegram client stack
alone has.

Printed for both: peak RSS, and the least-squares slope over the second half of the run
(MiB per 10 minutes); for the bot against its goals (slope <= 0.5 MiB per 10 min, peak
<= 150 MiB), with the ratio of the two slopes and peaks. Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak import run as soak  # noqa: E402
from bench.soak.checks import pooled_slope_mib_per_10min  # noqa: E402

SAMPLE_EVERY_S = 30.0
SLOPE_GOAL_MIB_PER_10MIN = 0.5
PEAK_GOAL_MIB = 150.0
MIB = 2**20


def slope_mib_per_10min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB), in MiB per 10 minutes."""
    return pooled_slope_mib_per_10min([points]) if len(points) >= 2 else None


def second_half(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if not points:
        return []
    start, end = points[0][0], points[-1][0]
    middle = (start + end) / 2
    return [point for point in points if point[0] >= middle]


def every(points: Sequence[tuple[float, int, float]], seconds: float) -> list[tuple[float, float]]:
    """One (time, MiB) sample per `seconds` of the bot's samples (it samples every second)."""
    kept: list[tuple[float, float]] = []
    for at, _, mib in points:
        if not kept or at - kept[-1][0] >= seconds:
            kept.append((at, mib))
    return kept


def _peer(seconds: float, rate: float, users: int, seed: int) -> None:
    """The bare python-telegram-bot application, in a process of its own."""
    from telegram import Update
    from telegram.error import NetworkError
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    from tests.fakes.telegram_api import FakeTelegram

    async def main() -> None:
        with FakeTelegram() as fake:

            async def answer(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
                assert update.effective_chat is not None
                await update.get_bot().send_message(update.effective_chat.id, "ok")

            app = (
                Application.builder().token(soak.TOKEN).base_url(f"{fake.base_url}/bot")
                .concurrent_updates(64).build()
            )  # fmt: skip
            app.add_handler(MessageHandler(filters.COMMAND, answer))

            async def quiet(_update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
                if not isinstance(context.error, NetworkError):  # a slow poll on a busy box
                    print(f"  peer: {type(context.error).__name__}: {context.error}", flush=True)

            app.add_error_handler(quiet)
            await app.initialize()
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(timeout=10)
            rng = random.Random(seed)
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < seconds:
                due = int((time.monotonic() - started) * rate)
                while sent < due:
                    fake.push_text(1 + rng.randrange(users), "/status")
                    sent += 1
                await asyncio.sleep(0.05)
            await app.updater.stop()
            await app.stop()
            await app.shutdown()

    asyncio.run(main())


class PeerSampler:
    """Runs the peer and samples its RSS every `SAMPLE_EVERY_S` on a thread."""

    def __init__(self, seconds: float, rate: float, users: int, seed: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=_peer, args=(seconds, rate, users, seed))
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peer-rss", daemon=True)

    def start(self) -> None:
        self.process.start()
        self._thread.start()

    def _loop(self) -> None:
        assert self.process.pid is not None
        watched = psutil.Process(self.process.pid)
        while not self._stop.wait(SAMPLE_EVERY_S):
            with contextlib.suppress(psutil.NoSuchProcess):
                self.samples.append((time.monotonic(), watched.memory_info().rss / MIB))

    def stop(self) -> None:
        self.process.join(120)
        if self.process.is_alive():
            self.process.kill()
        self._stop.set()
        self._thread.join(10)


def describe(name: str, points: Sequence[tuple[float, float]]) -> tuple[float, float | None]:
    peak = max((mib for _, mib in points), default=0.0)
    slope = slope_mib_per_10min(second_half(points))
    shown = "n/a" if slope is None else f"{slope:+.2f}"
    print(
        f"  {name}: {len(points)} samples, peak {peak:.1f} MiB, "
        f"second-half slope {shown} MiB per 10 min",
        flush=True,
    )
    return peak, slope


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=6.0, help="commands per second")
    arguments = parser.parse_args(argv)
    args = argparse.Namespace(
        minutes=arguments.minutes,
        seed=arguments.seed,
        users=arguments.users,
        rate=arguments.rate,
        onboard=soak.SHORT_ONBOARD,
        faults=False,
    )
    print(f"memory over one bot life: {arguments.minutes:g} min, seed {arguments.seed}", flush=True)
    peer = PeerSampler(arguments.minutes * 60, arguments.rate, arguments.users, arguments.seed)
    workdir = Path(tempfile.mkdtemp(prefix="lunara-memory-"))
    try:
        peer.start()
        data = soak.run(args, workdir)
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    lives = {pid for _, pid, _ in data.rss}
    if len(lives) != 1:
        print(f"  FAIL: the bot was not one life ({len(lives)} processes sampled)")
        return 1
    began, ended = data.load_window
    ours = every([sample for sample in data.rss if began <= sample[0] <= ended], SAMPLE_EVERY_S)
    our_peak, our_slope = describe("lunara bot", ours)
    peer_peak, peer_slope = describe("bare python-telegram-bot", peer.samples)
    if peer_peak > 0:
        print(f"  peak ratio (ours / peer): {our_peak / peer_peak:.2f}")
    if our_slope is not None and peer_slope not in (None, 0.0):
        print(f"  slope ratio (ours / peer): {our_slope / peer_slope:.2f}")
    slope_ok = our_slope is not None and our_slope <= SLOPE_GOAL_MIB_PER_10MIN
    peak_ok = our_peak <= PEAK_GOAL_MIB
    print(
        f"  goals: slope <= {SLOPE_GOAL_MIB_PER_10MIN} MiB per 10 min "
        f"{'PASS' if slope_ok else 'FAIL'}; peak <= {PEAK_GOAL_MIB:.0f} MiB "
        f"{'PASS' if peak_ok else 'FAIL'}",
        flush=True,
    )
    return 0 if slope_ok and peak_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    sys.exit(main())
