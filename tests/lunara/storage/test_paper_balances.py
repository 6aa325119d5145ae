from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from lunara.storage import paper_balances, users
from lunara.storage.database import InvalidValue, open_database
from lunara.storage.paper_balances import InsufficientBalance

D = Decimal


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 1, "one")
    await users.register(connection, 2, "two")
    yield connection
    await connection.close()


async def test_paper_balances_move_together_or_not_at_all(db: aiosqlite.Connection) -> None:
    assert await paper_balances.seed_paper_balance(db, 1, "USDT", D("10000")) is True
    assert await paper_balances.seed_paper_balance(db, 1, "USDT", D("5")) is False
    after = await paper_balances.adjust_paper_balances(
        db, 1, {"USDT": D("-6400.05"), "BTC": D("0.1")}
    )
    assert after == {"USDT": D("3599.95"), "BTC": D("0.1")}
    with pytest.raises(InsufficientBalance, match="not enough BTC"):
        await paper_balances.adjust_paper_balances(db, 1, {"USDT": D("6500"), "BTC": D("-0.2")})
    assert await paper_balances.paper_balances(db, 1) == {"BTC": D("0.1"), "USDT": D("3599.95")}
    assert await paper_balances.paper_balance(db, 2, "USDT") == D("0")
    with pytest.raises(InvalidValue, match="asset"):
        await paper_balances.paper_balance(db, 1, "usdt")
