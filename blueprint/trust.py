"""What the control plane trusts on disk: only what the caller or root could have written.

The manifest says what program runs and who may do what; `.env` holds the secrets and
endpoints; the home holds the ledger whose pids `stop` signals and the socket the CLI
sends its token to. Root running `lunara start` in a shared directory must not run
another user's manifest, so each of them is refused (exit 6) unless it, and every
directory above it, is owned by the caller or root and writable by no one else, as
OpenSSH checks `authorized_keys` and sudo checks `sudoers`. A world-writable directory
with the sticky bit (`/tmp`) is fine above them: there, others cannot rename or replace
an entry they do not own.

Files written under the home are opened with `O_NOFOLLOW` (`open_private`,
`replace_private`): a symlink planted in the home never redirects a write of ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from blueprint.errors import ConfigError

if TYPE_CHECKING:
    import psutil

FILE_MODE = 0o600
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UntrustedPath(ConfigError):
    """A manifest, home or `.env` that someone else could have written (exit 6)."""


def trusted_uids(uid: int | None = None) -> frozenset[int]:
    """The owners we trust: the caller (default: the effective uid) and root."""
    return frozenset({os.geteuid() if uid is None else uid, 0})


def owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_owner_and_mode(
    info: os.stat_result, path: Path, what: str, uid: int | None = None
) -> None:
    """Refuse a file or directory (its `stat`) another user owns or others may write."""
    if stat.S_ISLNK(info.st_mode):
        raise UntrustedPath(f"{what} {path} is a symlink; give the real path instead")
    if info.st_uid not in trusted_uids(uid):
        raise UntrustedPath(
            f"{what} {path} is owned by {owner_name(info.st_uid)} (uid {info.st_uid}), "
            f"not by you ({owner_name(os.geteuid() if uid is None else uid)}) or root: "
            "they could change it, so it is not used"
        )
    writable = info.st_mode & _OTHERS_WRITE
    if writable and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
        raise UntrustedPath(
            f"{what} {path} is writable by its group or by others, so they could change "
            f"it; it is not used. Fix: chmod go-w {path}"
        )


def check_parents(path: Path, what: str, uid: int | None = None) -> None:
    """Refuse `path` when a directory above it (of the path as given, and of what it
    resolves to through symlinks) is another user's or writable by others, sticky ones
    (`/tmp`) aside."""
    absolute = Path(os.path.abspath(path))
    seen: set[Path] = set()
    for chain in (absolute.parents, Path(os.path.realpath(absolute)).parents):
        for directory in chain:
            if directory in seen:
                continue
            seen.add(directory)
            try:
                info = os.stat(directory)
            except FileNotFoundError:
                continue
            check_owner_and_mode(info, directory, f"{what} {path}: the directory", uid)


def check_trusted_file(path: Path, what: str, uid: int | None = None) -> None:
    """Refuse a file, or a directory above it, that another user could have written."""
    check_parents(path, what, uid)
    check_owner_and_mode(os.stat(path), path, what, uid)


def check_trusted_directory(path: Path, what: str, uid: int | None = None) -> None:
    """Refuse a directory that another user owns or others may write, its parents too."""
    check_parents(path, what, uid)
    check_owner_and_mode(os.stat(path), path, what, uid)


def open_private(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """`os.open` that never follows a symlink at `path` (ELOOP instead)."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def try_exclusive_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive `flock` on the file at `path` (made private if
    missing, never through a symlink), or None while another holds it. Closing the
    descriptor, or the holder's death, frees it."""
    descriptor = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def replace_private(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` atomically (a reader sees the old file or the new one, never
    a mix), mode 0600, through a fresh temporary file next to it. Every file of ours that
    is replaced whole is written here.

    The temporary name is `<name>.tmp` (so a crash leaves one known leftover, not many),
    which assumes one writer of `path` at a time: the ledger writes under its lock, every
    other file has one writing process. A symlink planted there, or at `path`, is removed
    rather than followed: the rename replaces the link itself, never what it points to.

    `durable` also flushes the file and then its directory to disk, so the new contents
    survive a power cut once this returns; it costs two syncs, so files rewritten every
    second (the heartbeat) do without.
    """
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a stale leftover, or a planted symlink: never written through
    descriptor = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """Flush a file or a directory (a rename in it, for one) to disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def flock_holders(path: Path) -> set[int]:
    """The pids holding a `flock` on the file at `path`, as the kernel lists them
    (`/proc/locks`); empty when the file is missing or no one holds it."""
    try:
        info = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return set()
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders: set[int] = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have a "->" field.
        if len(fields) < 6 or "->" in fields or fields[1] != "FLOCK":
            continue
        if fields[5] == wanted and fields[4].isdigit():
            holders.add(int(fields[4]))
    return holders


def is_ours(process: psutil.Process, lock: Path) -> bool:
    """Whether a `psutil.Process` is one of ours: it runs as our effective uid and holds
    our lock. A command line proves nothing (anyone can name their process anything)."""
    import psutil

    try:
        if process.uids().effective != os.geteuid():
            return False
    except psutil.Error:
        return False
    return bool(process.pid in flock_holders(lock))
