"""The audit log: every authorization decision and its outcome, one JSON line each.

Several CLI processes (and the bot) may write at once, so each entry is a single
`write` on an `O_APPEND` descriptor, under an exclusive `flock` held for just that
write: the entry lands whole at the end of the file and lines never interleave.
Reading is forgiving: a corrupt line (a crash mid-write, a hand edit) is skipped, never
fatal, because the audit log is most wanted when something went wrong.

The log is rotated by size, like logrotate's ``size`` and ``rotate`` (a health check
every 30 s writes thousands of lines a day): past ``MAX_FILE_BYTES`` the file becomes
``audit.jsonl.1`` (the older ones move up, the oldest of ``KEPT_FILES`` is dropped) and a
new one is started. The writer that rotates holds the lock; a writer that opened the old
file meanwhile sees, once it has the lock, that the name points to a new file and
starts over. Reading walks the rotated files too.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from blueprint.clock import format_utc
from blueprint.errors import BlueprintError, PermissionDenied
from blueprint.manifest import Manifest, Permission
from blueprint.mirror import Mirror
from blueprint.redaction import Redactor
from blueprint.units import MIB

FILE_MODE = 0o600
MAX_FILE_BYTES = 4 * MIB
KEPT_FILES = 5
_OPEN_ATTEMPTS = 100  # each retry means another writer rotated meanwhile: progress
_READ_BLOCK = 64 * 1024


class Decision(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"


class AuditWriteError(BlueprintError):
    """The audit log cannot be written; acting without a record is not allowed."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def redact(detail: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `detail` with the values of secret-looking keys replaced and secret
    shapes blanked out of text, at any depth, whatever a caller passes in."""
    return Redactor().redact_mapping(detail)


class AuditLog:
    """Append-only JSON-lines log at `path`, copied to the mirror entry by entry."""

    def __init__(
        self,
        path: Path,
        mirror: Mirror,
        clock: Callable[[], datetime] = _utc_now,
        *,
        max_file_bytes: int = MAX_FILE_BYTES,
        kept_files: int = KEPT_FILES,
    ) -> None:
        if max_file_bytes <= 0 or kept_files < 1:
            raise ValueError("the audit log needs a positive size bound and one kept file")
        self.path = path
        self._mirror = mirror
        self._clock = clock
        self._max_file_bytes = max_file_bytes
        self._kept_files = kept_files

    def rotated(self, number: int) -> Path:
        """The `number`-th older file (1 is the most recent one rotated away)."""
        return self.path.with_name(f"{self.path.name}.{number}")

    def files(self) -> list[Path]:
        """The current file and the rotated ones, newest first."""
        return [self.path, *(self.rotated(n) for n in range(1, self._kept_files + 1))]

    def record(
        self,
        principal: str,
        action: str,
        decision: Decision,
        outcome: str | None = None,
        detail: Mapping[str, Any] | None = None,
        *,
        permission: str | None = None,
    ) -> dict[str, Any]:
        """Write one entry and mirror it; raise AuditWriteError if the file cannot be written."""
        entry: dict[str, Any] = {
            "at": format_utc(self._clock()),
            "principal": principal,
            "action": action,
            "permission": permission,
            "decision": str(Decision(decision)),
            "outcome": outcome,
            "detail": redact(detail) if detail is not None else None,
        }
        line = json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
        self._append(line.encode("utf-8", "backslashreplace"))
        self._mirror.append_audit(entry)
        return entry

    def _append(self, data: bytes) -> None:
        for _ in range(_OPEN_ATTEMPTS):
            try:
                fd = os.open(
                    self.path,
                    os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                    FILE_MODE,
                )
            except OSError as error:
                raise AuditWriteError(
                    f"cannot write the audit log {self.path}: {error.strerror}"
                ) from None
            try:
                if self._append_locked(fd, data):
                    return
            except OSError as error:
                raise AuditWriteError(
                    f"cannot write the audit log {self.path}: {error.strerror}"
                ) from None
            finally:
                os.close(fd)
        raise AuditWriteError(f"cannot write the audit log {self.path}: it keeps being replaced")

    def _append_locked(self, fd: int, data: bytes) -> bool:
        """Write under the lock; False when the file was rotated away (open it again)."""
        # The lock makes the rotation, the torn-line check and the append one step, and
        # keeps lines whole even where O_APPEND alone is not atomic (NFS). Held for one write.
        fcntl.flock(fd, fcntl.LOCK_EX)
        info = os.fstat(fd)
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
            return False
        if info.st_size > 0 and info.st_size + len(data) > self._max_file_bytes:
            self._rotate()
            return False
        if info.st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
        # A line cut short by a crash must not swallow this entry: start a fresh line.
        if info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n":
            data = b"\n" + data
        written = os.write(fd, data)
        if written != len(data):
            raise AuditWriteError(
                f"cannot write the audit log {self.path}: short write (disk full?)"
            )
        return True

    def _rotate(self) -> None:
        """audit.jsonl.N-1 → .N, ..., audit.jsonl → .1; the oldest beyond the bound goes."""
        for number in range(self._kept_files - 1, 0, -1):
            older = self.rotated(number)
            if older.exists():
                os.replace(older, self.rotated(number + 1))
        os.replace(self.path, self.rotated(1))

    def tail(self, lines: int) -> list[dict[str, Any]]:
        """The last `lines` readable entries, oldest first; corrupt lines are skipped."""
        if lines <= 0:
            return []
        newest_first: list[dict[str, Any]] = []
        for raw in self._lines_from_end():
            entry = _parse(raw)
            if entry is not None:
                newest_first.append(entry)
                if len(newest_first) == lines:
                    break
        newest_first.reverse()
        return newest_first

    def _lines_from_end(self) -> Iterator[bytes]:
        """Yield every line, last first: the current file, then the rotated ones."""
        for path in self.files():
            yield from _lines_from_end_of(path)


def _lines_from_end_of(path: Path) -> Iterator[bytes]:
    """Yield a file's lines, last first, reading backwards a block at a time."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        remainder = b""
        while position > 0:
            size = min(_READ_BLOCK, position)
            position -= size
            handle.seek(position)
            chunk = handle.read(size) + remainder
            parts = chunk.split(b"\n")
            remainder = parts[0]
            yield from reversed(parts[1:])
        yield remainder


def _parse(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def identify(
    manifest: Manifest,
    audit: AuditLog,
    token: str | None,
    permission: Permission,
    action: str,
    uid: int | None = None,
) -> str:
    """The caller's principal; a token that matches none is refused and audited as such."""
    from blueprint.identity import UNKNOWN_TOKEN_PRINCIPAL, UnknownToken, principal_for

    try:
        return principal_for(manifest, token, uid)
    except UnknownToken:
        audit.record(
            UNKNOWN_TOKEN_PRINCIPAL,
            action,
            Decision.DENIED,
            outcome="unknown token",
            permission=permission,
        )
        raise


def authorize(
    manifest: Manifest, audit: AuditLog, principal: str, permission: Permission, action: str
) -> None:
    """Allow or refuse `permission` for `principal`, auditing the decision either way."""
    role = manifest.role_of(principal)
    if manifest.allows(principal, permission):
        audit.record(
            principal, action, Decision.ALLOWED, detail={"role": role}, permission=permission
        )
        return
    audit.record(
        principal,
        action,
        Decision.DENIED,
        outcome="refused",
        detail={"role": role},
        permission=permission,
    )
    raise PermissionDenied(f"{principal} may not {permission} (role: {role or 'none'})")
