"""Telling the admins why the bot was restarted.

The watchdog records every abnormal exit in the ledger (exit code or signal, its
reason — memory limit, stale heartbeat, a SIGKILL that may have been the kernel's
OOM killer — and the RSS just before). A process killed by the OOM killer cannot
report anything itself, so the *next* bot reads the ledger on start and sends the
report once Telegram answers. A marker file remembers which exit was reported, so a
report goes out once (an admin may get it twice only if the bot stops while Telegram
refuses it to another admin: the next start sends it to all again).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from blueprint.backoff import restarts_in_window
from blueprint.ledger import ExitRecord, LedgerDocument
from blueprint.manifest import RestartPolicy
from blueprint.trust import replace_private
from blueprint.watchdog import Reason
from lunara.telegram.formatting import escape


@dataclass(frozen=True)
class CrashReport:
    exit: ExitRecord
    restarts_in_window: int
    max_restarts: int
    window_s: float

    @property
    def crash_loop_near(self) -> bool:
        return self.restarts_in_window >= max(1, self.max_restarts - 1)

    def describe_exit(self) -> str:
        if self.exit.signal is not None:
            try:
                name = signal.Signals(self.exit.signal).name
            except ValueError:
                name = f"signal {self.exit.signal}"
            return f"killed by {name}"
        return f"exit code {self.exit.code}"

    def to_html(self) -> str:
        """The message for Telegram (HTML parse mode; every value escaped)."""
        lines = [
            "<b>Lunara was restarted after an abnormal exit</b>",
            f"How: {escape(self.describe_exit())}",
            f"Reason: {escape(self.exit.reason)}",
            f"When: {escape(self.exit.at)}",
        ]
        if self.exit.rss_mib is not None:
            lines.append(f"Memory just before: {self.exit.rss_mib:.1f} MiB")
        lines.append(
            f"Restarts in the last {self.window_s:.0f} s: "
            f"{self.restarts_in_window} of {self.max_restarts} allowed"
        )
        if self.crash_loop_near:
            lines.append(
                "<b>Warning:</b> the crash-loop limit is near; one more crash and the "
                "watchdog stops restarting the bot."
            )
        return "\n".join(lines)


def is_abnormal(record: ExitRecord) -> bool:
    """Anything but a stop an operator asked for: a signal, a non-zero code, a restart the
    watchdog forced (memory limit, stale heartbeat), an exit while adopted."""
    return record.reason != Reason.STOPPED


def pending_report(
    document: LedgerDocument,
    policy: RestartPolicy,
    already_reported_at: str | None,
    now: float | None = None,
) -> CrashReport | None:
    """The report the new bot owes the admins, or None (nothing abnormal, or sent already)."""
    record = document.last_exit
    if record is None or not is_abnormal(record) or record.at == already_reported_at:
        return None
    current = time.time() if now is None else now
    recent = restarts_in_window(document.restart_times, current, policy.window_s)
    return CrashReport(record, len(recent), policy.max_restarts, policy.window_s)


class ReportMarker:
    """Which exit was last reported (its `at`), kept beside the ledger."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            value = json.loads(self.path.read_text()).get("reported_exit_at")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def save(self, exit_at: str) -> None:
        replace_private(self.path, json.dumps({"reported_exit_at": exit_at}).encode())
