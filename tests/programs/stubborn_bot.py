"""A bot that ignores SIGTERM and starts two children, each with a grandchild.

One grandchild leaves the process group (setsid), so only a supervisor that collected
the tree before signalling can find it. Every member appends "pid create_time" to the
file named by the first argument, so a test knows the whole tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil


def register(path: str) -> None:
    with open(path, "a", encoding="ascii") as handle:
        handle.write(f"{os.getpid()} {psutil.Process().create_time()}\n")


def spawn(path: str, role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, path, role])


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, role = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bot"
    if role == "grandchild-own-session":
        os.setsid()
    register(path)
    if role == "bot":
        from blueprint.heartbeat import write_heartbeat
        from blueprint.paths import HomePaths

        spawn(path, "child-a")
        spawn(path, "child-b")
        heartbeat = HomePaths.resolve().heartbeat
        print("stubborn bot started", flush=True)
        while True:
            write_heartbeat(heartbeat)
            time.sleep(0.1)
    if role == "child-a":
        spawn(path, "grandchild")
    if role == "child-b":
        spawn(path, "grandchild-own-session")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
