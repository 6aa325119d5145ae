"""A well-behaved bot: beats every 0.1 s and exits 0 on SIGTERM.

An optional first argument is how many seconds it takes to wind down after SIGTERM
(still beating), like a bot finishing its in-flight work.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType

from blueprint.heartbeat import write_heartbeat
from blueprint.paths import HomePaths


def main() -> int:
    wind_down_s = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    heartbeat = HomePaths.resolve().heartbeat
    print("healthy bot started", flush=True)
    while not stop.is_set():
        write_heartbeat(heartbeat)
        stop.wait(0.1)
    print("healthy bot stopping", flush=True)
    done = time.monotonic() + wind_down_s
    while time.monotonic() < done:
        write_heartbeat(heartbeat)
        time.sleep(0.1)
    print("healthy bot stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
