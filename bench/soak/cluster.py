"""The processes of a soak and what watches them.

A private Redis (restartable on its port and directory), the fake Telegram, Binance
and Gemini servers, and the installation the real bot runs in under `lunara start`;
the observers probe `lunara status` and sample the bot's RSS on their own threads, so
the checks can hold what status said against the processes that really ran.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench._common import bench_env, wait_for
from bench._common import start_fake as common_start_fake
from bench._common import write_manifest as common_write_manifest

MIB = 2**20
STATUS_EVERY_S = 2.0
DEPLOYMENT = "lunara"
"""The soak manifest's name: its lease and its trailing stops in Redis are keyed by it."""


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


# The bot restarts fast (the soak kills it often) and may restart many times in a run.
PROGRAM = {
    "command": [sys.executable, "-m", "lunara"],
    "stop_timeout_s": 15,
    "restart": {"backoff_initial_s": 0.5, "backoff_max_s": 2, "max_restarts": 500, "window_s": 300},
    "memory_limit_mib": 450,
    "heartbeat_timeout_s": 60,
}


def write_manifest(directory: Path) -> Path:
    """The OS user owns the bot; every Telegram user is a trader."""
    return common_write_manifest(
        directory,
        PROGRAM,
        name=DEPLOYMENT,
        roles={"trader": ["tg.trade.*", "tg.info.*"]},
        defaults={"telegram": "trader"},
    )


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
