"""The bot's durable state in SQLite: one small repository module per concern.

`database` opens the file and runs transactions, `migrations` owns the schema, and
`users`, `credentials`, `user_settings`, `positions` and `payments` read and write
their own tables with typed async functions returning frozen dataclasses (each decodes
its rows with a `rows.RowCodec`). `backup` holds the operator's tools (backup, restore,
key rotation).
"""

from lunara.storage.database import (
    InvalidValue,
    RecordNotFound,
    SchemaError,
    StateConflict,
    StorageError,
    open_database,
    transaction,
)

__all__ = [
    "InvalidValue",
    "RecordNotFound",
    "SchemaError",
    "StateConflict",
    "StorageError",
    "open_database",
    "transaction",
]
