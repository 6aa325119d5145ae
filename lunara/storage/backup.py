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
(``stops.clear_live_stops``), otherwise the replaced database's newer stops in Redis
would win the reconcile.

A restore trusts the file for its rows, never for its schema: a backup can come from
anywhere (a download, a shared disk), and SQLite runs what its schema holds. A fresh
database is built by our migrations at the backup's version and the rows are copied
into it table by table, column by column; anything else in the file (a trigger, a
view, a table or index we do not make) refuses the restore, naming it. Work that was
under way when the backup was taken is not restored: commands taken but not answered
(the bot would run them again on start, as if their sender had just asked) and
messages still queued in the outbox (it would send them). Their senders ask again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from blueprint.trust import fsync_path
from lunara.crypto import KeyRing
from lunara.storage import credentials
from lunara.storage.database import SchemaError, StorageError, open_database
from lunara.storage.migrations import APPLICATION_ID, KNOWN_TABLES, LATEST_VERSION, checked_table

if TYPE_CHECKING:
    from lunara.trading.stops import TrackedStop

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
    dropped_commands: int = 0  # taken but never answered when the backup was made
    dropped_messages: int = 0  # still queued in the outbox when the backup was made

    def __str__(self) -> str:
        kept = (
            f"; the database it replaced is kept as {self.previous_copy}"
            if self.previous_copy is not None
            else ""
        )
        dropped = (
            f"; not restored: {self.dropped_commands} unanswered commands and "
            f"{self.dropped_messages} unsent messages (work under way at backup time)"
            if self.dropped_commands or self.dropped_messages
            else ""
        )
        return f"{self.restored}{kept}{dropped}"


# Rows that are work under way, never restored (see the module's docstring), by table.
_UNFINISHED: dict[str, str] = {
    "handled_commands": "state = 'started'",
    "outbox": "state = 'queued'",
}
# Tables whose rows are ours, not the file's: the migrations that built the copy wrote them.
_NOT_COPIED = frozenset({"schema_version"})
# Entries SQLite itself may add (statistics after ANALYZE or PRAGMA optimize); not copied.
_SQLITE_STATISTICS = re.compile(r"^sqlite_stat\d$")


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
        fsync_path(temporary)
        os.replace(temporary, dest_path)
        fsync_path(dest_path.parent)
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
    from lunara.trading.stops import save_newer_stops

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


def restore_database(
    backup_path: Path,
    dest_path: Path,
    *,
    is_running: bool,
    before_replacing: Callable[[], object] | None = None,
) -> RestoreResult:
    """Replace the database with a validated backup, keeping a copy of the current one.

    `is_running` comes from the supervisor's view of the bot: restoring under a running
    bot would let it overwrite the restored data, so it is refused. The backup's rows
    are copied into a schema our migrations built (see the module's docstring); only
    once that copy is made does anything change: `before_replacing` runs (the CLI
    clears Redis's stops there), then the current database is kept aside and replaced.
    """
    if is_running:
        raise StorageError("refusing to restore while the bot is running: run `lunara stop` first")
    summary = inspect_database(backup_path)
    dest_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    clean = dest_path.with_name(f".{dest_path.name}.restore-{os.getpid()}.tmp")
    _remove_database_files(clean)
    try:
        dropped = _clean_copy(backup_path, clean, summary.schema_version)
        if before_replacing is not None:
            before_replacing()
        previous: Path | None = None
        if dest_path.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            previous = dest_path.with_name(f"{dest_path.name}.pre-restore-{stamp}")
            backup_database(dest_path, previous, overwrite=True)
        try:
            with (
                _connect(clean, read_only=True) as source,
                _connect(dest_path, read_only=False) as target,
            ):
                source.backup(target)
        except sqlite3.Error as error:
            raise StorageError(f"restore into {dest_path} failed: {error}") from None
    finally:
        _remove_database_files(clean)
    os.chmod(dest_path, BACKUP_FILE_MODE)
    restored = inspect_database(dest_path)
    logger.warning(
        "restored %s from %s (schema %d; not restored: %d unanswered commands, %d unsent messages)",
        dest_path,
        backup_path,
        summary.schema_version,
        dropped.get("handled_commands", 0),
        dropped.get("outbox", 0),
    )
    return RestoreResult(
        restored,
        previous,
        dropped_commands=dropped.get("handled_commands", 0),
        dropped_messages=dropped.get("outbox", 0),
    )


def _clean_copy(backup_path: Path, clean: Path, version: int) -> dict[str, int]:
    """Build our schema at `version` in `clean` and copy the backup's rows into it;
    the rows of work under way that were left out, by table."""
    asyncio.run(_build_schema(clean, version))
    descriptor = os.open(clean, os.O_RDONLY)  # created by SQLite: make it private now
    try:
        os.fchmod(descriptor, BACKUP_FILE_MODE)
    finally:
        os.close(descriptor)
    try:
        connection = sqlite3.connect(clean, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as error:
        raise StorageError(f"cannot build the restored copy at {clean}: {error}") from None
    try:
        # The backup's schema may hold SQL (a view, a trigger, a default); none of it is
        # to run here, and with trusted_schema off no function it names can.
        connection.execute("PRAGMA trusted_schema = OFF")
        source_uri = f"{backup_path.resolve().as_uri()}?mode=ro"
        connection.execute("ATTACH DATABASE ? AS backup", (source_uri,))
        tables = _check_entries(connection, backup_path)
        connection.execute("BEGIN IMMEDIATE")
        dropped = _copy_rows(connection, backup_path, tables)
        problems = connection.execute("PRAGMA main.foreign_key_check").fetchall()
        if problems:
            table, rowid, parent, _ = problems[0]
            raise SchemaError(
                f"{backup_path}: a row of {table} (rowid {rowid}) names a {parent} row the "
                f"file does not hold ({len(problems)} such rows); refusing to restore it"
            )
        connection.execute("COMMIT")
        connection.execute("DETACH DATABASE backup")
    except sqlite3.Error as error:
        raise SchemaError(
            f"{backup_path}: its rows do not fit this Lunara's schema ({error}); "
            "refusing to restore it"
        ) from None
    finally:
        connection.close()
    return dropped


async def _build_schema(path: Path, version: int) -> None:
    from lunara.storage.migrations import apply_migrations

    connection = await aiosqlite.connect(path, isolation_level=None)
    try:
        await connection.execute("PRAGMA journal_mode = DELETE")
        await apply_migrations(connection, target=version)
    finally:
        await connection.close()


def _entries(connection: sqlite3.Connection, schema: str) -> set[tuple[str, str]]:
    return {
        (str(kind), str(name))
        for kind, name in connection.execute(
            f"SELECT type, name FROM {schema}.sqlite_master"  # schema: main or backup
        )
        if not _SQLITE_STATISTICS.match(str(name))
    }


def _check_entries(connection: sqlite3.Connection, backup_path: Path) -> list[str]:
    """Refuse a backup whose schema holds anything ours at its version does not; the
    tables to copy, in the order our migrations made them."""
    ours = _entries(connection, "main")
    theirs = _entries(connection, "backup")
    unknown = sorted(theirs - ours)
    if unknown:
        shown = ", ".join(f"{kind} {json.dumps(name)}" for kind, name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise SchemaError(
            f"{backup_path} holds what Lunara's schema does not: {shown}{more}; refusing to "
            "restore it (a backup made by `lunara backup` holds only Lunara's tables and "
            "indexes)"
        )
    missing = sorted(name for kind, name in ours - theirs if kind == "table")
    if missing:
        raise SchemaError(
            f"{backup_path} lacks tables of its schema version: {', '.join(missing)}; "
            "refusing to restore it"
        )
    return [
        str(row[0])
        for row in connection.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY rowid"
        )
    ]


def _columns(connection: sqlite3.Connection, schema: str, table: str) -> list[str]:
    rows = connection.execute(f"PRAGMA {schema}.table_info({json.dumps(table)})").fetchall()
    return [str(row[1]) for row in rows]


def _copy_rows(
    connection: sqlite3.Connection, backup_path: Path, tables: list[str]
) -> dict[str, int]:
    dropped: dict[str, int] = {}
    for table in tables:
        if table in _NOT_COPIED or table == "sqlite_sequence":
            continue
        columns = _columns(connection, "main", table)
        if sorted(columns) != sorted(_columns(connection, "backup", table)):
            raise SchemaError(
                f"{backup_path}: table {table} does not have the columns of its schema "
                "version; refusing to restore it"
            )
        quoted = ", ".join(json.dumps(column) for column in columns)
        name = json.dumps(table)
        keep = f"WHERE NOT ({_UNFINISHED[table]})" if table in _UNFINISHED else ""
        # Rows our migrations wrote (the deployment's identity) give way to the backup's.
        connection.execute(f"DELETE FROM main.{name}")
        connection.execute(
            f"INSERT INTO main.{name} ({quoted}) SELECT {quoted} FROM backup.{name} {keep}"
        )
        if table in _UNFINISHED:
            dropped[table] = int(
                connection.execute(
                    f"SELECT COUNT(*) FROM backup.{name} WHERE {_UNFINISHED[table]}"
                ).fetchone()[0]
            )
    if "sqlite_sequence" in tables:
        # Copying rows with their ids already moved our counters; the backup's may be
        # higher (rows deleted since), and ids are never to be reused.
        connection.execute("DELETE FROM main.sqlite_sequence")
        connection.execute(
            "INSERT INTO main.sqlite_sequence (name, seq) SELECT name, seq"
            " FROM backup.sqlite_sequence WHERE name IN (SELECT name FROM main.sqlite_master)"
        )
    if "broadcasts" in tables:
        # Its unsent messages were left out: nothing will ever finish it otherwise.
        connection.execute(
            "UPDATE main.broadcasts SET finished_at = ? WHERE finished_at IS NULL", (time.time(),)
        )
    return dropped


def _remove_database_files(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


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
