"""How `run_services` ends: a failed service stops the others with exit 1, and a service
that ignores the stop is cancelled after the grace period, not waited for forever."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from blueprint.paths import HomePaths
from lunara import runtime


class Stops:
    """Returns when asked to stop."""

    name = "stops"

    def __init__(self) -> None:
        self.stopped = False

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.stopped = True


class Fails:
    name = "fails"

    async def run(self, stop: asyncio.Event) -> None:
        raise RuntimeError("broken service")


class Ignores:
    """Never looks at the stop event."""

    name = "ignores"

    def __init__(self) -> None:
        self.cancelled = False

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_failed_service_stops_the_others_with_exit_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lunara.runtime")
    other = Stops()
    code = await runtime.run_services([Fails(), other], HomePaths(tmp_path))
    assert code == 1
    assert other.stopped
    assert "service fails failed: broken service" in caplog.text
    assert "lunara stopped (exit 1)" in caplog.text


async def test_a_service_ignoring_the_stop_is_cancelled_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "SHUTDOWN_GRACE_S", 0.05)
    stop = asyncio.Event()
    stop.set()
    stubborn = Ignores()
    code = await runtime.run_services([stubborn, Stops()], HomePaths(tmp_path), stop)
    assert code == 0
    assert stubborn.cancelled
    assert "service ignores did not stop within" in caplog.text
