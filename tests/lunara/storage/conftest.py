"""A fresh, migrated database per test, for the storage tests that need nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage.database import open_database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    yield connection
    await connection.close()
