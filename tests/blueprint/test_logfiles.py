"""Captured-output logs stay bounded: rotation keeps a fixed number of backups."""

from __future__ import annotations

import os
from pathlib import Path

from blueprint.logfiles import open_append, rotate_if_large


def test_small_file_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("short\n")
    assert rotate_if_large(log, max_bytes=100) is False
    assert log.read_text() == "short\n"


def test_large_file_is_shifted_and_oldest_backup_dropped(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    for generation in range(5):
        log.write_text(f"generation {generation}\n" * 20)
        assert rotate_if_large(log, max_bytes=50, backups=3) is True
    assert not log.exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.log.1", "out.log.2", "out.log.3"]
    assert (tmp_path / "out.log.1").read_text().startswith("generation 4")
    assert (tmp_path / "out.log.3").read_text().startswith("generation 2")


def test_open_append_rotates_then_appends_privately(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("x" * 200)
    descriptor = open_append(log, max_bytes=100, backups=1)
    try:
        os.write(descriptor, b"fresh\n")
    finally:
        os.close(descriptor)
    assert log.read_text() == "fresh\n"
    assert (tmp_path / "out.log.1").read_text() == "x" * 200
    assert log.stat().st_mode & 0o077 == 0
