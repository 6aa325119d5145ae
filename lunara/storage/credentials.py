"""Traders' exchange API keys, encrypted at rest.

Both the key and the secret are stored as Fernet tokens; only the last four
characters of the key are kept in clear, so a trader can tell which key is on file.
Admins have no other way in: the same functions serve everyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import aiosqlite

from lunara.crypto import KeyRing
from lunara.storage import users
from lunara.storage.database import InvalidValue, StorageError, now_s, transaction
from lunara.storage.rows import RowCodec, fetch_one

FINGERPRINT_LENGTH = 4
MIN_LENGTH = 8
MAX_LENGTH = 256


class Exchange(StrEnum):
    BINANCE = "binance"


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown about stored credentials: never the key or the secret."""

    user_id: int
    exchange: Exchange
    key_fingerprint: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ApiCredentials:
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return self.api_key[-FINGERPRINT_LENGTH:]


def _check_secret(name: str, value: str) -> str:
    cleaned = value.strip()
    if not MIN_LENGTH <= len(cleaned) <= MAX_LENGTH:
        raise InvalidValue(name, f"must be {MIN_LENGTH} to {MAX_LENGTH} characters")
    if any(not (c.isascii() and c.isprintable()) or c.isspace() for c in cleaned):
        raise InvalidValue(name, "must be printable ASCII without spaces")
    return cleaned


_INFOS = RowCodec(CredentialInfo)


def _record_name(user_id: int, exchange: str, part: str) -> str:
    return f"the {exchange} {part} of user {user_id}"


async def store(
    connection: aiosqlite.Connection,
    keyring: KeyRing,
    user_id: int,
    exchange: Exchange,
    api_key: str,
    api_secret: str,
    *,
    now: float | None = None,
) -> CredentialInfo:
    """Save (or replace) a trader's keys for one exchange."""
    key = _check_secret("api_key", api_key)
    secret = _check_secret("api_secret", api_secret)
    exchange = Exchange(exchange)
    at = now_s() if now is None else now
    async with transaction(connection):
        await users.require(connection, user_id)
        await connection.execute(
            "INSERT INTO exchange_credentials (user_id, exchange, api_key_encrypted, "
            "api_secret_encrypted, key_fingerprint, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id, exchange) DO UPDATE SET "
            "api_key_encrypted = excluded.api_key_encrypted, "
            "api_secret_encrypted = excluded.api_secret_encrypted, "
            "key_fingerprint = excluded.key_fingerprint, updated_at = excluded.updated_at",
            (
                user_id,
                exchange.value,
                keyring.encrypt(key),
                keyring.encrypt(secret),
                key[-FINGERPRINT_LENGTH:],
                at,
                at,
            ),
        )
        stored = await info(connection, user_id, exchange)
    if stored is None:
        raise StorageError(f"credentials of user {user_id} vanished while being stored")
    return stored


async def info(
    connection: aiosqlite.Connection, user_id: int, exchange: Exchange
) -> CredentialInfo | None:
    return await _INFOS.one(
        connection,
        "SELECT user_id, exchange, key_fingerprint, created_at, updated_at "
        "FROM exchange_credentials WHERE user_id = ? AND exchange = ?",
        (user_id, Exchange(exchange).value),
    )


async def load(
    connection: aiosqlite.Connection, keyring: KeyRing, user_id: int, exchange: Exchange
) -> ApiCredentials | None:
    """The decrypted pair, or None if the trader has not registered keys.

    Raises lunara.crypto.KeyMismatch if the record was encrypted with an unknown key.
    """
    exchange = Exchange(exchange)
    row = await fetch_one(
        connection,
        "SELECT api_key_encrypted, api_secret_encrypted FROM exchange_credentials "
        "WHERE user_id = ? AND exchange = ?",
        (user_id, exchange.value),
    )
    if row is None:
        return None
    return ApiCredentials(
        api_key=keyring.decrypt(
            bytes(row["api_key_encrypted"]), _record_name(user_id, exchange, "API key")
        ),
        api_secret=keyring.decrypt(
            bytes(row["api_secret_encrypted"]), _record_name(user_id, exchange, "API secret")
        ),
    )


async def delete(connection: aiosqlite.Connection, user_id: int, exchange: Exchange) -> bool:
    async with transaction(connection):
        cursor = await connection.execute(
            "DELETE FROM exchange_credentials WHERE user_id = ? AND exchange = ?",
            (user_id, Exchange(exchange).value),
        )
        return cursor.rowcount > 0


async def rotate_all(connection: aiosqlite.Connection, keyring: KeyRing) -> int:
    """Re-encrypt every stored secret under the ring's first key, all or nothing.

    Returns the number of credential records rewritten. If any record cannot be
    decrypted, KeyMismatch names it and nothing is changed.
    """
    async with transaction(connection):
        rows = await connection.execute_fetchall(
            "SELECT user_id, exchange, api_key_encrypted, api_secret_encrypted "
            "FROM exchange_credentials ORDER BY user_id, exchange"
        )
        updates = [
            (
                keyring.rotate(
                    bytes(row["api_key_encrypted"]),
                    _record_name(row["user_id"], row["exchange"], "API key"),
                ),
                keyring.rotate(
                    bytes(row["api_secret_encrypted"]),
                    _record_name(row["user_id"], row["exchange"], "API secret"),
                ),
                row["user_id"],
                row["exchange"],
            )
            for row in rows
        ]
        await connection.executemany(
            "UPDATE exchange_credentials SET api_key_encrypted = ?, api_secret_encrypted = ? "
            "WHERE user_id = ? AND exchange = ?",
            updates,
        )
    return len(updates)
