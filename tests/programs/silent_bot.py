"""A bot that beats BEATS times (default 2), then hangs without beating."""

from __future__ import annotations

import sys
import time

from blueprint.heartbeat import write_heartbeat
from blueprint.paths import HomePaths

beats = int(sys.argv[1]) if len(sys.argv) > 1 else 2
heartbeat = HomePaths.resolve().heartbeat
for _ in range(beats):
    write_heartbeat(heartbeat)
    time.sleep(0.1)
print("silent bot: no more beats", flush=True)
while True:
    time.sleep(3600)
