from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from lunara.crypto import KeyMismatch, KeyRing, generate_key
from lunara.storage import credentials, users
from lunara.storage.credentials import Exchange
from lunara.storage.database import InvalidValue, RecordNotFound, open_database

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    for telegram_id in (1, 2, 3, 4):
        await users.register(connection, telegram_id, f"user{telegram_id}")
    yield connection
    await connection.close()


async def _raw_rows(db: aiosqlite.Connection) -> list[tuple[object, ...]]:
    async with db.execute("SELECT * FROM exchange_credentials ORDER BY user_id") as cursor:
        return [tuple(row) for row in await cursor.fetchall()]


async def test_stored_credentials_load_back_decrypted(db: aiosqlite.Connection) -> None:
    ring = KeyRing([generate_key()])
    info = await credentials.store(db, ring, 1, Exchange.BINANCE, API_KEY, API_SECRET, now=10.0)
    assert info == credentials.CredentialInfo(1, Exchange.BINANCE, API_KEY[-4:], 10.0, 10.0)
    loaded = await credentials.load(db, ring, 1, Exchange.BINANCE)
    assert loaded is not None
    assert (loaded.api_key, loaded.api_secret) == (API_KEY, API_SECRET)
    assert loaded.fingerprint == API_KEY[-4:]
    assert await credentials.load(db, ring, 2, Exchange.BINANCE) is None


async def test_secrets_are_never_stored_in_clear(db: aiosqlite.Connection) -> None:
    ring = KeyRing([generate_key()])
    await credentials.store(db, ring, 1, Exchange.BINANCE, API_KEY, API_SECRET)
    [row] = await _raw_rows(db)
    dump = repr(row).encode() + b"".join(v for v in row if isinstance(v, bytes))
    for secret in (API_KEY, API_SECRET):
        assert secret.encode() not in dump
        assert base64.b64encode(secret.encode()) not in dump
        assert secret[:12].encode() not in dump
    assert API_KEY[-4:] in row  # the fingerprint: last four characters only
    assert not any(isinstance(v, str) and len(v) > 4 and v in API_KEY for v in row)


async def test_credential_repr_hides_key_and_secret(db: aiosqlite.Connection) -> None:
    ring = KeyRing([generate_key()])
    await credentials.store(db, ring, 1, Exchange.BINANCE, API_KEY, API_SECRET)
    loaded = await credentials.load(db, ring, 1, Exchange.BINANCE)
    assert API_KEY not in repr(loaded) and API_SECRET not in repr(loaded)


async def test_storing_again_replaces_the_keys_and_keeps_created_at(
    db: aiosqlite.Connection,
) -> None:
    ring = KeyRing([generate_key()])
    await credentials.store(db, ring, 1, Exchange.BINANCE, API_KEY, API_SECRET, now=10.0)
    info = await credentials.store(
        db, ring, 1, Exchange.BINANCE, "k" * 20 + "WXYZ", "s" * 30, now=20.0
    )
    assert (info.created_at, info.updated_at, info.key_fingerprint) == (10.0, 20.0, "WXYZ")
    loaded = await credentials.load(db, ring, 1, Exchange.BINANCE)
    assert loaded is not None and loaded.api_key == "k" * 20 + "WXYZ"
    assert len(await _raw_rows(db)) == 1


@pytest.mark.parametrize(
    ("api_key", "api_secret", "field"),
    [
        ("short", API_SECRET, "api_key"),
        (API_KEY, "with space inside", "api_secret"),
        (API_KEY, "é" * 20, "api_secret"),
        ("x" * 300, API_SECRET, "api_key"),
    ],
)
async def test_implausible_keys_are_refused(
    db: aiosqlite.Connection, api_key: str, api_secret: str, field: str
) -> None:
    with pytest.raises(InvalidValue, match=field) as caught:
        await credentials.store(
            db, KeyRing([generate_key()]), 1, Exchange.BINANCE, api_key, api_secret
        )
    assert api_secret not in str(caught.value)
    assert await _raw_rows(db) == []


async def test_credentials_need_a_registered_user(db: aiosqlite.Connection) -> None:
    with pytest.raises(RecordNotFound):
        await credentials.store(
            db, KeyRing([generate_key()]), 99, Exchange.BINANCE, API_KEY, API_SECRET
        )


async def test_loading_with_the_wrong_key_names_the_record(db: aiosqlite.Connection) -> None:
    await credentials.store(db, KeyRing([generate_key()]), 3, Exchange.BINANCE, API_KEY, API_SECRET)
    with pytest.raises(KeyMismatch, match="the binance API key of user 3"):
        await credentials.load(db, KeyRing([generate_key()]), 3, Exchange.BINANCE)


async def test_delete_and_listing(db: aiosqlite.Connection) -> None:
    ring = KeyRing([generate_key()])
    await credentials.store(db, ring, 2, Exchange.BINANCE, API_KEY, API_SECRET)
    await credentials.store(db, ring, 1, Exchange.BINANCE, API_KEY, API_SECRET)
    assert await credentials.delete(db, 1, Exchange.BINANCE) is True
    assert await credentials.delete(db, 1, Exchange.BINANCE) is False
    assert await credentials.info(db, 1, Exchange.BINANCE) is None
    assert await credentials.info(db, 2, Exchange.BINANCE) is not None


async def test_rotate_all_moves_every_record_to_the_new_key(db: aiosqlite.Connection) -> None:
    old, new = generate_key(), generate_key()
    for user_id in (1, 2, 3):
        await credentials.store(db, KeyRing([old]), user_id, Exchange.BINANCE, API_KEY, API_SECRET)
    assert await credentials.rotate_all(db, KeyRing([new, old])) == 3
    only_new = KeyRing([new])
    for user_id in (1, 2, 3):
        loaded = await credentials.load(db, only_new, user_id, Exchange.BINANCE)
        assert loaded is not None and loaded.api_secret == API_SECRET
    with pytest.raises(KeyMismatch):
        await credentials.load(db, KeyRing([old]), 1, Exchange.BINANCE)


async def test_rotate_all_changes_nothing_if_one_record_cannot_be_decrypted(
    db: aiosqlite.Connection,
) -> None:
    old, stray, new = generate_key(), generate_key(), generate_key()
    for user_id in (1, 2, 4):
        await credentials.store(db, KeyRing([old]), user_id, Exchange.BINANCE, API_KEY, API_SECRET)
    await credentials.store(db, KeyRing([stray]), 3, Exchange.BINANCE, API_KEY, API_SECRET)
    before = await _raw_rows(db)
    with pytest.raises(KeyMismatch, match="user 3"):
        await credentials.rotate_all(db, KeyRing([new, old]))
    assert await _raw_rows(db) == before
    assert not db.in_transaction
    loaded = await credentials.load(db, KeyRing([old]), 1, Exchange.BINANCE)
    assert loaded is not None and loaded.api_key == API_KEY
