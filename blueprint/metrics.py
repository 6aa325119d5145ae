"""The bot's counters, handed to the watchdog through a small file.

The bot writes LUNARA_HOME/metrics.json every few seconds (atomically); the watchdog
serves it on /metrics beside what it knows itself (restarts, RSS, heartbeat age).
Counters belong to one bot process and start again from zero after a restart — the
restart itself is counted by the watchdog.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blueprint.jsonvalues import is_number

METRICS_FILE = "metrics.json"

# name → help text; the bot may only report these (numbers).
BOT_METRICS = {
    "tick_duration_seconds": "Duration of the last trading tick.",
    "orders_placed_total": "Orders filled since the bot started.",
    "orders_failed_total": "Orders refused or rejected since the bot started.",
    "telegram_updates_total": "Telegram updates handled since the bot started.",
    "telegram_conflicts_total": "409 Conflict answers from Telegram since the bot started.",
    "binance_weight_used": "Request weight Binance counts for this IP in the current minute.",
    "binance_weight_budget": "Request weight per minute the bot plans to use (from exchangeInfo).",
    "binance_ban_seconds": "Seconds left of a Binance IP ban (HTTP 418); 0 when not banned.",
}


def write_metrics(path: Path, values: dict[str, float]) -> None:
    known = {name: float(value) for name, value in values.items() if name in BOT_METRICS}
    from blueprint.trust import replace_private

    replace_private(path, json.dumps(known).encode())


def read_metrics(path: Path) -> dict[str, float]:
    try:
        document: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {
        name: float(value)
        for name, value in document.items()
        if name in BOT_METRICS and is_number(value)
    }
