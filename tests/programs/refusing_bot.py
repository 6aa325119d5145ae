"""A bot that refuses its configuration as the real one does (exit 6 and its one-line
reason), but only once the file GATE exists, so a test sees the moment before it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from blueprint.exit_message import leave_exit_message
from blueprint.paths import HomePaths

MESSAGE = "invalid configuration: LUNARA_MODE: must be paper or live (got 'gated')"

gate = Path(sys.argv[1])
while not gate.exists():
    time.sleep(0.02)
print(f"lunara: {MESSAGE}", file=sys.stderr, flush=True)
leave_exit_message(HomePaths.resolve(), MESSAGE)
sys.exit(6)
