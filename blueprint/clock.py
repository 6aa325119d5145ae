"""Timestamps as the control plane writes and reads them: ISO 8601 in UTC.

One format for writing (milliseconds, ``+00:00``: ``2026-12-06T05:11:33.900+00:00``),
so that the ledger, the audit log, the dependency report and the watchdog's log lines
read alike and sort as text; one parser for reading, which also takes what older
ledgers hold (microseconds, a ``Z`` suffix).
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_utc(moment: datetime) -> str:
    """``moment`` in the one written format (an aware datetime, in any zone)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def utc_iso(seconds: float) -> str:
    """Epoch seconds in the one written format; OverflowError, OSError or ValueError
    when the value is no time a calendar holds."""
    return format_utc(datetime.fromtimestamp(seconds, UTC))


def utc_now() -> str:
    """The current time in the one written format."""
    return format_utc(datetime.now(UTC))


def parse_iso(value: str | None) -> float | None:
    """Epoch seconds of an ISO 8601 time, None when there is none or it is not one.

    A time without a zone is read as UTC (everything here is written in UTC), never as
    the reader's local time.
    """
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
