"""What LUNARA_HOME holds is its owner's alone, and the audit log stays bounded.

The real bot under the real watchdog, started from a shell whose umask (022, the usual
default) would leave new files world-readable, in a home the operator made 0755.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import sys
from pathlib import Path

import pytest

from blueprint.audit import AuditLog, Decision
from blueprint.mirror import NullMirror
from tests.blueprint.cli_harness import (
    REAL_BOT_PROGRAM,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

UNDER_UMASK_022 = ("/bin/sh", "-c", 'umask 022; exec "$0" "$@"', sys.executable, "-m", "lunara.cli")
PROGRAM = REAL_BOT_PROGRAM


def _modes(home: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(os.lstat(home).st_mode)}
    for folder, directories, files in os.walk(home):
        for name in [*directories, *files]:
            path = Path(folder) / name
            found[str(path.relative_to(home))] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


@pytest.mark.slow
def test_every_file_the_bot_and_the_watchdog_write_is_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "logs").mkdir(mode=0o755)
    stale = home / "logs" / "bot.log.1"  # left readable by an older release
    stale.write_text("earlier run\n")
    os.chmod(stale, 0o644)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    env = {"LUNARA_HOME": str(home), "LUNARA_TICK_SECONDS": "0.2"}
    try:
        started = cli.run("start", "--wait", "60", entry=UNDER_UMASK_022, extra_env=env)
        assert started.returncode == 0, started.stderr
        written = (
            "lunara.db",
            "lunara.db-wal",
            "lunara.db-shm",
            "metrics.json",
            "dependencies.json",
            "logs/bot.log",
        )
        wait_until(lambda: all((home / name).exists() for name in written), 30, "the bot's files")
        assert cli.run("audit", entry=UNDER_UMASK_022, extra_env=env).returncode == 0
        modes = _modes(home)
        assert set(written) | {"audit.jsonl", "ledger.json", "logs/bot.log.1"} <= modes.keys()
        for name, mode in modes.items():
            is_directory = (home / name).is_dir()
            expected = 0o700 if is_directory else 0o600
            assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
            assert mode == expected or (home / name).is_socket(), f"{name} is {oct(mode)}"
    finally:
        cli.run("stop", "--timeout", "20", entry=UNDER_UMASK_022, extra_env=env)


def _entry(number: int) -> dict[str, object]:
    return {"n": number}


def test_the_audit_log_rotates_by_size_keeps_a_bounded_number_of_files_and_reads_across(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, NullMirror(), max_file_bytes=2_000, kept_files=3)
    for number in range(200):
        log.record("token:ci", "status", Decision.ALLOWED, "running", _entry(number))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    kept = [entry["detail"]["n"] for entry in log.tail(1_000)]
    # The newest entries, in order, across the files; the oldest went with the 4th file.
    assert kept == list(range(200 - len(kept), 200)) and 20 < len(kept) < 200
    assert [entry["detail"]["n"] for entry in log.tail(5)] == [195, 196, 197, 198, 199]


def _writer(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path), NullMirror(), max_file_bytes=4_000, kept_files=500)
    for number in range(count):
        log.record("token:ci", "status", Decision.ALLOWED, None, {"w": worker, "n": number})


def test_writers_racing_a_rotation_lose_and_tear_no_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_writer, args=(str(path), w, 150)) for w in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    lines = [
        line
        for file in tmp_path.iterdir()
        for line in file.read_text().splitlines()
        if line.strip()
    ]
    seen = sorted((entry["detail"]["w"], entry["detail"]["n"]) for entry in map(json.loads, lines))
    assert seen == sorted((w, n) for w in range(4) for n in range(150))
    assert len(list(tmp_path.iterdir())) > 10  # it did rotate, many times


def test_lunara_audit_shows_entries_from_the_rotated_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    older = AuditLog(home / "audit.jsonl", NullMirror())
    older.record("token:ci", "start", Decision.ALLOWED, "started", {"from": "rotated"})
    os.replace(home / "audit.jsonl", home / "audit.jsonl.1")
    shown = cli.run("audit", "--lines", "10", "--json")
    assert shown.returncode == 0, shown.stderr
    entries = json.loads(shown.stdout)
    assert entries[0]["detail"] == {"from": "rotated"}
    assert entries[-1]["action"] == "audit"
