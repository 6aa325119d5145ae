"""A bot that beats, then holds MIB mebibytes of touched memory (default 96)."""

from __future__ import annotations

import sys
import time

from blueprint.heartbeat import write_heartbeat
from blueprint.paths import HomePaths

mebibytes = int(sys.argv[1]) if len(sys.argv) > 1 else 96
heartbeat = HomePaths.resolve().heartbeat
write_heartbeat(heartbeat)
hoard = b"\x01" * (mebibytes * 1024 * 1024)  # bytes filled by memset: every page is resident
print(f"memory hog holding {len(hoard) // (1024 * 1024)} MiB", flush=True)
while True:
    write_heartbeat(heartbeat)
    time.sleep(0.1)
