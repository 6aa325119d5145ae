"""The bot's runtime shell: settings, logging, heartbeat, services, graceful shutdown.

The watchdog judges the bot by its heartbeat, which is written from the event loop
itself: a loop blocked by a runaway computation stops beating and gets restarted.
SIGTERM (from the watchdog, `lunara stop` or a container runtime) sets one stop event;
every service finishes its in-flight work, persists state and returns, and the process
exits 0 well within the manifest's stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from typing import Protocol, cast

from blueprint.heartbeat import STANDBY, STARTING, UP, heartbeat_loop
from blueprint.paths import HomePaths

logger = logging.getLogger("lunara.runtime")

# How long services get to finish after the stop signal before they are cancelled.
# The manifest's stop_timeout_s (default 10 s) is the watchdog's hard limit; stay under it.
SHUTDOWN_GRACE_S = 7.0


class Service(Protocol):
    """A long-running part of the bot (Telegram poller, trading engine, ...).

    A service with a ``ready`` event is up once it sets it (the engine once it has
    reconciled its stops and resolved its orders, Telegram once it reached the Bot API);
    one without is up once it runs. The heartbeat reports them, and `start --wait`
    succeeds only when every one is up.
    """

    name: str

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then finish in-flight work and return."""


async def run_services(
    services: Sequence[Service],
    paths: HomePaths,
    stop: asyncio.Event | None = None,
    *,
    heartbeat_interval_s: float = 1.0,
) -> int:
    """Run the services and the heartbeat until a stop signal; return the exit code."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)

    heartbeat = asyncio.create_task(
        heartbeat_loop(
            paths.heartbeat, stop, heartbeat_interval_s, lambda: services_report(services)
        )
    )
    tasks = {
        asyncio.create_task(service.run(stop), name=service.name): service for service in services
    }
    stopper = asyncio.create_task(stop.wait())
    exit_code = 0
    try:
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending and not stop.is_set():
            done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                if finished is stopper:
                    continue
                task = cast("asyncio.Task[None]", finished)
                pending.discard(task)
                name = tasks[task].name
                if task.cancelled():
                    continue
                error = task.exception()
                if error is not None:
                    logger.error("service %s failed: %s", name, error, exc_info=error)
                    exit_code = 1
                    stop.set()
                else:
                    logger.info("service %s finished", name)
        if not services:
            await stop.wait()
        stop.set()
        if tasks:
            _, late = await asyncio.wait(set(tasks), timeout=SHUTDOWN_GRACE_S)
            for task in late:
                logger.warning(
                    "service %s did not stop within %.0f s; cancelling",
                    tasks[task].name,
                    SHUTDOWN_GRACE_S,
                )
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    finally:
        stopper.cancel()
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    logger.info("lunara stopped (exit %d)", exit_code)
    return exit_code


def services_report(services: Sequence[Service]) -> str:
    """``up`` when every service is up, else ``starting:`` and the ones that are not;
    ``standby:`` and who holds the instance lease while the bot waits for it."""
    starting: list[str] = []
    for service in services:
        standby_of = getattr(service, "standby_of", None)
        if isinstance(standby_of, str):
            return f"{STANDBY}:{standby_of}"
        ready = getattr(service, "ready", None)
        if isinstance(ready, asyncio.Event) and not ready.is_set():
            starting.append(service.name)
    return f"{STARTING}:{','.join(starting)}" if starting else UP


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    if not stop.is_set():
        logger.info("received %s: stopping gracefully", signal.Signals(signum).name)
    stop.set()
