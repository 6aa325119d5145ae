"""The heartbeat file: atomic beats, ages, and the async loop the bot runs."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from blueprint.heartbeat import (
    clear_heartbeat,
    heartbeat_loop,
    heartbeat_mtime,
    write_heartbeat,
)
from tests.waiting import until


def test_no_heartbeat_has_no_time(tmp_path: Path) -> None:
    assert heartbeat_mtime(tmp_path / "heartbeat") is None


def test_beats_leave_no_temporary_files_and_clear_forgets_them(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    for _ in range(20):
        write_heartbeat(path)
    assert sorted(os.listdir(tmp_path)) == ["heartbeat"]
    clear_heartbeat(path)
    clear_heartbeat(path)
    assert heartbeat_mtime(path) is None


def test_a_reader_never_sees_a_half_written_beat(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    write_heartbeat(path)
    done = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            write_heartbeat(path)
    finally:
        done.set()
        reader.join()
    assert seen
    for content in seen:
        stamp, pid = content.split()
        assert float(stamp) > 0
        assert int(pid) == os.getpid()


async def test_heartbeat_loop_beats_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    stop = asyncio.Event()
    task = asyncio.create_task(heartbeat_loop(path, stop, interval_s=0.02))
    mtimes: set[float | None] = set()

    def three_beats() -> bool:
        mtimes.add(heartbeat_mtime(path))
        return len(mtimes - {None}) >= 3

    await until(three_beats, 10, "three beats", poll_s=0.005)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert task.done()
    assert task.exception() is None
