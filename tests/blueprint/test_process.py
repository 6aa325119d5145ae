"""Process identity and tree termination against real processes and signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from blueprint.process import (
    find_process,
    identity_of,
    kill_tree,
    reap_children,
    tree_rss_bytes,
)
from tests.programs.harness import child_env, gone, kill_everything, program, read_tree, wait_until


@dataclass(frozen=True)
class Record:
    pid: int
    create_time: float


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    children: list[subprocess.Popen[bytes]] = []
    yield children
    kill_everything(psutil.Process(child.pid) for child in children if child.poll() is None)
    for child in children:
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def sleeper(spawned: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    spawned.append(child)
    return child


def test_a_record_names_its_process_only_while_the_create_time_matches(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    child = sleeper(spawned)
    pid, create_time = identity_of(psutil.Process(child.pid))
    assert find_process(Record(pid, create_time)) is not None
    assert find_process(Record(pid, create_time - 100)) is None
    assert find_process(None) is None


def test_a_dead_or_zombie_process_is_not_alive(spawned: list[subprocess.Popen[bytes]]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    spawned.append(child)
    record = Record(*identity_of(psutil.Process(child.pid)))
    wait_until(lambda: gone(psutil.Process(child.pid)), 10, "the child to exit")
    assert find_process(record) is None  # a zombie: exited, not yet reaped
    child.wait()
    assert find_process(record) is None


def test_tree_rss_counts_the_children(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.run(sys.argv[1:])",
            *program("memory_hog", "64"),
        ],
        env=child_env(tmp_path),
        stdout=subprocess.PIPE,
    )
    spawned.append(hog)
    assert hog.stdout is not None
    assert b"holding 64 MiB" in hog.stdout.readline()
    root = psutil.Process(hog.pid)
    assert root.memory_info().rss < 64 * 1024 * 1024
    assert tree_rss_bytes(root) > 64 * 1024 * 1024


def test_kill_tree_stops_a_cooperative_process_with_sigterm_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    bot = subprocess.Popen(
        program("healthy_bot"),
        env=child_env(tmp_path),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    spawned.append(bot)
    assert bot.stdout is not None and b"started" in bot.stdout.readline()
    result = kill_tree(psutil.Process(bot.pid), timeout_s=5)
    assert result.graceful and result.forced == 0
    assert bot.wait(timeout=5) == 0


def test_kill_tree_leaves_no_grandchild_of_a_bot_that_ignores_sigterm(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    pids = tmp_path / "tree.pids"
    bot = subprocess.Popen(
        program("stubborn_bot", str(pids)),
        env=child_env(tmp_path),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    spawned.append(bot)
    tree = read_tree(pids, expected=5)
    timeout = 1.0
    began = time.monotonic()
    result = kill_tree(psutil.Process(bot.pid), timeout_s=timeout)
    bot.wait(timeout=5)
    wait_until(
        lambda: all(gone(member) for member in tree), timeout + 1 - (time.monotonic() - began)
    )
    assert not result.graceful and result.forced == 5 and result.survivors == 0
    assert bot.returncode == -signal.SIGKILL


def test_reap_children_collects_exited_children_but_not_the_kept_one(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    kept = subprocess.Popen([sys.executable, "-c", "pass"])
    other = subprocess.Popen([sys.executable, "-c", "pass"])
    spawned.extend([kept, other])
    wait_until(
        lambda: gone(psutil.Process(kept.pid)) and gone(psutil.Process(other.pid)), 10, "exits"
    )
    reaped = reap_children(keep=[kept.pid])
    assert other.pid in [pid for pid, _ in reaped]
    assert kept.pid not in [pid for pid, _ in reaped]
    assert kept.wait(timeout=5) == 0  # its status was left for its owner
