"""The shared base of the local API servers: an aiohttp app on its own loop and thread.

A server runs on a daemon thread with its own event loop, so sync clients (requests)
and async clients (httpx, aiohttp) in the test's own loop can both talk to it, and a
handler that stalls or long-polls never blocks another request. The same object runs
standalone (`python -m tests.fakes.<name> --port N`) for soak runs where the client
is another process; tests then steer it through `/_control/...` on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Generic, Protocol, Self, TypeVar

from aiohttp import web

LOOPBACK = "127.0.0.1"
SHUTDOWN_GRACE_S = 0.5  # in-flight stalls are abandoned, not awaited, on stop


class BackgroundServer:
    """Serve `add_routes` on 127.0.0.1 from a background thread; stop on `__exit__`."""

    name = "fake"

    def _init_server(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, port: int = 0) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(port, ready, failure), name=self.name, daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} server did not start")
        if failure:
            raise RuntimeError(f"{self.name} server did not start: {failure[0]}")
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self, port: int, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=8 * 1024 * 1024)
        self.add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, LOOPBACK, port)
            loop.run_until_complete(site.start())
        except OSError as error:
            failure.append(error)
            ready.set()
            loop.close()
            return
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.close()


class Scripted(Protocol):
    """One scripted answer of a fake: an error `status` (0: none), after `stall_s`."""

    @property
    def status(self) -> int: ...

    @property
    def stall_s(self) -> float: ...


ScriptedT = TypeVar("ScriptedT", bound=Scripted)


class FaultQueue(Generic[ScriptedT]):
    """The scripted answers waiting for each endpoint, given in order, each once.

    Every fake injects faults the same way: the next N calls of an endpoint stall, or
    answer an error in the API's own shape, or both. What an answer carries is the
    fake's (a Binance code and headers, a Telegram retry_after); taking and playing it
    is here. Not locked: the fake calls it under its own lock.
    """

    def __init__(self) -> None:
        self._waiting: defaultdict[str, list[ScriptedT]] = defaultdict(list)

    def add(self, endpoint: str, answer: ScriptedT, times: int = 1) -> None:
        self._waiting[endpoint].extend(answer for _ in range(times))

    def take(
        self, endpoint: str, accepts: Callable[[ScriptedT], bool] | None = None
    ) -> ScriptedT | None:
        """The first answer waiting for `endpoint` that `accepts` takes, removed."""
        queue = self._waiting.get(endpoint, [])
        for index, answer in enumerate(queue):
            if accepts is None or accepts(answer):
                return queue.pop(index)
        return None

    def clear(self, endpoint: str | None = None) -> None:
        """Forget what is waiting for `endpoint` (every endpoint when None)."""
        if endpoint is None:
            self._waiting.clear()
        else:
            self._waiting.pop(endpoint, None)


async def play(answer: ScriptedT | None) -> ScriptedT | None:
    """Hold the request as scripted; the answer when it is an error to send, None when
    the request is then served normally."""
    if answer is None:
        return None
    if answer.stall_s:
        await asyncio.sleep(answer.stall_s)
    return answer if answer.status else None


async def json_body(request: web.Request) -> dict[str, Any]:
    """A control request's JSON object body; an empty or non-object body is `{}`."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"control body is not JSON: {error}") from error
    return dict(body) if isinstance(body, dict) else {}


def run_standalone(
    build: Callable[[argparse.Namespace], BackgroundServer],
    argv: list[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Run a server in the foreground until SIGINT/SIGTERM, printing its URL first."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    if configure is not None:
        configure(parser)
    args = parser.parse_args(argv)
    server = build(args)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server.start(args.port)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(server.base_url, flush=True)
    stop.wait()
    server.stop()
    return 0
