"""Waiting in tests: poll a condition until it holds, failing at a deadline.

Tests wait for what they can observe (a file, a process, a counter, a message) rather
than sleep for a fixed time: a busy machine then makes a test slower, never wrong, and
a test that fails says what it was waiting for. The deadline is only the point at which
waiting stops being reasonable; nothing is asserted about how soon the condition held
(speed belongs in `bench/`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Describe = str | Callable[[], str]


def _failure(timeout_s: float, what: Describe) -> AssertionError:
    # A callable description is read only at the failure, so it can show the state then
    # (a log tail, the last status) without costing anything while the wait goes well.
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {text}")


def wait_until(
    condition: Callable[[], T | None],
    timeout_s: float = 20.0,
    what: Describe = "condition",
    *,
    poll_s: float = 0.02,
) -> T:
    """Call `condition` until it returns something truthy and return that; raise
    AssertionError naming `what` once `timeout_s` has passed without it.

    The condition is tried once more at the deadline, so a zero timeout still looks once.
    An exception from the condition (a dead process found by its own check) ends the wait.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(timeout_s, what)
        time.sleep(poll_s)


async def until(
    condition: Callable[[], T | None],
    timeout_s: float = 20.0,
    what: Describe = "condition",
    *,
    poll_s: float = 0.01,
) -> T:
    """`wait_until` inside an event loop: sleeps with asyncio, so the loop (and the code
    under test running on it) keeps going while the test waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(timeout_s, what)
        await asyncio.sleep(poll_s)


async def until_awaited(
    condition: Callable[[], Awaitable[T | None]],
    timeout_s: float = 20.0,
    what: Describe = "condition",
    *,
    poll_s: float = 0.02,
) -> T:
    """`until` for a condition that must itself be awaited (a database read): awaited
    until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(timeout_s, what)
        await asyncio.sleep(poll_s)


async def until_equal(
    probe: Callable[[], Awaitable[object]],
    wanted: object,
    timeout_s: float = 20.0,
    what: Describe = "condition",
    *,
    poll_s: float = 0.02,
) -> None:
    """`until_awaited` for a probe that must come to one value, falsy ones too (a user
    marked inactive, nothing left queued); a failure shows the last value it gave."""
    last: list[object] = []

    async def reached() -> bool:
        last[:] = [await probe()]
        return last[0] == wanted

    def describe() -> str:
        text = what() if callable(what) else what
        return f"{text} (last: {last[0]!r})" if last else text

    await until_awaited(reached, timeout_s, describe, poll_s=poll_s)
