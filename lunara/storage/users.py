"""Traders known to the bot, and their per-day usage counters (quotas).

Who may do what is the manifest's business alone: `role_hint` is a label for
display and is never consulted for authorization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import aiosqlite

from lunara.storage.database import InvalidValue, RecordNotFound, now_s, transaction
from lunara.storage.rows import RowCodec, fetch_one, required

FREE_PLAN = "free"
PLAN_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
USAGE_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,31}$")
DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_USERNAME = 64
MAX_TELEGRAM_ID = 2**53
MAX_PAGE = 200


@dataclass(frozen=True)
class User:
    telegram_id: int
    username: str | None
    role_hint: str | None
    plan: str
    plan_expires_at: float | None
    active: bool
    created_at: float
    last_seen_at: float | None

    def plan_at(self, now: float) -> str:
        """The plan in force at `now`: a lapsed paid plan counts as free."""
        if self.plan_expires_at is not None and self.plan_expires_at <= now:
            return FREE_PLAN
        return self.plan


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class UsageCheck:
    """The counter after this use, and whether the use fits within the limit."""

    count: int
    limit: int
    allowed: bool

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)


_COLUMNS = (
    "telegram_id, username, role_hint, plan, plan_expires_at, active, created_at, last_seen_at"
)


def check_telegram_id(telegram_id: int) -> int:
    if isinstance(telegram_id, bool) or not isinstance(telegram_id, int):
        raise InvalidValue("telegram_id", "must be an integer")
    if not 0 < telegram_id < MAX_TELEGRAM_ID:
        raise InvalidValue("telegram_id", "must be a positive Telegram user id")
    return telegram_id


def _clean_username(username: str | None) -> str | None:
    if username is None:
        return None
    cleaned = username.strip().removeprefix("@")
    if not cleaned:
        return None
    if len(cleaned) > MAX_USERNAME or any(not c.isprintable() for c in cleaned):
        raise InvalidValue("username", f"must be at most {MAX_USERNAME} printable characters")
    return cleaned


def check_plan(plan: str) -> str:
    if not PLAN_PATTERN.match(plan):
        raise InvalidValue("plan", "must be a lower-case name such as free or pro")
    return plan


_USERS = RowCodec(User)


async def get(connection: aiosqlite.Connection, telegram_id: int) -> User | None:
    return await _USERS.one(
        connection, f"SELECT {_COLUMNS} FROM users WHERE telegram_id = ?", (telegram_id,)
    )


async def require(connection: aiosqlite.Connection, telegram_id: int) -> User:
    return required(await get(connection, telegram_id), f"user {telegram_id} is not registered")


async def register(
    connection: aiosqlite.Connection,
    telegram_id: int,
    username: str | None,
    *,
    now: float | None = None,
) -> User:
    """Create the user on first contact; later calls refresh the username and last-seen time."""
    check_telegram_id(telegram_id)
    cleaned = _clean_username(username)
    at = now_s() if now is None else now
    async with transaction(connection):
        await connection.execute(
            "INSERT INTO users (telegram_id, username, plan, active, created_at, last_seen_at) "
            "VALUES (?, ?, ?, 1, ?, ?) "
            "ON CONFLICT (telegram_id) DO UPDATE SET "
            "username = excluded.username, last_seen_at = excluded.last_seen_at",
            (telegram_id, cleaned, FREE_PLAN, at, at),
        )
        return await require(connection, telegram_id)


async def list_page(
    connection: aiosqlite.Connection,
    *,
    offset: int = 0,
    limit: int = 20,
    active: bool | None = None,
) -> UserPage:
    """Users in registration order, a page at a time (for admin listings)."""
    if offset < 0:
        raise InvalidValue("offset", "must not be negative")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidValue("limit", f"must be between 1 and {MAX_PAGE}")
    where, parameters = ("", ()) if active is None else (" WHERE active = ?", (int(active),))
    row = await fetch_one(connection, f"SELECT COUNT(*) FROM users{where}", parameters)
    total = int(row[0]) if row is not None else 0
    page = await _USERS.all(
        connection,
        f"SELECT {_COLUMNS} FROM users{where} ORDER BY created_at, telegram_id LIMIT ? OFFSET ?",
        (*parameters, limit, offset),
    )
    return UserPage(page, total, offset, limit)


async def set_active(connection: aiosqlite.Connection, telegram_id: int, active: bool) -> User:
    """Deactivated users are refused by the bot but keep their data (positions, payments)."""
    async with transaction(connection):
        cursor = await connection.execute(
            "UPDATE users SET active = ? WHERE telegram_id = ?", (int(active), telegram_id)
        )
        if cursor.rowcount == 0:
            raise RecordNotFound(f"user {telegram_id} is not registered")
        return await require(connection, telegram_id)


async def set_plan(
    connection: aiosqlite.Connection,
    telegram_id: int,
    plan: str,
    expires_at: float | None,
) -> User:
    check_plan(plan)
    async with transaction(connection):
        cursor = await connection.execute(
            "UPDATE users SET plan = ?, plan_expires_at = ? WHERE telegram_id = ?",
            (plan, expires_at, telegram_id),
        )
        if cursor.rowcount == 0:
            raise RecordNotFound(f"user {telegram_id} is not registered")
        return await require(connection, telegram_id)


async def expired_untold(
    connection: aiosqlite.Connection, now: float, limit: int = MAX_PAGE
) -> list[User]:
    """Active users whose paid plan has ended by `now` and who were not told of that
    end yet (oldest end first)."""
    return await _USERS.all(
        connection,
        f"SELECT {_COLUMNS} FROM users WHERE plan != ? AND plan_expires_at <= ? AND active = 1"
        " AND (plan_expiry_told IS NULL OR plan_expiry_told != plan_expires_at)"
        " ORDER BY plan_expires_at, telegram_id LIMIT ?",
        (FREE_PLAN, now, limit),
    )


async def mark_expiry_told(
    connection: aiosqlite.Connection, telegram_id: int, expires_at: float
) -> bool:
    """Record that the user was told of their plan ending at `expires_at`; False when
    the plan changed meanwhile (renewed, refunded) or this end was told already."""
    async with transaction(connection):
        cursor = await connection.execute(
            "UPDATE users SET plan_expiry_told = plan_expires_at WHERE telegram_id = ?"
            " AND plan_expires_at = ? AND (plan_expiry_told IS NULL OR plan_expiry_told != ?)",
            (telegram_id, expires_at, expires_at),
        )
    return cursor.rowcount == 1


async def increment_usage_and_check(
    connection: aiosqlite.Connection,
    user_id: int,
    kind: str,
    day: str,
    limit: int,
) -> UsageCheck:
    """Count one use of `kind` on `day` (UTC date, YYYY-MM-DD) unless the quota is spent.

    A refused use is not counted, so a trader who hits the limit is not pushed further
    over it by retrying.
    """
    if not USAGE_KIND_PATTERN.match(kind):
        raise InvalidValue("kind", "must be a lower-case name such as ai_analysis")
    if not DAY_PATTERN.match(day):
        raise InvalidValue("day", "must be a date as YYYY-MM-DD")
    if limit < 0:
        raise InvalidValue("limit", "must not be negative")
    async with transaction(connection):
        count = await _usage(connection, user_id, kind, day)
        if count >= limit:
            return UsageCheck(count, limit, allowed=False)
        await connection.execute(
            "INSERT INTO usage_counters (user_id, kind, day, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT (user_id, kind, day) DO UPDATE SET count = count + 1",
            (user_id, kind, day),
        )
        return UsageCheck(count + 1, limit, allowed=True)


async def usage(connection: aiosqlite.Connection, user_id: int, kind: str, day: str) -> int:
    return await _usage(connection, user_id, kind, day)


async def _usage(connection: aiosqlite.Connection, user_id: int, kind: str, day: str) -> int:
    row = await fetch_one(
        connection,
        "SELECT count FROM usage_counters WHERE user_id = ? AND kind = ? AND day = ?",
        (user_id, kind, day),
    )
    return 0 if row is None else int(row[0])


async def prune_usage(connection: aiosqlite.Connection, before_day: str) -> int:
    """Drop counters older than `before_day`; returns how many rows went."""
    if not DAY_PATTERN.match(before_day):
        raise InvalidValue("before_day", "must be a date as YYYY-MM-DD")
    async with transaction(connection):
        cursor = await connection.execute("DELETE FROM usage_counters WHERE day < ?", (before_day,))
        return cursor.rowcount
