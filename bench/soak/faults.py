"""The fault plan of a soak and the injector that carries it out.

Process faults (bot and watchdog kills, SIGTERM, Redis restarts and a flush, a corrupt
ledger) each wait until the system is back; injected faults make a fake misbehave and
return at once. Every fault is logged with its wall-clock time, for the checks.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from bench._common import wait_for
from bench.soak.cluster import Installation, RedisServer
from bench.soak.load import LEVEL_HOLD_S, Telegram

FLUSH_GAP_S = 10.0  # no Redis flush within this of a bot kill (SQLite lags <= 5 s)
FLUSH_QUIET_S = 30.0  # no bot kill this long after the flush: a bot deafened by it shows
# A run this long is judged on its memory slope (checks): its process faults come early.
SLOPE_MIN_RUN_MIN = 10.0
PROCESS_FAULTS_UNTIL = 0.2  # judged runs: process faults only in this first part
RECOVERY_DEADLINE_S = 90.0
# getUpdates: the bot's CLIENT_TIMEOUT_S (5) plus its poll timeout (10), and some.
TELEGRAM_STALL_S = 17.0
BINANCE_STALL_S = 12.0  # past the bot's 10 s timeout; the late order then fails -1021
PROCESS_FAULTS = ("kill_bot", "sigterm_bot", "kill_watchdog", "redis_restart", "redis_flush",
                  "corrupt_ledger")  # fmt: skip
INJECTED_FAULTS = ("telegram_409", "telegram_429", "telegram_5xx", "telegram_stall",
                   "binance_429", "binance_1021", "binance_timeout", "binance_drop",
                   "gemini_429", "gemini_503")  # fmt: skip
BOT_FAULTS = ("kill_bot", "sigterm_bot")


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
