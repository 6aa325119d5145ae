"""Backups, restores and key rotation of the bot's database, for `lunara backup|restore|keys`.

Backups use SQLite's online backup API in a single step: the copy is one consistent
snapshot taken under a read transaction, and in WAL mode the bot keeps writing
meanwhile. The copy is a self-contained file (rollback journal, not WAL), private to
the owner, written under a temporary name and renamed into place.

With Redis (``REDIS_URL``) the freshest trailing stops live there, and SQLite holds a
checkpoint at most 5 s older. A backup is still one file: right after the snapshot the
live stops are read and those newer than the copy's checkpoint are written into the
copy (by the start-up reconcile's rule, newest ``updated_at`` wins), for the positions
open in the copy only. The file alone holds the freshest stops of its positions; after a
restore the bot's start-up reconcile pushes them back into Redis.

A restore makes the restored file the one truth: the CLI clears the Redis stops first
(``stopstore.clear_live_stops``), otherwise the replaced database's newer stops in Redis
would win the reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite

from lunara.crypto import KeyRing
from lunara.storage import credentials
from lunara.storage.database import SchemaError, StorageError, open_database
from lunara.storage.migrations import APPLICATION_ID, KNOWN_TABLES, LATEST_VERSION, checked_table

if TYPE_CHECKING:
    from lunara.trading.stopstore import TrackedStop

LiveStops = Callable[[], Awaitable[Mapping[int, "TrackedStop"]]]
"""Reads the live trailing stops (from Redis), called right after the SQLite snapshot."""

logger = logging.getLogger("lunara.storage.backup")

BACKUP_FILE_MODE = 0o600
BUSY_TIMEOUT_S = 5.0
BACKUP_DIRECTORY_MODE = 0o700
SCHEDULED_NAME = re.compile(r"^lunara-\d{8}T\d{6}\.\d{3}Z\.db$")
"""Names `backup_into` gives its files; pruning never touches anything else."""


@dataclass(frozen=True)
class DatabaseSummary:
    """What an operator wants to know about a database file before trusting it."""

    path: Path
    schema_version: int
    row_counts: dict[str, int]
    size_bytes: int

    def __str__(self) -> str:
        """One line for people: "schema 5, users: 3, positions: 2, orders: 4, ..., 96 KiB"."""
        counts = ", ".join(
            f"{table.replace('_', ' ')}: {self.row_counts[table]}"
            for table in _SHOWN_TABLES
            if table in self.row_counts
        )
        size = self.size_bytes / 1024
        shown = f"{size:.0f} KiB" if size < 1024 else f"{size / 1024:.1f} MiB"
        return (
            f"schema {self.schema_version}, {counts}, {shown}"
            if counts
            else (f"schema {self.schema_version}, {shown}")
        )


_SHOWN_TABLES = ("users", "positions", "orders", "trailing_stops")


@dataclass(frozen=True)
class RestoreResult:
    restored: DatabaseSummary
    previous_copy: Path | None  # the database as it was before, kept beside it

    def __str__(self) -> str:
        kept = (
            f"; the database it replaced is kept as {self.previous_copy}"
            if self.previous_copy is not None
            else ""
        )
        return f"{self.restored}{kept}"


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool) -> Iterator[sqlite3.Connection]:
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    try:
        connection = sqlite3.connect(target, uri=read_only, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as error:
        raise StorageError(f"cannot open {path}: {error}") from None
    try:
        yield connection
    finally:
        connection.close()


def inspect_database(path: Path) -> DatabaseSummary:
    """Check that `path` is an intact Lunara database at a schema version we know."""
    if not path.is_file():
        raise StorageError(f"{path} does not exist")
    try:
        with _connect(path, read_only=True) as connection:
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            if application_id != APPLICATION_ID:
                raise SchemaError(f"{path} is not a Lunara database")
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if "schema_version" not in tables:
                raise SchemaError(f"{path} has no schema version: not a Lunara database")
            version = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if not isinstance(version, int) or not 1 <= version <= LATEST_VERSION:
                raise SchemaError(
                    f"{path} is at schema version {version}; "
                    f"this Lunara knows 1 to {LATEST_VERSION}"
                )
            check = connection.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise SchemaError(f"{path} is damaged: {check}")
            counts = {
                table: int(
                    connection.execute(f"SELECT COUNT(*) FROM {checked_table(table)}").fetchone()[0]
                )
                for table in sorted(tables & KNOWN_TABLES)
            }
    except sqlite3.DatabaseError as error:
        raise SchemaError(f"{path} is not a readable SQLite database: {error}") from None
    return DatabaseSummary(path, version, counts, path.stat().st_size)


def backup_database(
    src_path: Path,
    dest_path: Path,
    *,
    overwrite: bool = False,
    live_stops: LiveStops | None = None,
) -> DatabaseSummary:
    """Copy the live database to `dest_path` as one consistent snapshot.

    With `live_stops`, the copy's trailing-stop checkpoints are brought up to the live
    state before the file is renamed into place (see the module's docstring).
    """
    if not src_path.is_file():
        raise StorageError(f"no database at {src_path}")
    if dest_path.exists() and not overwrite:
        raise StorageError(f"{dest_path} already exists; choose another name")
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest_path.with_name(f".{dest_path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BACKUP_FILE_MODE)
        os.close(descriptor)
        try:
            with (
                _connect(src_path, read_only=False) as source,
                _connect(temporary, read_only=False) as copy,
            ):
                source.backup(copy)  # all pages in one step: one snapshot
                copy.execute("PRAGMA journal_mode = DELETE")
            refreshed = 0 if live_stops is None else asyncio.run(_refresh(temporary, live_stops))
        except sqlite3.Error as error:
            raise StorageError(f"backup of {src_path} failed: {error}") from None
        _fsync(temporary)
        os.replace(temporary, dest_path)
        _fsync(dest_path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    summary = inspect_database(dest_path)
    logger.info(
        "backed up %s to %s (schema %d, %d trailing stops newer in Redis)",
        src_path,
        dest_path,
        summary.schema_version,
        refreshed,
    )
    return summary


async def _refresh(copy_path: Path, live_stops: LiveStops) -> int:
    """Write the live stops newer than the copy's checkpoints into the copy."""
    from lunara.trading.stopstore import save_newer_stops

    async with aiosqlite.connect(copy_path, isolation_level=None) as copy:
        async with copy.execute("SELECT id FROM positions WHERE status = 'open'") as cursor:
            open_ids = {int(row[0]) for row in await cursor.fetchall()}
        live = await live_stops()
        # A position opened after the snapshot is not in the copy; one closed after it
        # is still open there and keeps its checkpoint.
        return await save_newer_stops(copy, {i: s for i, s in live.items() if i in open_ids})


def backup_into(
    directory: Path,
    src_path: Path,
    *,
    keep: int,
    live_stops: LiveStops | None = None,
    now: float | None = None,
) -> tuple[DatabaseSummary, list[Path]]:
    """A timestamped backup in `directory`, then only the newest `keep` of them remain.

    For scheduled backups (a systemd timer or cron). Returns the new backup's summary
    and the older backups removed.
    """
    if keep < 1:
        raise StorageError("keep at least one backup")
    directory.mkdir(parents=True, exist_ok=True, mode=BACKUP_DIRECTORY_MODE)
    moment = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(moment))
    millis = int(moment * 1000) % 1000
    summary = backup_database(
        src_path, directory / f"lunara-{stamp}.{millis:03d}Z.db", live_stops=live_stops
    )
    scheduled = sorted(
        (path for path in directory.iterdir() if SCHEDULED_NAME.match(path.name)),
        reverse=True,
    )
    removed = scheduled[keep:]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        logger.info("pruned %d old backups from %s", len(removed), directory)
    return summary, removed


def restore_database(backup_path: Path, dest_path: Path, *, is_running: bool) -> RestoreResult:
    """Replace the database with a validated backup, keeping a copy of the current one.

    `is_running` comes from the supervisor's view of the bot: restoring under a running
    bot would let it overwrite the restored data, so it is refused.
    """
    if is_running:
        raise StorageError("refusing to restore while the bot is running: run `lunara stop` first")
    summary = inspect_database(backup_path)
    previous: Path | None = None
    if dest_path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        previous = dest_path.with_name(f"{dest_path.name}.pre-restore-{stamp}")
        backup_database(dest_path, previous, overwrite=True)
    dest_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with (
            _connect(backup_path, read_only=True) as source,
            _connect(dest_path, read_only=False) as target,
        ):
            source.backup(target)
    except sqlite3.Error as error:
        raise StorageError(f"restore into {dest_path} failed: {error}") from None
    os.chmod(dest_path, BACKUP_FILE_MODE)
    restored = inspect_database(dest_path)
    logger.warning(
        "restored %s from %s (schema %d)", dest_path, backup_path, summary.schema_version
    )
    return RestoreResult(restored, previous)


def rotate_keys(db_path: Path, keyring: KeyRing) -> int:
    """Re-encrypt every stored secret under the ring's first key, all or nothing.

    Raises lunara.crypto.KeyMismatch (nothing changed) if any record was encrypted with
    a key the ring lacks. For the CLI, which has no event loop of its own.
    """
    if not db_path.is_file():
        raise StorageError(f"no database at {db_path}")
    return asyncio.run(_rotate(db_path, keyring))


async def _rotate(db_path: Path, keyring: KeyRing) -> int:
    connection = await open_database(db_path)
    try:
        count = await credentials.rotate_all(connection, keyring)
    finally:
        await connection.close()
    logger.info("re-encrypted %d credential records under key %s", count, keyring.primary_key_id)
    return count


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
