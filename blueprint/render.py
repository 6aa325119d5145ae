"""Terminal output for the CLI: a rich table on a terminal, plain `key: value` text otherwise.

Rich is imported only when a table is actually drawn, so scripts that pipe
`lunara status` (and the container HEALTHCHECK) never pay for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO


def wants_plain(stream: TextIO | None = None) -> bool:
    """Plain text when the output is not a terminal or the user asked for no colour."""
    stream = stream if stream is not None else sys.stdout
    if os.environ.get("NO_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def format_value(value: Any) -> str:
    """One human-readable cell: nested objects as compact JSON, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.10g}"  # a price keeps its own precision (0.55115, 62422.18177)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def print_json(document: Any, stream: TextIO | None = None) -> None:
    stream = stream if stream is not None else sys.stdout
    stream.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def print_mapping(title: str, rows: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """A two-column view of one record (status, config)."""
    stream = stream if stream is not None else sys.stdout
    if wants_plain(stream):
        width = max((len(key) for key in rows), default=0)
        for key, value in rows.items():
            stream.write(f"{key.ljust(width)}  {format_value(value)}\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, format_value(value))
    Console(file=stream).print(table)


def print_records(
    title: str,
    columns: Sequence[str],
    records: Iterable[Mapping[str, Any]],
    stream: TextIO | None = None,
) -> None:
    """Many records with the same columns (audit entries, trades)."""
    stream = stream if stream is not None else sys.stdout
    materialised = list(records)
    if wants_plain(stream):
        for record in materialised:
            stream.write("  ".join(format_value(record.get(column)) for column in columns) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for record in materialised:
        table.add_row(*(format_value(record.get(column)) for column in columns))
    Console(file=stream).print(table)


def print_status(report: Mapping[str, Any], as_json: bool, quiet: bool) -> None:
    """The one way a status report is printed, whoever computed it."""
    if quiet:
        return
    if as_json:
        print_json(dict(report))
        return
    readable = dict(report)
    readable["last_exit"] = describe_last_exit(report.get("last_exit"))
    readable["mirror"] = describe_mirror(report.get("mirror"))
    readable["dependencies"] = describe_dependencies(report.get("dependencies"))
    readable["standby"] = describe_standby(report.get("standby"))
    notes = report.get("notes")
    if isinstance(notes, list):  # sentences, read one after the other
        readable["notes"] = "; ".join(str(note) for note in notes) or None
    print_mapping(f"lunara: {report.get('state')}", readable)


def describe_last_exit(last_exit: Any) -> str | None:
    """``{code, signal, at, reason}`` as one line: "exit code 1 at 2026-...: reason"."""
    if not isinstance(last_exit, Mapping):
        return None if last_exit is None else str(last_exit)
    if last_exit.get("signal") is not None:
        how = f"signal {last_exit['signal']}"
    elif last_exit.get("code") is not None:
        how = f"exit code {last_exit['code']}"
    else:
        how = "exit"
    at = f" at {last_exit['at']}" if last_exit.get("at") else ""
    reason = f": {last_exit['reason']}" if last_exit.get("reason") else ""
    return f"{how}{at}{reason}"


def describe_standby(standby: Any) -> str | None:
    """``{host, home, pid}`` of the instance waiting to take over, as one line."""
    if not isinstance(standby, Mapping):
        return None if standby is None else str(standby)
    parts = [f"host {standby.get('host', '?')}"]
    if standby.get("home"):
        parts.append(f"home {standby['home']}")
    parts.append(f"pid {standby.get('pid', '?')}")
    return "waiting to take over: " + ", ".join(parts)


def describe_mirror(mirror: Any) -> str | None:
    """``{backend, healthy, synced_revision}`` as one line: "redis, healthy, revision 12"."""
    if not isinstance(mirror, Mapping):
        return None if mirror is None else str(mirror)
    backend = str(mirror.get("backend", "off"))
    if backend == "off":
        return "off"
    health = "healthy" if mirror.get("healthy") else "unreachable"
    revision = mirror.get("synced_revision")
    synced = "" if revision is None else f", revision {revision} synced"
    return f"{backend}, {health}{synced}"


def describe_dependencies(dependencies: Any) -> str | None:
    """``{telegram: {state, last_ok_at, ...}, ...}`` as one line: "telegram down (last ok
    2026-...), redis ok, exchange off, ai off"; the notes say why one is down."""
    if not isinstance(dependencies, Mapping):
        return None if dependencies is None else str(dependencies)
    parts: list[str] = []
    for name, view in dependencies.items():
        if not isinstance(view, Mapping):
            parts.append(f"{name} {view}")
            continue
        state = str(view.get("state", "?"))
        if state == "down":
            last_ok = view.get("last_ok_at")
            state += f" (last ok {last_ok})" if last_ok else " (not reached yet)"
        parts.append(f"{name} {state}")
    return ", ".join(parts)
