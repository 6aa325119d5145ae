"""Watchdog idle memory, and how fast a crashed bot is back.

    .venv/bin/python bench/watchdog.py [--kills 5] [--idle 5]

Starts the real bot (`python -m lunara`, embedded defaults) under the watchdog, lets it
idle, reads the watchdog's RSS (target <= 30 MiB), then SIGKILLs the bot several times
and times each kill to the new bot's first heartbeat, against the configured backoff
(target: <= backoff + 1 s). The peer figure for the recovery time is the backoff the
manifest asks for, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: bench, tests

from bench._common import lunara, wait_for, write_manifest

BACKOFF_S = 1.0


def status(home: Path, manifest: Path) -> dict[str, object]:
    result = lunara(["status", "--json"], home, manifest, check=False)
    document: dict[str, object] = json.loads(result.stdout)
    return document


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lunara-bench-") as scratch:
        base = Path(scratch)
        home = base / "home"
        home.mkdir()
        manifest = write_manifest(
            base,
            {
                "command": [sys.executable, "-m", "lunara"],
                "stop_timeout_s": 10,
                # The backoff resets after a healthy period; keep it from growing between kills.
                "restart": {
                    "backoff_initial_s": BACKOFF_S,
                    "backoff_max_s": BACKOFF_S,
                    "max_restarts": 100,
                    "window_s": 300,
                },
                "memory_limit_mib": 450,
                "heartbeat_timeout_s": 60,
            },
        )
        lunara(["start", "--wait", "60"], home, manifest)
        heartbeat = home / "heartbeat"
        try:
            time.sleep(args.idle)  # idle on purpose: this is the state being measured
            first = status(home, manifest)
            watchdog = psutil.Process(int(str(first["supervisor_pid"])))
            watchdog_rss = watchdog.memory_info().rss / 2**20
            recoveries: list[float] = []
            for _ in range(args.kills):
                current = status(home, manifest)
                old_pid = int(str(current["pid"]))
                killed_at = time.time()
                os.kill(old_pid, signal.SIGKILL)

                def back_up(old_pid: int = old_pid, killed_at: float = killed_at) -> bool:
                    now = status(home, manifest)
                    return (
                        now.get("pid") not in (None, old_pid)
                        and heartbeat.exists()
                        and heartbeat.stat().st_mtime > killed_at
                    )

                wait_for(back_up, 60, "the restarted bot's first heartbeat", poll_s=0.05)
                recoveries.append(heartbeat.stat().st_mtime - killed_at)
                time.sleep(1.0)  # let the new bot settle before the next kill
        finally:
            lunara(["stop"], home, manifest, check=False)

    median_recovery = statistics.median(recoveries)
    worst = max(recoveries)
    print(
        f"watchdog idle RSS: {watchdog_rss:.1f} MiB (target <= 30) -> {'PASS' if watchdog_rss <= 30 else 'FAIL'}"
    )
    print(
        f"crash -> first heartbeat over {len(recoveries)} kills: median {median_recovery:.2f} s, "
        f"worst {worst:.2f} s; backoff {BACKOFF_S:.2f} s; worst/(backoff+1 s) = {worst / (BACKOFF_S + 1):.2f} "
        f"-> {'PASS' if worst <= BACKOFF_S + 1 else 'FAIL'}"
    )
    return 0 if watchdog_rss <= 30 and worst <= BACKOFF_S + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
