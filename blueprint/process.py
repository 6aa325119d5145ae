"""Process identity, tree inspection and tree termination for the supervisor.

A pid alone does not name a process: pids are reused (and `pid_max` is often only
32768). Every process the supervisor records is stored with its create time, and the
functions here refuse to touch a pid whose create time differs from the record: such a
record is stale, its process is dead, and whatever now holds the pid is not ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import psutil

# psutil derives create times from the boot time in /proc/stat, a whole second that can
# tick over between two readers; a pid cannot cycle through pid_max within a second.
CREATE_TIME_TOLERANCE_S = 1.5
_POLL_S = 0.05
_AFTER_KILL_S = 5.0


class ProcessIdentity(Protocol):
    """What a ledger record says about a process (blueprint.ledger.ProcessRecord)."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...


def find_process(identity: ProcessIdentity | None) -> psutil.Process | None:
    """The live process a record names, or None when it is gone or the pid was reused.

    A zombie counts as gone: it runs no code and only waits for its parent to reap it.
    """
    if identity is None or identity.pid <= 0:
        return None
    try:
        process = psutil.Process(identity.pid)
        if abs(process.create_time() - identity.create_time) > CREATE_TIME_TOLERANCE_S:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def identity_of(process: psutil.Process) -> tuple[int, float]:
    """The (pid, create time) pair to record for a process."""
    return process.pid, process.create_time()


def is_gone(process: psutil.Process) -> bool:
    """True once a process exited (a zombie has exited; only its status remains).

    `is_running` compares the create time, so a pid reused since is not taken for ours.
    """
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def descendants(process: psutil.Process) -> list[psutil.Process]:
    """Every live descendant, collected now (before signals make them reparent)."""
    try:
        return list(process.children(recursive=True))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def tree_rss_bytes(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants: what the box actually pays."""
    total = 0
    for member in (process, *descendants(process)):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total


def signal_process(process: psutil.Process, signum: int) -> bool:
    """Send a signal unless the process is gone; psutil re-checks the create time first."""
    try:
        process.send_signal(signum)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False
    return True


def wait_gone(processes: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until every process is gone; return those still alive at the deadline."""
    remaining = [process for process in processes if not is_gone(process)]
    deadline = time.monotonic() + max(0.0, timeout_s)
    while remaining and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        remaining = [process for process in remaining if not is_gone(process)]
    return remaining


@dataclass(frozen=True)
class TreeStop:
    """How a tree stop went: `forced` counts the processes that needed SIGKILL."""

    graceful: bool
    forced: int
    survivors: int


def _group_of(process: psutil.Process) -> int | None:
    """The process group to signal: only one the process leads (started in its own session)."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return None
    return group if group == process.pid else None


def _signal_group(group: int | None, signum: int) -> None:
    if group is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def kill_tree(root: psutil.Process, timeout_s: float) -> TreeStop:
    """Stop a process and everything it started: SIGTERM, grace period, then SIGKILL.

    Descendants are collected before any signal, because a child whose parent dies is
    reparented and can no longer be found from the root. The group is signalled (the bot
    leads its own), then every process still alive after `timeout_s` - including
    descendants that left the group or were started during the grace period - is killed.
    Zombies are left to their parents; the caller reaps its own child.
    """
    if is_gone(root):
        return TreeStop(graceful=True, forced=0, survivors=0)
    group = _group_of(root)
    tree = [root, *descendants(root)]
    if group is None:
        signal_process(root, signal.SIGTERM)
    else:
        _signal_group(group, signal.SIGTERM)
    remaining = wait_gone(tree, timeout_s)
    if not remaining:
        return TreeStop(graceful=True, forced=0, survivors=0)
    late: list[psutil.Process] = []
    for process in remaining:
        late.extend(descendants(process))
    doomed = {process.pid: process for process in (*remaining, *late) if not is_gone(process)}
    _signal_group(group, signal.SIGKILL)
    for process in doomed.values():
        signal_process(process, signal.SIGKILL)
    survivors = wait_gone(doomed.values(), _AFTER_KILL_S)
    return TreeStop(graceful=False, forced=len(doomed), survivors=len(survivors))


def reap_children(keep: Iterable[int] = ()) -> list[tuple[int, int]]:
    """Reap exited children other than `keep`; return their (pid, wait status).

    The watchdog is a child subreaper (and may be PID 1 in a container), so the bot's
    orphans are reparented to it; unreaped, they would pile up as zombies. The bot itself
    is in `keep` because its exit status belongs to the code that watches it.
    """
    kept = set(keep)
    reaped: list[tuple[int, int]] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process().children():
            if child.pid in kept:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid:
                reaped.append((pid, status))
    return reaped


def become_subreaper() -> bool:
    """Ask Linux to reparent orphaned descendants to this process instead of PID 1.

    Then a bot's daemonised helpers stay findable (and killable) after the bot dies.
    Best effort: elsewhere it does nothing and returns False.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        return bool(libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
