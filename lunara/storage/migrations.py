"""The schema, as an ordered list of migrations, and the code that applies them.

Each migration runs in one transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on any
error) and records itself in `schema_version`, so a database from any earlier
release upgrades step by step and a failed step leaves the previous version intact.
Add a migration at the end; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from lunara.storage.codec import now_s
from lunara.storage.errors import SchemaError

# "LUNA" in ASCII: marks the file as a Lunara database in the SQLite header.
APPLICATION_ID = 0x4C554E41


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


_SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)"""

_CORE_TABLES = (
    f"PRAGMA application_id = {APPLICATION_ID:d}",
    """CREATE TABLE users (
        telegram_id INTEGER PRIMARY KEY CHECK (telegram_id > 0),
        username TEXT,
        role_hint TEXT,
        plan TEXT NOT NULL DEFAULT 'free',
        plan_expires_at REAL,
        active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
        created_at REAL NOT NULL,
        last_seen_at REAL
    )""",
    """CREATE TABLE exchange_credentials (
        user_id INTEGER NOT NULL REFERENCES users (telegram_id) ON DELETE CASCADE,
        exchange TEXT NOT NULL,
        api_key_encrypted BLOB NOT NULL,
        api_secret_encrypted BLOB NOT NULL,
        key_fingerprint TEXT NOT NULL CHECK (length(key_fingerprint) <= 4),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (user_id, exchange)
    )""",
    """CREATE TABLE user_settings (
        user_id INTEGER PRIMARY KEY REFERENCES users (telegram_id) ON DELETE CASCADE,
        stake_usdt TEXT NOT NULL,
        symbols TEXT NOT NULL,
        trailing_stop_positive REAL,
        trailing_stop_positive_offset REAL NOT NULL DEFAULT 0,
        trailing_only_offset_is_reached INTEGER NOT NULL DEFAULT 0,
        stoploss REAL NOT NULL,
        auto_mode INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE positions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users (telegram_id),
        symbol TEXT NOT NULL,
        quantity TEXT NOT NULL,
        entry_price TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
        opened_at REAL NOT NULL,
        closed_at REAL,
        exit_price TEXT,
        exit_reason TEXT,
        entry_client_order_id TEXT,
        exit_client_order_id TEXT
    )""",
    "CREATE INDEX positions_by_status ON positions (status, user_id)",
    "CREATE INDEX positions_by_user ON positions (user_id, opened_at)",
    """CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (telegram_id),
        position_id INTEGER REFERENCES positions (id),
        symbol TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
        quantity TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'sent', 'filled', 'rejected', 'unknown')),
        exchange_order_id TEXT,
        fill_price TEXT,
        fee TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX orders_by_status ON orders (status)",
    """CREATE TABLE paper_balances (
        user_id INTEGER NOT NULL REFERENCES users (telegram_id) ON DELETE CASCADE,
        asset TEXT NOT NULL,
        free TEXT NOT NULL,
        PRIMARY KEY (user_id, asset)
    )""",
    """CREATE TABLE payments (
        charge_id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (telegram_id),
        plan TEXT NOT NULL,
        amount_stars INTEGER NOT NULL CHECK (amount_stars > 0),
        currency TEXT NOT NULL,
        period_s INTEGER NOT NULL CHECK (period_s > 0),
        paid_at REAL NOT NULL
    )""",
    """CREATE TABLE usage_counters (
        user_id INTEGER NOT NULL REFERENCES users (telegram_id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        day TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        PRIMARY KEY (user_id, kind, day)
    )""",
    """CREATE TABLE bot_flags (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        updated_by TEXT
    )""",
)

_TRAILING_STOPS_AND_REFUNDS = (
    """CREATE TABLE trailing_stops (
        position_id INTEGER PRIMARY KEY REFERENCES positions (id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        symbol TEXT NOT NULL,
        entry_price REAL NOT NULL,
        peak_price REAL NOT NULL,
        stop_price REAL NOT NULL,
        activated INTEGER NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """ALTER TABLE payments ADD COLUMN status TEXT NOT NULL DEFAULT 'paid'
        CHECK (status IN ('paid', 'refunded'))""",
    "ALTER TABLE payments ADD COLUMN refunded_at REAL",
    "CREATE INDEX payments_by_user ON payments (user_id, paid_at)",
)

_HANDLED_COMMANDS = (
    """CREATE TABLE handled_commands (
        chat_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('started', 'answered')),
        update_json TEXT,
        handled_at REAL NOT NULL,
        PRIMARY KEY (chat_id, message_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX handled_commands_by_age ON handled_commands (handled_at)",
    "CREATE INDEX handled_commands_started ON handled_commands (state) WHERE state = 'started'",
)

_ORDER_FIDELITY = (
    # What a position really bought, sold and left behind, fees included.
    "ALTER TABLE positions ADD COLUMN entry_cost TEXT",
    "ALTER TABLE positions ADD COLUMN sold_quantity TEXT",
    "ALTER TABLE positions ADD COLUMN exit_proceeds TEXT",
    "ALTER TABLE positions ADD COLUMN residue_quantity TEXT",
    "ALTER TABLE positions ADD COLUMN realized_pnl TEXT",
    # The commission per asset (JSON), whether the exchange expired the order part-filled,
    # and whether its fill has been applied to its position (a partial exit leaves the
    # position open, so "position still open" no longer means "fill not applied").
    "ALTER TABLE orders ADD COLUMN fees TEXT",
    "ALTER TABLE orders ADD COLUMN expired INTEGER NOT NULL DEFAULT 0 CHECK (expired IN (0, 1))",
    "ALTER TABLE orders ADD COLUMN settled INTEGER NOT NULL DEFAULT 0 CHECK (settled IN (0, 1))",
    """UPDATE orders SET settled = 1 WHERE status = 'filled' AND (
        (side = 'BUY' AND position_id IS NOT NULL)
        OR (side = 'SELL' AND position_id IN (SELECT id FROM positions WHERE status = 'closed'))
    )""",
)

# Plain (non-trailing) stops become a trader's choice, as freqtrade's `trailing_stop`.
# Every existing trader keeps the trailing stop they had (the default 1).
_TRAILING_STOP_SETTING = (
    "ALTER TABLE user_settings ADD COLUMN trailing_stop INTEGER NOT NULL DEFAULT 1 "
    "CHECK (trailing_stop IN (0, 1))",
)

# Every message the bot sends is written here before it is sent (lunara.storage.outbox).
_OUTBOX = (
    """CREATE TABLE broadcasts (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        text TEXT NOT NULL,
        recipients INTEGER NOT NULL CHECK (recipients >= 0),
        created_at REAL NOT NULL,
        finished_at REAL,
        UNIQUE (chat_id, message_id)
    )""",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        priority INTEGER NOT NULL CHECK (priority IN (0, 1, 2)),
        text TEXT,
        invoice TEXT,
        reply_to INTEGER,
        broadcast_id INTEGER REFERENCES broadcasts (id) ON DELETE CASCADE,
        dedupe_key TEXT UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'blocked', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        not_before REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        done_at REAL,
        CHECK (text IS NOT NULL OR invoice IS NOT NULL OR broadcast_id IS NOT NULL)
    )""",
    "CREATE INDEX outbox_queued ON outbox (chat_id, priority, id) WHERE state = 'queued'",
    "CREATE INDEX outbox_by_broadcast ON outbox (broadcast_id, state)"
    " WHERE broadcast_id IS NOT NULL",
    "CREATE INDEX outbox_done ON outbox (done_at) WHERE state != 'queued'",
)

# An exit order keeps why it was placed (a stop, /sell, an admin): the start-up recovery
# that settles a fill whose answer was lost records the position's real exit reason and
# writes the stop's notice to the trader, as the exit itself would have.
_ORDER_EXIT_REASON = ("ALTER TABLE orders ADD COLUMN exit_reason TEXT",)

# A forum supergroup's topic: an answer goes to the topic its command came from, every
# part of a long one too (Telegram puts a message without one in the General topic).
_OUTBOX_TOPICS = ("ALTER TABLE outbox ADD COLUMN thread_id INTEGER",)

# Which expiry of a user's paid plan they were told of: a plan ending is told once,
# and a renewed plan ending later is told again.
_PLAN_EXPIRY_TOLD = ("ALTER TABLE users ADD COLUMN plan_expiry_told REAL",)

# Who this database belongs to: a deployment is its manifest name plus this id, made
# once when the database is created (or first upgraded), so two homes under one name can
# tell whether they are one deployment (a standby may wait) or two (refused at start).
_DEPLOYMENT = (
    """CREATE TABLE deployment (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        deployment_id TEXT NOT NULL CHECK (length(deployment_id) = 32),
        created_at REAL NOT NULL
    )""",
    "INSERT INTO deployment (singleton, deployment_id, created_at) "
    "VALUES (1, lower(hex(randomblob(16))), (julianday('now') - 2440587.5) * 86400.0)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core tables", _CORE_TABLES),
    Migration(2, "trailing stops and payment refunds", _TRAILING_STOPS_AND_REFUNDS),
    Migration(3, "commands already answered", _HANDLED_COMMANDS),
    Migration(4, "fees, partial fills and residues of orders", _ORDER_FIDELITY),
    Migration(5, "trailing stop as a trader setting", _TRAILING_STOP_SETTING),
    Migration(6, "the outbox of every message sent", _OUTBOX),
    Migration(7, "why an exit order was placed", _ORDER_EXIT_REASON),
    Migration(8, "forum topics of outgoing messages", _OUTBOX_TOPICS),
    Migration(9, "plan expiries told", _PLAN_EXPIRY_TOLD),
    Migration(10, "the deployment's identity", _DEPLOYMENT),
)

LATEST_VERSION = MIGRATIONS[-1].version

# Every table the schema owns; any identifier put into SQL text must be one of these.
KNOWN_TABLES: frozenset[str] = frozenset(
    {
        "schema_version",
        "users",
        "exchange_credentials",
        "user_settings",
        "positions",
        "orders",
        "paper_balances",
        "payments",
        "usage_counters",
        "bot_flags",
        "trailing_stops",
        "handled_commands",
        "broadcasts",
        "outbox",
        "deployment",
    }
)


def checked_table(name: str) -> str:
    """`name`, quoted for SQL, if it is one of ours; anything else is refused."""
    if name not in KNOWN_TABLES:
        raise SchemaError(f"refusing SQL on unknown table {name[:40]!r}")
    return f'"{name}"'


async def current_version(connection: aiosqlite.Connection) -> int:
    """The schema version of the database; 0 for an empty one."""
    async with connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ) as cursor:
        if await cursor.fetchone() is None:
            return 0
    async with connection.execute("SELECT MAX(version) FROM schema_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


async def apply_migrations(
    connection: aiosqlite.Connection,
    target: int | None = None,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> list[int]:
    """Bring the schema up to `target` (default: the latest); return the versions applied."""
    latest = migrations[-1].version
    target = latest if target is None else target
    if target not in {0} | {migration.version for migration in migrations}:
        raise SchemaError(f"no schema version {target}")
    found = await current_version(connection)
    if found > latest:
        raise SchemaError(
            f"the database is at schema version {found}, newer than this Lunara "
            f"(which knows up to {latest}): upgrade Lunara or restore an older backup"
        )
    applied: list[int] = []
    for migration in migrations:
        if found < migration.version <= target and await _apply(connection, migration):
            applied.append(migration.version)
    return applied


async def _apply(connection: aiosqlite.Connection, migration: Migration) -> bool:
    await connection.execute("BEGIN IMMEDIATE")
    try:
        await connection.execute(_SCHEMA_VERSION_TABLE)
        # Another process may have migrated while we waited for the write lock.
        if await current_version(connection) >= migration.version:
            await connection.execute("ROLLBACK")
            return False
        for statement in migration.statements:
            await connection.execute(statement)
        await connection.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, now_s()),
        )
        await connection.execute(f"PRAGMA user_version = {migration.version:d}")
        await connection.execute("COMMIT")
    except sqlite3.Error as error:
        await connection.execute("ROLLBACK")
        raise SchemaError(
            f"migration {migration.version} ({migration.name}) failed and was rolled back: {error}"
        ) from error
    except BaseException:
        await connection.execute("ROLLBACK")
        raise
    return True
