"""Paper-trading balances: what each paper trader holds per asset.

Amounts are Decimals stored as text; no balance may go below zero.
"""

from __future__ import annotations

import re
from decimal import Decimal

import aiosqlite

from lunara.storage import users
from lunara.storage.checks import check_positive
from lunara.storage.database import (
    InvalidValue,
    StorageError,
    decimal_to_text,
    text_to_decimal,
    transaction,
)
from lunara.storage.rows import fetch_one

ASSET_PATTERN = re.compile(r"^[A-Z0-9]{2,12}$")


class InsufficientBalance(StorageError):
    """A paper balance would go below zero."""


def _check_asset(asset: str) -> str:
    if not ASSET_PATTERN.match(asset):
        raise InvalidValue("asset", "must be an asset such as USDT or BTC")
    return asset


async def paper_balances(connection: aiosqlite.Connection, user_id: int) -> dict[str, Decimal]:
    rows = await connection.execute_fetchall(
        "SELECT asset, free FROM paper_balances WHERE user_id = ? ORDER BY asset", (user_id,)
    )
    return {row["asset"]: text_to_decimal(row["free"]) for row in rows}


async def paper_balance(connection: aiosqlite.Connection, user_id: int, asset: str) -> Decimal:
    row = await fetch_one(
        connection,
        "SELECT free FROM paper_balances WHERE user_id = ? AND asset = ?",
        (user_id, _check_asset(asset)),
    )
    return Decimal(0) if row is None else text_to_decimal(row["free"])


async def seed_paper_balance(
    connection: aiosqlite.Connection, user_id: int, asset: str, amount: Decimal
) -> bool:
    """Give a new paper trader their starting balance; False if they already have one."""
    check_positive("amount", amount)
    async with transaction(connection):
        await users.require(connection, user_id)
        cursor = await connection.execute(
            "INSERT INTO paper_balances (user_id, asset, free) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id, asset) DO NOTHING",
            (user_id, _check_asset(asset), decimal_to_text(amount)),
        )
        return cursor.rowcount > 0


async def adjust_paper_balances(
    connection: aiosqlite.Connection, user_id: int, deltas: dict[str, Decimal]
) -> dict[str, Decimal]:
    """Apply several balance changes at once (a fill moves two assets); none may go negative."""
    for asset, delta in deltas.items():
        _check_asset(asset)
        if not isinstance(delta, Decimal) or not delta.is_finite():
            raise InvalidValue("delta", "must be a finite decimal")
    async with transaction(connection):
        updated: dict[str, Decimal] = {}
        for asset, delta in deltas.items():
            balance = await paper_balance(connection, user_id, asset) + delta
            if balance < 0:
                raise InsufficientBalance(
                    f"not enough {asset}: {decimal_to_text(-delta)} needed, "
                    f"{decimal_to_text(balance - delta)} available"
                )
            await connection.execute(
                "INSERT INTO paper_balances (user_id, asset, free) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, asset) DO UPDATE SET free = excluded.free",
                (user_id, asset, decimal_to_text(balance)),
            )
            updated[asset] = balance
        return updated
