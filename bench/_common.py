"""Shared helpers for the benchmarks: scratch homes, manifests and timing."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUNARA = [sys.executable, "-m", "blueprint"]
# Fifty Binance spot base assets, each traded against USDT: the benchmarks' 50 symbols.
BASE_ASSETS = (
    "BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "DOT", "LTC",
    "LINK", "AVAX", "ATOM", "XLM", "ETC", "FIL", "APT", "ARB", "NEAR", "ALGO",
    "VET", "ICP", "SAND", "MANA", "AXS", "AAVE", "EOS", "XTZ", "THETA", "EGLD",
    "GRT", "CHZ", "KAVA", "RUNE", "SNX", "CRV", "COMP", "ZEC", "DASH", "ENJ",
    "BAT", "ZIL", "IOTA", "NEO", "QTUM", "ONE", "HBAR", "INJ", "SUI", "PEPE",
)  # fmt: skip
KNOWN_PRICES = {"BTC": 50000.0, "ETH": 3000.0, "BNB": 500.0, "SOL": 150.0}


def start_price(index: int, base: str) -> float:
    """A symbol's price at the start of a benchmark: the real order of magnitude where
    known, else spread from 5 USDT up (every one a legal market order at a 20-50 USDT
    stake under the fake exchange's filters)."""
    return KNOWN_PRICES.get(base, round(5 + 13.7 * index, 2))


def write_manifest(
    directory: Path,
    program: dict[str, Any] | None = None,
    *,
    name: str = "lunara-bench",
    roles: dict[str, list[str]] | None = None,
    defaults: dict[str, str] | None = None,
) -> Path:
    """A manifest that makes the current OS user the owner (`roles` adds roles beside
    the owner's; `defaults` gives principals no grant names, such as every Telegram user)."""
    import getpass

    manifest: dict[str, Any] = {
        "version": 1,
        "name": name,
        "program": program
        or {
            "command": [sys.executable, "-m", "lunara"],
            "stop_timeout_s": 10,
            "restart": {
                "backoff_initial_s": 1,
                "backoff_max_s": 60,
                "max_restarts": 50,
                "window_s": 300,
            },
            "memory_limit_mib": 450,
            "heartbeat_timeout_s": 60,
        },
        "roles": {"owner": ["*"], **(roles or {})},
        "principals": {f"os_user:{getpass.getuser()}": "owner"},
    }
    if defaults:
        manifest["defaults"] = defaults
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    path.chmod(0o644)
    return path


def bench_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNARA_") and k != "REDIS_URL"}
    env["LUNARA_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def lunara(
    args: Sequence[str], home: Path, manifest: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LUNARA, "--home", str(home), "--manifest", str(manifest), *args],
        env=bench_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        check=check,
    )


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_fake(
    module: str, workdir: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m tests.fakes.<module> --port 0`; its first output line is its URL.

    The caller owns the returned process (and stops it); stderr goes to
    `workdir/<module>.log`.
    """
    log = (workdir / f"{module}.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert child.stdout is not None
    url = child.stdout.readline().decode().strip()
    if not url.startswith("http://127.0.0.1:"):
        child.kill()
        child.wait()
        raise SystemExit(f"{module} did not start (see {workdir / (module + '.log')})")
    return child, url


# -- tracemalloc: what grows inside the bot ----------------------------------------------

# Runs the bot like `python -m lunara`, with tracemalloc on: each SIGUSR1 writes a
# snapshot to DIRECTORY/snapshot-<pid>-<n>.bin (written aside, then renamed).
TRACED_BOT = """
import os, runpy, signal, sys, tracemalloc
directory = sys.argv[1]
tracemalloc.start(25)
count = [0]
def dump(*_):
    count[0] += 1
    path = f"{directory}/snapshot-{os.getpid()}-{count[0]}.bin"
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["lunara"]
runpy.run_module("lunara", run_name="__main__", alter_sys=True)
"""


def traced_bot_command(directory: Path) -> list[str]:
    return [sys.executable, "-c", TRACED_BOT, str(directory)]


def snapshots_of(directory: Path, pid: int) -> list[Path]:
    found = directory.glob(f"snapshot-{pid}-*.bin")
    return sorted(found, key=lambda path: int(path.stem.rsplit("-", 1)[1]))


def take_snapshot(pid: int, directory: Path, timeout_s: float = 120) -> Path:
    """Ask a traced bot for a snapshot and wait until it is written."""
    import signal

    taken = len(snapshots_of(directory, pid))
    os.kill(pid, signal.SIGUSR1)
    path = directory / f"snapshot-{pid}-{taken + 1}.bin"
    wait_for(path.exists, timeout_s, "a tracemalloc snapshot", poll_s=0.5)
    return path


def report_growth(snapshots: Sequence[Path], top: int = 25) -> None:
    """What grew between the first and the last snapshot, and what is largest now."""
    import tracemalloc

    if len(snapshots) < 2:
        print("  tracemalloc: fewer than two snapshots")
        return
    first = tracemalloc.Snapshot.load(str(snapshots[0]))
    last = tracemalloc.Snapshot.load(str(snapshots[-1]))
    mib = 2**20
    print(f"  tracemalloc: traced {sum(s.size for s in last.statistics('filename')) / mib:.1f} MiB")
    print(f"  top growth, {snapshots[0].name} → {snapshots[-1].name} (by line):")
    for grown in last.compare_to(first, "lineno")[:top]:
        print(f"    {grown.size_diff / 1024:+9.1f} KiB {grown.count_diff:+7d}  {grown.traceback}")
    print("  largest now (by file):")
    for held in last.statistics("filename")[:top]:
        print(f"    {held.size / 1024:9.1f} KiB  {held.traceback}")
