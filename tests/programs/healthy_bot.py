"""A well-behaved bot: beats every 0.1 s and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from blueprint.heartbeat import write_heartbeat
from blueprint.paths import HomePaths


def main() -> int:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
