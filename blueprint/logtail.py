"""Reading the bot's log: the last N lines, and following it across size rotation."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_CHUNK = 64 * 1024


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file without reading all of a large log into memory."""
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        buffer = b""
        while position > 0 and buffer.count(b"\n") <= count:
            step = min(_CHUNK, position)
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
    """Yield lines as they are appended; reopen when the file is rotated or truncated.

    Rotation renames the current file away and starts a new one, so a change of inode
    (or a file that got shorter) means: finish nothing more from the old handle and read
    the new file from its beginning.
    """
    yield from last_lines(path, start_lines)
    handle = None
    inode: int | None = None
    first_open = path.exists()  # a file that appears later is read from its start
    try:
        while not should_stop():
            if handle is None:
                if path.exists():
                    handle = path.open("r", encoding="utf-8", errors="replace")
                    stat = os.fstat(handle.fileno())
                    inode = stat.st_ino
                    if first_open:
                        handle.seek(0, os.SEEK_END)  # the tail above already showed it
                    first_open = False
                else:
                    time.sleep(poll_s)
                    continue
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
                first_open = False  # a new file: read it from its beginning
                continue
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()
