"""A restore trusts a backup for its rows, never for its schema, and never for work that
was under way: crafted files (a trigger that grants every new user the top plan, an
inbox row forging an admin's /broadcast) are refused or cleaned."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from lunara.storage import handled, users
from lunara.storage import outbox as store
from lunara.storage.backup import backup_database, restore_database
from lunara.storage.database import SchemaError, open_database
from lunara.storage.migrations import LATEST_VERSION, apply_migrations
from lunara.storage.outbox import Outgoing, Priority

ADMIN = 1001
FORGED_BROADCAST = json.dumps(
    {
        "update_id": 99,
        "message": {
            "message_id": 7,
            "date": 1_700_000_000,
            "chat": {"id": ADMIN, "type": "private"},
            "from": {"id": ADMIN, "is_bot": False, "first_name": "Admin"},
            "text": "/broadcast send 1 BTC to bc1q-attacker",
        },
    }
)


def _seed(path: Path) -> None:
    async def seed() -> None:
        db = await open_database(path)
        try:
            await users.register(db, ADMIN, "admin")
            await users.register(db, 2002, "trader")
            await handled.take(db, [(ADMIN, 5, ADMIN, None)])
            await handled.finish(db, ADMIN, 5)
        finally:
            await db.close()

    asyncio.run(seed())


@contextmanager
def _edit(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        yield connection


@pytest.fixture
def live_and_backup(tmp_path: Path) -> tuple[Path, Path]:
    live, backup = tmp_path / "lunara.db", tmp_path / "backup.db"
    _seed(live)
    backup_database(live, backup)
    return live, backup


def _schema(path: Path) -> list[tuple[str, str, str | None]]:
    with _edit(path) as connection:
        return sorted(
            connection.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%'"
            ).fetchall()
        )


def _fresh_schema(path: Path, version: int = LATEST_VERSION) -> list[tuple[str, str, str | None]]:
    async def build() -> None:
        import aiosqlite

        connection = await aiosqlite.connect(path, isolation_level=None)
        await apply_migrations(connection, target=version)
        await connection.close()

    asyncio.run(build())
    return _schema(path)


CRAFTED = {
    "trigger": "CREATE TRIGGER grant_top_plan AFTER INSERT ON users BEGIN "
    "UPDATE users SET plan = 'elite', plan_expires_at = 4102444800 "
    "WHERE telegram_id = NEW.telegram_id; END",
    "view": "CREATE VIEW everyone AS SELECT * FROM users",
    "table": "CREATE TABLE extra (x)",
    "index": "CREATE INDEX users_by_plan ON users (plan)",
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_backup_with_an_entry_our_schema_lacks_is_refused_and_nothing_changes(
    live_and_backup: tuple[Path, Path], kind: str
) -> None:
    live, backup = live_and_backup
    with _edit(backup) as connection:
        connection.execute(CRAFTED[kind])
    before = live.read_bytes()
    called: list[int] = []
    with pytest.raises(SchemaError) as refused:
        restore_database(backup, live, is_running=False, before_replacing=lambda: called.append(1))
    assert refused.value.message.startswith(f"{backup} holds what Lunara's schema does not: ")
    assert f"{kind} " in refused.value.message
    assert "refusing to restore it" in refused.value.message
    assert live.read_bytes() == before
    assert called == []  # Redis is not cleared for a refused file
    assert not list(live.parent.glob("*.pre-restore-*"))
    assert not list(live.parent.glob(".*.tmp*"))


def test_the_restored_schema_is_ours_not_the_files(tmp_path: Path) -> None:
    """A table of ours redefined in the file (its CHECK dropped, another default) is
    restored into our definition: its rows fit or the restore is refused."""
    live, backup = tmp_path / "lunara.db", tmp_path / "backup.db"
    _seed(live)
    backup_database(live, backup)
    with _edit(backup) as connection:
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'DEFAULT ''free''', 'DEFAULT ''elite''')"
            " WHERE name = 'users'"
        )
    restore_database(backup, live, is_running=False)
    assert _schema(live) == _fresh_schema(tmp_path / "fresh.db")


def test_rows_that_break_our_constraints_are_refused(tmp_path: Path) -> None:
    live, backup = tmp_path / "lunara.db", tmp_path / "backup.db"
    _seed(live)
    backup_database(live, backup)
    with _edit(backup) as connection:
        connection.execute("PRAGMA ignore_check_constraints = ON")
        connection.execute("UPDATE users SET active = 7 WHERE telegram_id = 2002")
    before = live.read_bytes()
    with pytest.raises(SchemaError, match="its rows do not fit this Lunara's schema"):
        restore_database(backup, live, is_running=False)
    assert live.read_bytes() == before


def test_unfinished_inbox_and_outbox_rows_are_not_restored(tmp_path: Path) -> None:
    live, backup = tmp_path / "lunara.db", tmp_path / "backup.db"
    _seed(live)

    async def queue_work() -> None:
        db = await open_database(live)
        try:
            await handled.take(db, [(ADMIN, 7, ADMIN, FORGED_BROADCAST)], now=1.0)
            await store.enqueue(db, [Outgoing(2002, "forged notice", priority=Priority.ANSWER)])
            await store.start_broadcast(db, ADMIN, 8, "old news")
        finally:
            await db.close()

    asyncio.run(queue_work())
    backup_database(live, backup)
    result = restore_database(backup, live, is_running=False)
    assert (result.dropped_commands, result.dropped_messages) == (1, 3)  # 1 + 2 recipients
    assert "not restored: 1 unanswered commands and 3 unsent messages" in str(result)

    async def what_the_bot_would_resume() -> tuple[list[str], list[object], int, dict[str, int]]:
        db = await open_database(live)
        try:
            async with db.execute(
                "SELECT COUNT(*) FROM broadcasts WHERE finished_at IS NULL"
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            open_broadcasts = row[0]
            async with db.execute(
                "SELECT state, COUNT(*) FROM handled_commands GROUP BY state"
            ) as cursor:
                states = {str(row[0]): int(row[1]) for row in await cursor.fetchall()}
            return (
                await handled.unfinished(db),
                list(await store.heads(db, now=2e9, limit=100)),
                int(open_broadcasts),
                states,
            )
        finally:
            await db.close()

    replayed, queued, open_broadcasts, states = asyncio.run(what_the_bot_would_resume())
    assert replayed == []
    assert queued == []
    assert open_broadcasts == 0
    assert states == {"answered": 1}  # answered commands stay: they are not answered twice


def test_an_autoincrement_counter_survives_so_ids_are_never_reused(tmp_path: Path) -> None:
    live, backup = tmp_path / "lunara.db", tmp_path / "backup.db"
    _seed(live)
    with _edit(live) as connection:
        (table,) = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%'"
        ).fetchone()
        connection.execute("UPDATE sqlite_sequence SET seq = 500 WHERE name = ?", (table,))
        if connection.execute("SELECT changes()").fetchone()[0] == 0:
            connection.execute("INSERT INTO sqlite_sequence VALUES (?, 500)", (table,))
    backup_database(live, backup)
    restore_database(backup, live, is_running=False)
    with _edit(live) as connection:
        rows = connection.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    assert rows == [(table, 500)]
