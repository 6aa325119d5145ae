"""A local Gemini `generateContent` server for tests, spoken to by the real google-genai client.

Checks the `x-goog-api-key` header, records every prompt, and answers with the
configured text or, with `answer=None`, a deterministic summary echoing the start of
the prompt. Tests inject 429/503 (Google's `{"error": {code, message, status}}` body)
and stalls.

Standalone: `python -m tests.fakes.gemini_api --port N --api-key K` prints its URL;
steer it with `/_control/...` (see `add_routes`).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.http import BackgroundServer, FaultQueue, json_body, play, run_standalone

STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
ECHO_CHARS = 60
GENERATE = "generateContent"  # the one endpoint, so the one queue of scripted answers


@dataclass
class RecordedCall:
    """One generateContent call: API version, model, key header and the prompt text."""

    version: str
    model: str
    api_key: str
    prompt: str
    body: dict[str, Any]


@dataclass
class _Injected:
    status: int  # 0: stall, then answer normally
    message: str
    stall_s: float


def echo_summary(prompt: str) -> str:
    """The default answer: deterministic, and traceable to the prompt it answers."""
    head = " ".join(prompt.split())[:ECHO_CHARS]
    return f"Summary ({len(prompt)} chars): {head}"


@dataclass
class FakeGemini(BackgroundServer):
    """Start with `with FakeGemini() as gm:`; point google-genai at `gm.base_url`."""

    api_key: str = "gemini-test-key-0123456789"
    answer: str | None = "Momentum is neutral; watch the lower band."  # None: echo_summary
    prompts: list[str] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)
    requests: int = 0

    name = "fake-gemini"

    def __post_init__(self) -> None:
        self._init_server()
        self._lock = threading.Lock()
        self._errors: FaultQueue[_Injected] = FaultQueue()
        self.keys_seen: dict[str, int] = defaultdict(int)

    def inject(self, status: int, times: int = 1, *, message: str = "injected",
               stall_s: float = 0.0) -> None:  # fmt: skip
        """The next `times` calls answer `status` (0: stall `stall_s`, then answer)."""
        with self._lock:
            self._errors.add(GENERATE, _Injected(status, message, stall_s), times)

    def inject_stall(self, stall_s: float, times: int = 1) -> None:
        self.inject(0, times, stall_s=stall_s)

    def reply_for(self, prompt: str) -> str:
        return echo_summary(prompt) if self.answer is None else self.answer

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model}", self._handle)
        app.router.add_post("/_control/inject", self._control_inject)
        app.router.add_post("/_control/answer", self._control_answer)
        app.router.add_get("/_control/prompts", self._control_prompts)

    async def _control_inject(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.inject(int(body.get("status", 0)), int(body.get("times", 1)),
                    message=str(body.get("message", "injected")),
                    stall_s=float(body.get("stall_s", 0)))  # fmt: skip
        return web.json_response({"ok": True})

    async def _control_answer(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        answer = body.get("answer")
        self.answer = None if answer is None else str(answer)
        return web.json_response({"ok": True})

    async def _control_prompts(self, request: web.Request) -> web.Response:
        with self._lock:
            return web.json_response(list(self.prompts))

    async def _handle(self, request: web.Request) -> web.Response:
        model, _, action = request.match_info["model"].partition(":")
        if action != "generateContent":
            return _error(404, f"method {action or '?'} is not served here")
        try:
            body: dict[str, Any] = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON payload received.")
        key = request.headers.get("x-goog-api-key", "")
        with self._lock:
            self.requests += 1
            self.keys_seen[key] += 1
            injected = self._errors.take(GENERATE)
        failure = await play(injected)
        if failure is not None:
            return _error(failure.status, failure.message)
        if key != self.api_key:
            return _error(400, "API key not valid. Please pass a valid API key.")
        try:
            prompt = "\n".join(
                str(part["text"])
                for content in body["contents"]
                for part in content.get("parts", [])
                if "text" in part
            )
        except (KeyError, TypeError, AttributeError):
            return _error(400, "contents is not specified")
        with self._lock:
            self.prompts.append(prompt)
            self.calls.append(RecordedCall(request.match_info["version"], model, key, prompt, body))
        text = self.reply_for(prompt)
        words = max(1, len(prompt.split()))
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": words,
                    "candidatesTokenCount": max(1, len(text.split())),
                    "totalTokenCount": words + max(1, len(text.split())),
                },
                "modelVersion": model,
            }
        )


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"code": status, "message": message,
                      "status": STATUS_NAMES.get(status, "UNKNOWN")}}  # fmt: skip
    return web.json_response(body, status=status)


def main(argv: list[str] | None = None) -> int:
    def configure(parser: Any) -> None:
        parser.add_argument("--api-key", default="gemini-test-key-0123456789")
        parser.add_argument("--answer", default=None, help="fixed reply; default echoes")

    return run_standalone(
        lambda args: FakeGemini(api_key=args.api_key, answer=args.answer), argv, configure
    )


if __name__ == "__main__":
    raise SystemExit(main())
