"""A local Bot API server for tests: real HTTP on 127.0.0.1, spoken to by the real client.

Serves `/bot<TOKEN>/<method>` like Telegram (form-encoded POSTs, JSON values inside
form fields, `{"ok": ..., "result": ...}` replies, errors by HTTP status). Tests feed
updates, inject errors, and read what the bot sent. `sendMessage` validates HTML the
way Telegram does (allowed tags, nesting, entities, 4096 characters), so a malformed
reply fails loudly.
"""

from __future__ import annotations

import asyncio
import html
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
MESSAGE_LIMIT = 4096


class _HtmlCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problem: str | None = None
        self.text_length = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problem = self.problem or f'unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problem = self.problem or f'unexpected end tag "{tag}"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problem = self.problem or "unescaped < or >"
        self.text_length += len(data)

    def handle_entityref(self, name: str) -> None:
        if name not in {"lt", "gt", "amp", "quot"}:
            self.problem = self.problem or f"unsupported entity &{name};"
        self.text_length += 1

    def handle_charref(self, name: str) -> None:
        self.text_length += 1


def check_html(text: str) -> str | None:
    """None when Telegram would accept `text` in HTML mode, else the reason."""
    checker = _HtmlCheck()
    checker.feed(text)
    checker.close()
    if checker.problem:
        return f"Bad Request: can't parse entities: {checker.problem}"
    if checker.stack:
        return f'Bad Request: can\'t parse entities: unclosed tag "{checker.stack[-1]}"'
    if "&" in text.replace("&lt;", "").replace("&gt;", "").replace("&amp;", "").replace(
        "&quot;", ""
    ):
        stray = html.unescape(text) == text
        if stray:
            return "Bad Request: can't parse entities: stray &"
    if len(html.unescape(text)) > MESSAGE_LIMIT:
        return "Bad Request: message is too long"
    return None


@dataclass
class Injected:
    status: int
    description: str
    retry_after: int | None = None
    stall_s: float = 0.0


@dataclass
class FakeTelegram:
    """Start with `with FakeTelegram() as tg:`; point the bot at `tg.base_url`."""

    username: str = "lunara_test_bot"
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[tuple[int, int]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    polls_by_token: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_concurrent_polls: int = 0

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._next_message_id = 1
        self._lock = threading.Lock()
        self._errors: dict[str, list[Injected]] = defaultdict(list)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._new_update = threading.Condition(self._lock)
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeTelegram:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Telegram server did not start")
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
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
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

    # -- test controls ------------------------------------------------------------------

    def inject(self, method: str, status: int, description: str, *, retry_after: int | None = None,
               stall_s: float = 0.0, times: int = 1) -> None:  # fmt: skip
        with self._lock:
            self._errors[method].extend(
                Injected(status, description, retry_after, stall_s) for _ in range(times)
            )

    def _message(self, user_id: int, chat_type: str, username: str | None) -> dict[str, Any]:
        with self._lock:
            message_id = self._next_message_id
            self._next_message_id += 1
        sender = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if username:
            sender["username"] = username
        chat: dict[str, Any] = {"id": user_id, "type": chat_type}
        if chat_type != "private":
            chat = {"id": -1000000000 - user_id, "type": chat_type, "title": "group"}
        return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": sender}

    def _push(self, update: dict[str, Any]) -> int:
        with self._new_update:
            update["update_id"] = self._next_update_id
            self._next_update_id += 1
            self._updates.append(update)
            self._new_update.notify_all()
            return int(update["update_id"])

    def push_text(self, user_id: int, text: str, chat_type: str = "private",
                  username: str | None = None) -> int:  # fmt: skip
        message = self._message(user_id, chat_type, username)
        message["text"] = text
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        return self._push({"message": message})

    def push_pre_checkout(self, user_id: int, payload: str, total_amount: int,
                          currency: str = "XTR") -> str:  # fmt: skip
        query_id = f"pcq{self._next_update_id}"
        sender = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        self._push(
            {
                "pre_checkout_query": {
                    "id": query_id,
                    "from": sender,
                    "currency": currency,
                    "total_amount": total_amount,
                    "invoice_payload": payload,
                }
            }
        )
        return query_id

    def push_successful_payment(self, user_id: int, payload: str, charge_id: str,
                                total_amount: int) -> int:  # fmt: skip
        message = self._message(user_id, "private", None)
        message["successful_payment"] = {
            "currency": "XTR",
            "total_amount": total_amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        return self._push({"message": message})

    def messages_to(self, chat_id: int) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.sent if m["chat_id"] == chat_id]

    def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_for_messages(self, chat_id: int, count: int, timeout: float = 15.0) -> list[str]:
        self.wait_for(lambda: len(self.messages_to(chat_id)) >= count, timeout,
                      f"{count} messages to {chat_id}")  # fmt: skip
        return self.messages_to(chat_id)

    def pending_updates(self) -> int:
        with self._lock:
            return len(self._updates)

    # -- the API --------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return dict(body) if isinstance(body, dict) else {}
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, str):
                try:
                    params[key] = json.loads(value)
                except ValueError:
                    params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await self._params(request)
        with self._lock:
            self.calls.append((token, method, params))
            injected = self._errors[method].pop(0) if self._errors[method] else None
        if injected is not None:
            if injected.stall_s:
                await asyncio.sleep(injected.stall_s)
            body: dict[str, Any] = {
                "ok": False, "error_code": injected.status, "description": injected.description,
            }  # fmt: skip
            if injected.retry_after is not None:
                body["parameters"] = {"retry_after": injected.retry_after}
            return web.json_response(body, status=injected.status)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return web.json_response({"ok": True, "result": True})
        try:
            result = await handler(token, params)
        except _ApiError as error:
            return web.json_response(
                {"ok": False, "error_code": error.status, "description": error.description},
                status=error.status,
            )
        return web.json_response({"ok": True, "result": result})

    async def _api_getMe(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"id": 4242, "is_bot": True, "first_name": "Lunara", "username": self.username}

    async def _api_getUpdates(self, token: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            self.polls_by_token[token] += 1
            self._in_flight[token] += 1
            concurrent = self._in_flight[token]
            self.max_concurrent_polls = max(self.max_concurrent_polls, concurrent)
        try:
            if concurrent > 1:
                raise _ApiError(409, "Conflict: terminated by other getUpdates request")
            offset = int(params.get("offset") or 0)
            timeout = float(params.get("timeout") or 0)
            deadline = time.monotonic() + min(timeout, 1.0)
            while True:
                with self._lock:
                    if offset:
                        self._updates = [u for u in self._updates if u["update_id"] >= offset]
                    ready = list(self._updates[:100])
                if ready or time.monotonic() >= deadline:
                    return ready
                await asyncio.sleep(0.01)
        finally:
            with self._lock:
                self._in_flight[token] -= 1

    async def _api_sendMessage(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("text", ""))
        if params.get("parse_mode") == "HTML":
            problem = check_html(text)
            if problem:
                with self._lock:
                    self.rejected.append((params, problem))
                raise _ApiError(400, problem)
        chat_id = int(params["chat_id"])
        with self._lock:
            self.sent.append(
                {"chat_id": chat_id, "text": text, "parse_mode": params.get("parse_mode")}
            )
            message_id = self._next_message_id
            self._next_message_id += 1
        return {"message_id": message_id, "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"}, "text": text}  # fmt: skip

    async def _api_deleteMessage(self, token: str, params: dict[str, Any]) -> bool:
        with self._lock:
            self.deleted.append((int(params["chat_id"]), int(params["message_id"])))
        return True

    async def _api_sendInvoice(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.invoices.append(params)
        chat_id = int(params["chat_id"])
        return {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
        }

    async def _api_answerPreCheckoutQuery(self, token: str, params: dict[str, Any]) -> bool:
        with self._lock:
            self.answers.append(params)
        return True

    async def _api_refundStarPayment(self, token: str, params: dict[str, Any]) -> bool:
        with self._lock:
            self.refunds.append(params)
        return True


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
