"""What the bot last found of Telegram, Redis, the exchange and Gemini, handed to status.

A bot can be alive, beating and healthy while it cannot reach what it works with: a
restart would not bring Telegram or Binance back, so `status` keeps its exit code and
says what is down instead (DESIGN.md, `dependencies` and `notes`). Only the bot knows
(its requests succeed or fail), so it writes LUNARA_HOME/dependencies.json when what it
knows changes, atomically and private to the owner; `lunara status`, the watchdog's
status socket and /metrics read it. A file, like the heartbeat, because they all read
it without talking to the bot, and a file older than the bot is the previous bot's:
it is not shown.

File: ``{"telegram": {"state": "ok|down|off", "last_ok_at": epoch|null,
"down_since": epoch|null, "reason": "..."|null}, ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blueprint.clock import utc_iso
from blueprint.jsonvalues import is_number
from blueprint.states import Dependency, Reachability
from blueprint.trust import replace_private

MAX_REASON_CHARS = 200


def write_dependencies(path: Path, report: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the file atomically (a reader never sees half a report), mode 0600."""
    replace_private(path, json.dumps(report, sort_keys=True).encode("utf-8"))


def read_dependencies(path: Path, not_before: float) -> dict[str, dict[str, Any]] | None:
    """The bot's report as `status --json` shows it, or None when there is none from a
    bot started at `not_before` or later (epoch seconds).

    Every dependency is named, each ``{"state": ok|down|off, "last_ok_at": ISO|null}``
    plus ``down_since`` and ``reason`` while down; anything unreadable in the file is
    left out rather than guessed.
    """
    try:
        if path.stat().st_mtime < not_before:
            return None
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    shown: dict[str, dict[str, Any]] = {}
    for dependency in Dependency:
        entry = document.get(dependency.value)
        if not isinstance(entry, dict) or entry.get("state") not in set(Reachability):
            return None
        view: dict[str, Any] = {
            "state": entry["state"],
            "last_ok_at": _iso(entry.get("last_ok_at")),
        }
        if entry["state"] == Reachability.DOWN:
            view["down_since"] = _iso(entry.get("down_since"))
            reason = entry.get("reason")
            view["reason"] = reason[:MAX_REASON_CHARS] if isinstance(reason, str) else None
        shown[dependency.value] = view
    return shown


def dependency_notes(dependencies: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """One sentence per dependency that is down, for `notes`."""
    if not dependencies:
        return []
    notes: list[str] = []
    for name, view in dependencies.items():
        if view.get("state") != Reachability.DOWN:
            continue
        since = f" since {view['down_since']}" if view.get("down_since") else ""
        last_ok = view.get("last_ok_at")
        seen = f", last ok {last_ok}" if last_ok else ", not reached since the bot started"
        reason = f": {view['reason']}" if view.get("reason") else ""
        notes.append(f"{name} is down{since}{seen}{reason}")
    return notes


def _iso(value: Any) -> str | None:
    if not is_number(value):
        return None
    try:
        return utc_iso(float(value))
    except (OverflowError, OSError, ValueError):
        return None
