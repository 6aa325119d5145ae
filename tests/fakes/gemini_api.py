"""A local Gemini `generateContent` server for tests, spoken to by the real google-genai client."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeGemini:
    api_key: str = "gemini-test-key-0123456789"
    answer: str = "Momentum is neutral; watch the lower band."
    prompts: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[tuple[int, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.keys_seen: dict[str, int] = defaultdict(int)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGemini:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Gemini did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/{version}/models/{model}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self._runner = runner
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.close()

    def inject(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._errors.extend(
                (status, "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE")
                for _ in range(times)
            )

    async def _handle(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        with self._lock:
            self.requests += 1
            self.keys_seen[request.headers.get("x-goog-api-key", "")] += 1
            error = self._errors.pop(0) if self._errors else None
        if error is not None:
            status, name = error
            return web.json_response(
                {"error": {"code": status, "message": "injected", "status": name}}, status=status
            )
        if request.headers.get("x-goog-api-key") != self.api_key:
            return web.json_response(
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                status=400,
            )
        prompt = body["contents"][0]["parts"][0]["text"]
        with self._lock:
            self.prompts.append(prompt)
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": self.answer}]},
                        "finishReason": "STOP",
                    }
                ]
            }
        )
