"""Reading the bot's log: the last N lines, and following it across size rotation."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
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
