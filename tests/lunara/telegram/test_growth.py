"""What strangers can make the bot keep stays bounded: 100,000 distinct users leave the
audit log, the rate limiter and the order locks with a bounded number of entries."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from blueprint.audit import AuditLog
from blueprint.manifest import Permission, validate_manifest
from blueprint.mirror import NullMirror
from lunara.telegram.guard import (
    MAX_TRACKED_USERS,
    REFUSAL_WINDOW_S,
    REFUSALS_AUDITED_PER_WINDOW,
    Admission,
    Command,
    Guard,
    RateLimiter,
    RefusalAudit,
    Verdict,
)
from tests.blueprint.cli_harness import manifest_document
from tests.lunara.trading.support import order_path

USERS = 100_000


async def _nothing(_context: object) -> None:
    return None


ADMIN_ONLY = Command("users", Permission.TG_USERS, "/users", "list users", _nothing)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_refusals_of_100000_users_write_a_bounded_audit(tmp_path: Path) -> None:
    clock = Clock()
    audit_path = tmp_path / "audit.jsonl"
    guard = Guard(
        validate_manifest(manifest_document()),
        AuditLog(audit_path, NullMirror()),
        RateLimiter(20, clock=clock),
        RefusalAudit(clock=clock),
    )
    for user in range(1, USERS + 1):
        clock.now = user * 0.001  # 100 s in all: two windows
        assert guard.check(user, ADMIN_ONLY) is Verdict.DENIED
        assert guard.refusals.tracked <= REFUSALS_AUDITED_PER_WINDOW
    windows = int(clock.now // REFUSAL_WINDOW_S) + 1
    entries = _entries(audit_path)
    assert len(entries) <= windows * REFUSALS_AUDITED_PER_WINDOW
    assert guard.limiter.tracked == 0  # a refused command is not counted against anyone

    clock.now += REFUSAL_WINDOW_S  # the next refusal carries the count of the unaudited
    guard.check(USERS + 1, ADMIN_ONLY)
    entries = _entries(audit_path)
    counted = sum(int(e["detail"].get("unaudited_refusals", 0)) for e in entries)
    assert len(entries) + counted == USERS + 1
    assert all(e["decision"] == "denied" and e["outcome"] == "refused" for e in entries)


def test_one_users_repeated_refusals_are_one_line_per_window(tmp_path: Path) -> None:
    clock = Clock()
    audit_path = tmp_path / "audit.jsonl"
    guard = Guard(
        validate_manifest(manifest_document()),
        AuditLog(audit_path, NullMirror()),
        RateLimiter(20, clock=clock),
        RefusalAudit(clock=clock),
    )
    for _ in range(1000):
        guard.check(42, ADMIN_ONLY)
    assert len(_entries(audit_path)) == 1
    clock.now = REFUSAL_WINDOW_S
    guard.check(42, ADMIN_ONLY)
    second = _entries(audit_path)[-1]
    assert second["detail"]["unaudited_refusals"] == 999


def test_the_rate_limiter_forgets_users_whose_window_has_passed() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window_s=60.0, clock=clock)
    for user in range(1, USERS + 1):
        clock.now = user * 0.0001  # 10 s: all within one window
        assert limiter.admit(user) is Admission.ALLOWED
        assert limiter.tracked <= MAX_TRACKED_USERS
    clock.now += 60.0
    assert limiter.admit(1) is Admission.ALLOWED
    assert limiter.tracked == 1
    for _ in range(2):
        assert limiter.admit(1) is Admission.ALLOWED
    assert limiter.admit(1) is Admission.SLOW_DOWN  # still limited while it is remembered
    clock.now += 61.0
    assert limiter.admit(2) is Admission.ALLOWED  # user 1's moments and warning left the window
    assert limiter.tracked == 1


def test_order_locks_of_100000_traders_are_dropped_once_released(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        db, stop_db, orders = await order_path(tmp_path)
        try:
            for user in range(1, USERS + 1):
                async with orders.lock_for(user):
                    pass
            after_all = orders.tracked_locks
            held = orders.lock_for(7)
            async with held:
                while_held = orders.tracked_locks
                assert orders.busy
            del held
            return after_all, while_held, orders.tracked_locks
        finally:
            await db.close()
            await stop_db.close()

    after_all, while_held, at_end = asyncio.run(scenario())
    assert (after_all, while_held, at_end) == (0, 1, 0)
