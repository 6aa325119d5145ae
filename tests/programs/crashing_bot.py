"""A bot that dies at once with exit code 3, to drive the watchdog into a crash loop."""

from __future__ import annotations

import sys

print("crashing bot: giving up", flush=True)
sys.exit(3)
