"""tests/waiting.py: the value that ended the wait comes back; a wait that never ends
fails naming what it waited for."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import until, until_equal, wait_until


def test_the_first_truthy_value_ends_the_wait_and_is_returned() -> None:
    answers = iter([None, 0, "", "ready", "later"])
    assert wait_until(lambda: next(answers), 10, "an answer", poll_s=0) == "ready"
    assert next(answers) == "later"  # not called again once it held


def test_a_condition_that_never_holds_fails_naming_what_was_awaited() -> None:
    calls = itertools.count(1)
    with pytest.raises(AssertionError, match="timed out after 0 s waiting for the moon"):
        wait_until(lambda: next(calls) and False, 0, "the moon")
    assert next(calls) == 2  # a zero timeout still looks once


def test_a_described_failure_reads_its_description_only_when_it_fails() -> None:
    read: list[str] = []

    def describe() -> str:
        read.append("read")
        return "a bot (last log line: no beat)"

    assert wait_until(lambda: True, 0, describe) is True
    assert read == []
    with pytest.raises(AssertionError, match=r"a bot \(last log line: no beat\)"):
        wait_until(lambda: None, 0, describe)
    assert read == ["read"]


def test_an_error_in_the_condition_ends_the_wait() -> None:
    def dead() -> bool:
        raise RuntimeError("the process died")

    with pytest.raises(RuntimeError, match="the process died"):
        wait_until(dead, 10)


async def test_the_async_wait_lets_the_loop_run_what_it_waits_for() -> None:
    import asyncio

    done: list[int] = []

    async def work() -> None:
        await asyncio.sleep(0)
        done.append(1)

    task = asyncio.create_task(work())
    assert await until(lambda: done, 10, "the task") == [1]
    await task
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await until(lambda: None, 0, "nothing")


async def test_the_awaited_wait_for_a_value_ends_on_a_falsy_one_and_fails_showing_the_last() -> (
    None
):
    answers = iter([3, 2, 0, 7])

    async def queued() -> int:
        return next(answers)

    await until_equal(queued, 0, 10, "nothing queued", poll_s=0)
    assert next(answers) == 7  # not asked again once it came

    async def stuck() -> int:
        return 3

    with pytest.raises(AssertionError, match=r"waiting for nothing queued \(last: 3\)"):
        await until_equal(stuck, 0, 0, "nothing queued")
