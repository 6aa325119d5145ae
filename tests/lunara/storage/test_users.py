from __future__ import annotations

import asyncio

import aiosqlite
import pytest

from lunara.storage import users
from lunara.storage.database import InvalidValue, RecordNotFound


async def test_register_creates_a_free_active_user(db: aiosqlite.Connection) -> None:
    user = await users.register(db, 42, "@alice", now=100.0)
    assert user == users.User(42, "alice", None, "free", None, True, 100.0, 100.0)
    assert await users.get(db, 42) == user
    assert await users.get(db, 43) is None


async def test_registering_again_refreshes_username_and_last_seen_only(
    db: aiosqlite.Connection,
) -> None:
    await users.register(db, 42, "alice", now=100.0)
    await users.set_plan(db, 42, "pro", 5000.0)
    again = await users.register(db, 42, "alice_new", now=200.0)
    assert again.username == "alice_new"
    assert again.created_at == 100.0
    assert again.last_seen_at == 200.0
    assert again.plan == "pro"


@pytest.mark.parametrize("telegram_id", [0, -5, 2**60])
async def test_register_refuses_impossible_ids(db: aiosqlite.Connection, telegram_id: int) -> None:
    with pytest.raises(InvalidValue, match="telegram_id"):
        await users.register(db, telegram_id, "x")


async def test_register_refuses_unprintable_or_long_usernames(db: aiosqlite.Connection) -> None:
    with pytest.raises(InvalidValue, match="username"):
        await users.register(db, 1, "a" * 65)
    with pytest.raises(InvalidValue, match="username"):
        await users.register(db, 1, "bad\nname")
    assert (await users.register(db, 1, "   ")).username is None


async def test_list_page_pages_in_registration_order_with_a_total(
    db: aiosqlite.Connection,
) -> None:
    for telegram_id in range(1, 8):
        await users.register(db, telegram_id, f"user{telegram_id}", now=float(telegram_id))
    await users.set_active(db, 3, False)
    first = await users.list_page(db, offset=0, limit=3)
    second = await users.list_page(db, offset=3, limit=3)
    last = await users.list_page(db, offset=6, limit=3)
    assert [u.telegram_id for u in first.users] == [1, 2, 3]
    assert [u.telegram_id for u in second.users] == [4, 5, 6]
    assert [u.telegram_id for u in last.users] == [7]
    assert first.total == 7
    inactive = await users.list_page(db, active=False)
    assert [u.telegram_id for u in inactive.users] == [3] and inactive.total == 1
    assert (await users.list_page(db, active=True)).total == 6
    with pytest.raises(InvalidValue):
        await users.list_page(db, limit=0)
    with pytest.raises(InvalidValue):
        await users.list_page(db, offset=-1)


async def test_set_active_needs_a_registered_user(db: aiosqlite.Connection) -> None:
    with pytest.raises(RecordNotFound):
        await users.set_active(db, 9, False)
    await users.register(db, 9, "x")
    assert (await users.set_active(db, 9, False)).active is False
    assert (await users.set_active(db, 9, True)).active is True


async def test_a_lapsed_plan_counts_as_free(db: aiosqlite.Connection) -> None:
    await users.register(db, 5, "x")
    user = await users.set_plan(db, 5, "pro", 1000.0)
    assert user.plan_at(999.0) == "pro"
    assert user.plan_at(1000.0) == "free"
    with pytest.raises(InvalidValue, match="plan"):
        await users.set_plan(db, 5, "Pro Plan", None)


async def test_usage_is_counted_until_the_limit_and_refusals_are_not_counted(
    db: aiosqlite.Connection,
) -> None:
    await users.register(db, 5, "x")
    results = [
        await users.increment_usage_and_check(db, 5, "ai_analysis", "2026-11-24", 3)
        for _ in range(5)
    ]
    assert [r.allowed for r in results] == [True, True, True, False, False]
    assert [r.count for r in results] == [1, 2, 3, 3, 3]
    assert results[1].remaining == 1 and results[4].remaining == 0
    assert await users.usage(db, 5, "ai_analysis", "2026-11-24") == 3
    other_day = await users.increment_usage_and_check(db, 5, "ai_analysis", "2026-11-25", 3)
    other_kind = await users.increment_usage_and_check(db, 5, "analysis", "2026-11-24", 3)
    assert other_day.count == 1 and other_kind.count == 1


async def test_usage_refuses_malformed_days_and_kinds(db: aiosqlite.Connection) -> None:
    with pytest.raises(InvalidValue, match="day"):
        await users.increment_usage_and_check(db, 5, "ai", "24/11/2026", 3)
    with pytest.raises(InvalidValue, match="kind"):
        await users.increment_usage_and_check(db, 5, "AI; DROP", "2026-11-24", 3)


async def test_old_usage_counters_can_be_pruned(db: aiosqlite.Connection) -> None:
    await users.register(db, 5, "x")
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        await users.increment_usage_and_check(db, 5, "ai", day, 10)
    assert await users.prune_usage(db, "2026-11-03") == 2
    assert await users.usage(db, 5, "ai", "2026-11-03") == 1
    assert await users.usage(db, 5, "ai", "2026-11-01") == 0


async def test_concurrent_usage_never_exceeds_the_limit(db: aiosqlite.Connection) -> None:
    await users.register(db, 5, "x")
    results = await asyncio.gather(
        *(users.increment_usage_and_check(db, 5, "ai", "2026-11-24", 4) for _ in range(12))
    )
    assert sum(r.allowed for r in results) == 4
    assert await users.usage(db, 5, "ai", "2026-11-24") == 4


async def test_an_ended_plan_is_told_once_and_a_changed_plan_is_not_marked(
    db: aiosqlite.Connection,
) -> None:
    await users.register(db, 11, "a")
    await users.set_plan(db, 11, "pro", 1000.0)
    assert [u.telegram_id for u in await users.expired_untold(db, 999.0)] == []
    assert [u.telegram_id for u in await users.expired_untold(db, 1000.0)] == [11]
    assert not await users.mark_expiry_told(db, 11, 500.0)  # not the plan's end now
    assert await users.mark_expiry_told(db, 11, 1000.0)
    assert not await users.mark_expiry_told(db, 11, 1000.0)  # told already
    assert await users.expired_untold(db, 2000.0) == []
    await users.set_plan(db, 11, "pro", 3000.0)  # renewed: a new end
    assert [u.telegram_id for u in await users.expired_untold(db, 3000.0)] == [11]
