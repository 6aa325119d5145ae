"""The soak in its short mode: two minutes of load and faults, every invariant asserted.

`bench/soak.py --minutes 2` starts Redis, the fake Telegram, Binance and Gemini servers
and the real bot under `lunara start`, drives 500 users through it while a fault
injector kills the bot and the watchdog, restarts and flushes Redis, corrupts the
ledger and makes every fake misbehave; it exits 0 only when every property held
(no duplicate orders, stops equal their replay, one reply per accepted command, no
tracebacks or secrets in the logs, an honest and fast `lunara status`, bounded RSS,
restarts equal kills). Its report is printed, so a failure shows every figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "bench" / "soak.py"
BUDGET_S = 280  # two minutes of faults, plus onboarding, draining and the checks


@pytest.mark.slow
def test_soak_two_minutes_of_faults_and_load_keeps_every_invariant() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LUNARA_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    result = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUDGET_S,
        stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, f"soak failed:\n{result.stdout}\n{result.stderr[-4000:]}"
