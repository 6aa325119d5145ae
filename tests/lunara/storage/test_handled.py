"""The command inbox: taken when fetched, begun when worked on, answered once."""

from __future__ import annotations

import aiosqlite

from lunara.storage import handled


async def test_a_taken_command_is_unfinished_until_answered(db: aiosqlite.Connection) -> None:
    await handled.take(db, [(1, 10, 1, '{"u": 10}'), (1, 11, 1, None)], now=100.0)
    assert await handled.unfinished(db, 200.0) == ['{"u": 10}']  # not the secret one
    # Taken: work on it; it was taken (fetched) at 100, not when begun.
    assert await handled.begin(db, 1, 10, 1, '{"u": 10}', now=150.0) == 100.0
    await handled.finish(db, 1, 10)
    assert await handled.unfinished(db, 200.0) == []


async def test_taking_a_command_again_keeps_what_is_known(db: aiosqlite.Connection) -> None:
    await handled.take(db, [(1, 10, 1, '{"u": 10}')], now=100.0)
    await handled.finish(db, 1, 10)
    await handled.take(db, [(1, 10, 1, '{"u": 10}'), (1, 12, 1, '{"u": 12}')], now=300.0)
    assert await handled.begin(db, 1, 10, 1, '{"u": 10}') is None  # answered: skipped
    assert await handled.unfinished(db, 400.0) == ['{"u": 12}']
    assert await handled.unfinished(db, 250.0) == []  # taken at 300


async def test_old_commands_are_pruned(db: aiosqlite.Connection) -> None:
    await handled.take(db, [(1, 10, 1, "{}")], now=100.0)
    assert await handled.prune(db, now=100.0 + handled.KEEP_S + 1) == 1
    assert await handled.begin(db, 1, 10, 1, "{}", now=500.0) == 500.0  # new: taken now
