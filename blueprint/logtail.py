"""Reading the logs: the last N lines, following across size rotation, and the bot's log
and the watchdog's events interleaved in time order (what an operator reads first)."""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

_CHUNK = 64 * 1024


def last_lines(path: Path, count: int, since: int = 0) -> list[str]:
    """The last `count` lines of a file without reading all of a large log into memory.

    `since` is an offset (the file's size when a run began): nothing before it is read,
    so one run's lines are told apart from earlier runs' in a log they all append to. A
    file now shorter than `since` was rotated or truncated: it is read from its start.
    """
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        floor = since if 0 <= since <= position else 0
        buffer = b""
        while position > floor and buffer.count(b"\n") <= count:
            step = min(_CHUNK, position - floor)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
    lines = buffer.decode("utf-8", errors="replace").splitlines()
    return lines[-count:]


def follow(
    path: Path,
    *,
    start_lines: int = 10,
    poll_s: float = 0.25,
    should_stop: Callable[[], bool] = lambda: False,
    from_offset: int | None = None,
) -> Iterator[str]:
    """Yield the last `start_lines` lines, then lines as they are appended; reopen the
    file when it is rotated (a new inode) or truncated, reading the new one from its start.

    The tail and the follow share one open handle, positioned where the tail ended, so a
    line appended in between is never lost.
    """
    handle = None
    inode: int | None = None
    first_open = True
    try:
        while not should_stop():
            if handle is None:
                if not path.exists():
                    first_open = False  # a file that appears later is read from its start
                    time.sleep(poll_s)
                    continue
                handle = path.open("r", encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
                if first_open:
                    size = os.fstat(handle.fileno()).st_size
                    if from_offset is not None:  # the caller showed the file up to here
                        handle.seek(from_offset if from_offset <= size else 0)
                    else:
                        yield from _lines_before(path, size, start_lines)
                        handle.seek(size)
                first_open = False
            line = handle.readline()
            if line:
                yield line.rstrip("\n")
                continue
            try:
                current = path.stat()
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != inode or current.st_size < handle.tell():
                handle.close()
                handle = None
                continue
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()


def _lines_before(path: Path, size: int, count: int) -> list[str]:
    """The last `count` complete lines within the first `size` bytes of the file."""
    if count <= 0 or size <= 0:
        return []
    with path.open("rb") as handle:
        start = max(0, size - _CHUNK)
        while True:
            handle.seek(start)
            buffer = handle.read(size - start)
            if start == 0 or buffer.count(b"\n") > count:
                break
            start = max(0, start - _CHUNK)
    return buffer.decode("utf-8", errors="replace").splitlines()[-count:]


# "2026-12-06 05:11:34,038 INFO ..." (the bot's text log), "2026-12-06T05:11:34.038000+00:00
# watchdog[1]: ..." (the watchdog), {"at": "2026-12-06T05:11:34.038Z", ...} (JSON logs):
# all UTC, reduced to one sortable "YYYY-MM-DDTHH:MM:SS.mmm".
_TEXT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:[.,](\d{1,6}))?")
_JSON_TIME = re.compile(r'"at":\s*"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?')


def line_time(line: str) -> str | None:
    """The sortable UTC time a log line starts with, or None (a traceback's lines)."""
    match = _TEXT_TIME.match(line) or _JSON_TIME.search(line[:200])
    if match is None:
        return None
    fraction = (match.group(3) or "").ljust(3, "0")[:3]
    return f"{match.group(1)}T{match.group(2)}.{fraction}"


def interleave(sources: Sequence[Sequence[str]]) -> list[str]:
    """The lines of several logs in time order; a line without a time (a traceback)
    stays right after the line before it in its own log, and ties keep each log's order."""
    keyed: list[tuple[str, int, int, str]] = []
    for source, lines in enumerate(sources):
        current = ""
        for index, line in enumerate(lines):
            current = line_time(line) or current
            keyed.append((current, source, index, line))
    keyed.sort(key=lambda item: (item[0], item[1], item[2]))
    return [line for _, _, _, line in keyed]


def follow_many(
    paths: Sequence[Path], *, start_lines: int = 10, poll_s: float = 0.25
) -> Iterator[str]:
    """The interleaved last `start_lines` lines of `paths`, then their new lines as they
    come (each file followed across rotation, as `follow` does)."""
    sizes = {path: (path.stat().st_size if path.exists() else None) for path in paths}
    tails = [_lines_before(path, size, start_lines) for path, size in sizes.items() if size]
    if start_lines > 0:
        yield from interleave(tails)[-start_lines:]
    lines: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def pump(path: Path) -> None:
        # From where the tail ended: a line appended meanwhile is shown, not skipped.
        offset = sizes[path] if sizes[path] is not None else None
        for line in follow(
            path, start_lines=0, poll_s=poll_s, should_stop=stop.is_set, from_offset=offset
        ):
            lines.put(line)

    workers = [threading.Thread(target=pump, args=(path,), daemon=True) for path in paths]
    for worker in workers:
        worker.start()
    try:
        while True:
            yield lines.get()
    finally:
        stop.set()
