"""The SQLite edge: opening the database, transactions, and the Decimal-as-text codec.

Connections run in autocommit mode; every write goes through `transaction`, which
serialises writers on one connection (an asyncio lock) and takes SQLite's write lock
up front (BEGIN IMMEDIATE) so a transaction never fails half-way on a busy database.
Money and quantities are stored as decimal text: binary floats would round them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import aiosqlite

from blueprint.errors import BlueprintError

BUSY_TIMEOUT_MS = 5_000
PAGE_CACHE_KIB = 512
"""SQLite's page cache per connection (its default is 2 MiB). The file's pages stay in the
OS's cache anyway; a smaller cache is full within minutes of a start, so the bot's memory
levels off early instead of growing with the database."""


class StorageError(BlueprintError):
    """An expected storage failure with a message fit for an operator or a trader."""


class RecordNotFound(StorageError):
    """The row asked for does not exist."""


class InvalidValue(StorageError):
    """A value was refused before it reached the database; names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class StateConflict(StorageError):
    """A change that contradicts the recorded state (closing a closed position, ...)."""


class SchemaError(StorageError):
    """The file is not a Lunara database, or its schema is newer than this code."""


@dataclass
class _WriterState:
    lock: asyncio.Lock
    owner: asyncio.Task[object] | None = None


_writers: weakref.WeakKeyDictionary[aiosqlite.Connection, _WriterState] = (
    weakref.WeakKeyDictionary()
)


async def connect(path: Path) -> aiosqlite.Connection:
    """A configured connection without migrations (migrations and backups build on it)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    connection = await aiosqlite.connect(path, isolation_level=None)
    try:
        connection.row_factory = aiosqlite.Row
        await connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = NORMAL")
        await connection.execute("PRAGMA foreign_keys = ON")
        await connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB:d}")
    except BaseException:
        await connection.close()
        raise
    return connection


async def open_database(path: Path) -> aiosqlite.Connection:
    """The bot's database, in WAL mode with foreign keys on, migrated to the latest schema."""
    from lunara.storage.migrations import apply_migrations

    connection = await connect(path)
    try:
        await apply_migrations(connection)
    except BaseException:
        await connection.close()
        raise
    return connection


@asynccontextmanager
async def transaction(connection: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One atomic unit of writes; nested use by the same task joins the outer transaction."""
    state = _writers.get(connection)
    if state is None:
        state = _writers[connection] = _WriterState(asyncio.Lock())
    task = asyncio.current_task()
    if task is not None and state.owner is task:
        yield connection
        return
    async with state.lock:
        state.owner = task
        try:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except sqlite3.IntegrityError as error:
                await connection.execute("ROLLBACK")
                raise StateConflict(f"the database refused the change: {error}") from error
            except BaseException:
                await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")
        finally:
            state.owner = None


def now_s() -> float:
    """Timestamps are UTC epoch seconds (REAL): simple arithmetic, no time zones."""
    return time.time()


def decimal_to_text(value: Decimal) -> str:
    """Plain positional notation (never 1E-8), trailing zeros kept as given."""
    if not value.is_finite():
        raise InvalidValue("decimal", "must be a finite number")
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def text_to_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise StorageError(f"stored decimal {text[:30]!r} is unreadable") from None
    if not value.is_finite():
        raise StorageError(f"stored decimal {text[:30]!r} is not finite")
    return value


def optional_decimal(text: str | None) -> Decimal | None:
    return None if text is None else text_to_decimal(text)
