"""The SQLite edge: opening the database and transactions.

Connections run in autocommit mode; every write goes through `transaction`, which
serialises writers on one connection (an asyncio lock) and takes SQLite's write lock
up front (BEGIN IMMEDIATE) so a transaction never fails half-way on a busy database.
Money and quantities are stored as decimal text: binary floats would round them.

The errors (`lunara.storage.errors`) and the codec (`lunara.storage.codec`) live below
this module and are re-exported here, so the migrations can use them without importing
the module that runs them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from lunara.storage.codec import decimal_to_text, now_s, optional_decimal, text_to_decimal
from lunara.storage.errors import (
    InvalidValue,
    RecordNotFound,
    SchemaError,
    StateConflict,
    StorageError,
)

BUSY_TIMEOUT_MS = 5_000
PAGE_CACHE_KIB = 512
"""SQLite's page cache per connection (its default is 2 MiB). The file's pages stay in the
OS's cache anyway; a smaller cache is full within minutes of a start, so the bot's memory
levels off early instead of growing with the database."""


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


__all__ = [
    "BUSY_TIMEOUT_MS",
    "PAGE_CACHE_KIB",
    "InvalidValue",
    "RecordNotFound",
    "SchemaError",
    "StateConflict",
    "StorageError",
    "connect",
    "decimal_to_text",
    "now_s",
    "open_database",
    "optional_decimal",
    "text_to_decimal",
    "transaction",
]
