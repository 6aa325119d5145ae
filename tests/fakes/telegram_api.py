"""A local Bot API server for tests: real HTTP on 127.0.0.1, spoken to by the real client.

Serves `/bot<TOKEN>/<method>` like Telegram (form-encoded POSTs, JSON values inside
form fields, `{"ok": ..., "result": ...}` replies, errors by HTTP status). Tests feed
updates, inject errors, and read what the bot sent. `sendMessage` and
`editMessageText` validate HTML the way Telegram does (allowed tags, nesting,
entities, 4096 characters), so a malformed reply fails loudly. When two
`getUpdates` for one token overlap, the older one gets 409 Conflict, as with the
real Bot API, and the overlap is counted so a test can prove that only one poller
ever ran.

Telegram's flood limits are enforced by default (`FloodRule`): about 30 messages a
second for the bot, 1 a second sustained to one private chat, 20 a minute to one
group; past one, the send is refused with 429 and `parameters.retry_after`, and the
bot (or the chat) stays refused until that wait is over, as Telegram does. A chat
marked blocked (`block`) refuses every send with 403 "Forbidden: bot was blocked by
the user"; a group upgraded to a supergroup (`migrate`) answers 400 with
`parameters.migrate_to_chat_id`. `FakeTelegram(flood_limits=False)` is the friendly
server of a test that is about something else and sends faster than Telegram allows.

Messages carry the date they were sent (`sent_at` lets a test send one typed long ago,
as Telegram delivers those after an outage); an edit arrives as its own `edited_message`
update (`push_edit`). `getUpdates` keeps the `allowed_updates` it was last given, as
Telegram does, and delivers only those kinds (unset: every kind but `chat_member`,
`message_reaction` and `message_reaction_count`); `allowed_updates_asked` records each
list asked for.

Standalone: `python -m tests.fakes.telegram_api --port N` prints its URL; steer it
with `/_control/...` (see `add_routes`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

from tests.fakes.http import BackgroundServer, FaultQueue, json_body, play, run_standalone
from tests.waiting import wait_until

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
ALLOWED_ENTITIES = {"lt", "gt", "amp", "quot"}
MESSAGE_LIMIT = 4096
BOT_ID = 4242
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
PARSE_ERROR = "Bad Request: can't parse entities"
OVERLAP_SETTLE_S = 0.05
BLOCKED = "Forbidden: bot was blocked by the user"
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"
DEFAULT_UNDELIVERED = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
"""The kinds Telegram does not deliver unless `allowed_updates` names them."""
SCOPES = frozenset({"default", "all_private_chats", "all_group_chats",
                    "all_chat_administrators", "chat", "chat_administrators", "chat_member"})  # fmt: skip
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
FLOODED_METHODS = frozenset({"sendMessage", "sendInvoice", "editMessageText"})
"""The methods that send a message and so count against the flood limits."""


@dataclass(frozen=True)
class FloodRule:
    """A sustained rate with a short burst on top, as a leaky bucket: in any stretch of
    `t` seconds at most `burst + per_second * t` messages pass (GCRA). That is the shape
    aiolimiter and python-telegram-bot's AIORateLimiter give Telegram's limits."""

    per_second: float
    burst: int


BOT_FLOOD = FloodRule(per_second=30.0, burst=30)  # about 30 a second, all chats (as PTB reads it)
PRIVATE_FLOOD = FloodRule(per_second=1.0, burst=3)  # 1 a second sustained to one user
GROUP_FLOOD = FloodRule(per_second=20 / 60, burst=5)  # 20 a minute to one group


class _Bucket:
    """One rule applied to one scope (the bot, or one chat), with Telegram's flood wait:
    once refused, the scope stays refused until the `retry_after` it was given."""

    def __init__(self, rule: FloodRule) -> None:
        self.interval = 1.0 / rule.per_second
        self.tolerance = (rule.burst - 1) * self.interval
        self.theoretical_arrival = 0.0
        self.refused_until = 0.0

    def wait(self, now: float) -> float:
        """Seconds until a message may pass (0: it may pass now)."""
        if now < self.refused_until:
            return self.refused_until - now
        return max(0.0, self.theoretical_arrival - self.tolerance - now)

    def take(self, now: float) -> None:
        self.theoretical_arrival = max(now, self.theoretical_arrival) + self.interval

    def refuse(self, now: float, wait: float) -> int:
        retry_after = max(1, math.ceil(wait))
        self.refused_until = max(self.refused_until, now + retry_after)
        return retry_after


class _HtmlCheck(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problem: str | None = None
        self.text_length = 0

    def _fail(self, problem: str) -> None:
        self.problem = self.problem or problem

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self._fail(f'unsupported start tag "{tag}"')
        values = dict(attrs)
        if tag == "span" and values.get("class") != "tg-spoiler":
            self._fail('tag "span" must have class "tg-spoiler"')
        if tag == "a" and not values.get("href"):
            self._fail('tag "a" must have an href')
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._fail(f'unsupported self-closing tag "{tag}"')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self._fail(f'unexpected end tag "{tag}"')
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self._fail("unescaped < or >")
        if "&" in data:
            self._fail("unescaped &")
        self.text_length += len(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ALLOWED_ENTITIES:
            self._fail(f'unsupported entity "&{name};"')
        self.text_length += 1

    def handle_charref(self, name: str) -> None:
        self.text_length += 1

    def handle_comment(self, data: str) -> None:
        self._fail("comments are not supported")

    def handle_decl(self, decl: str) -> None:
        self._fail("declarations are not supported")

    def handle_pi(self, data: str) -> None:
        self._fail("processing instructions are not supported")

    def unknown_decl(self, data: str) -> None:
        self._fail("declarations are not supported")


def check_html(text: str) -> str | None:
    """None when Telegram would accept `text` with parse_mode=HTML, else its error."""
    checker = _HtmlCheck()
    checker.feed(text)
    checker.close()
    if checker.problem:
        return f"{PARSE_ERROR}: {checker.problem}"
    if checker.stack:
        return (
            f'{PARSE_ERROR}: can\'t find end tag corresponding to start tag "{checker.stack[-1]}"'
        )
    if checker.text_length > MESSAGE_LIMIT:
        return "Bad Request: message is too long"
    if checker.text_length == 0:
        return "Bad Request: message text is empty"
    return None


def check_plain(text: str) -> str | None:
    """None when Telegram would accept `text` without a parse mode, else its error."""
    if not text:
        return "Bad Request: message text is empty"
    if len(text) > MESSAGE_LIMIT:
        return "Bad Request: message is too long"
    return None


@dataclass
class Injected:
    """One scripted answer: an error status/description, optionally after a stall.

    `status=0` with `stall_s` set means: stall, then answer normally.
    """

    status: int
    description: str
    retry_after: int | None = None
    stall_s: float = 0.0


@dataclass
class PollRecord:
    """One getUpdates call: who polled (token, client address) and how it ended."""

    token: str
    peer: str
    offset: int
    timeout: float
    started: float
    concurrent: int
    ended: float | None = None
    outcome: str = "pending"  # "updates:N" | "conflict" | "abandoned" | "injected:STATUS"


def _reply_to(params: dict[str, Any]) -> int | None:
    """The message an answer was threaded to (`reply_parameters`), if any."""
    threading = params.get("reply_parameters")
    if isinstance(threading, dict) and "message_id" in threading:
        return int(threading["message_id"])
    return None


class _ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None,
                 migrate_to_chat_id: int | None = None) -> None:  # fmt: skip
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id


@dataclass
class FakeTelegram(BackgroundServer):
    """Start with `with FakeTelegram() as tg:`; point the bot at `tg.base_url + "/bot"`."""

    username: str = "lunara_test_bot"
    max_poll_s: float = 1.0  # long polls are held at most this long, so shutdowns are quick
    flood_limits: bool = True  # False: the friendly server, every send passes
    flood_clock: Callable[[], float] = time.monotonic  # the time the flood limits read
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    callback_answers: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    chat_actions: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)  # the last menu set
    menus: dict[str, list[str]] = field(default_factory=dict)  # scope -> its command names
    deleted: list[tuple[int, int]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    polls: list[PollRecord] = field(default_factory=list)
    polls_by_token: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conflicts_by_token: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    max_concurrent_polls: int = 0
    pushed: dict[int, tuple[int, int]] = field(default_factory=dict)  # update -> (chat, message)
    confirmed_below: int = 0  # every update with a smaller id was confirmed by an offset
    blocked: set[int] = field(default_factory=set)  # users who blocked the bot
    migrated: dict[int, int] = field(default_factory=dict)  # group -> its supergroup
    too_many_requests: int = 0  # sends refused with 429 by the flood limits
    forbidden: int = 0  # sends refused with 403 (blocked)
    allowed_updates_asked: list[list[str]] = field(default_factory=list)  # as getUpdates asked
    withheld: list[dict[str, Any]] = field(default_factory=list)  # kinds not asked for: dropped
    refunded_charges: set[str] = field(default_factory=set)  # refunded, here or by support

    name = "fake-telegram"

    def __post_init__(self) -> None:
        self._init_server()
        self._updates: list[dict[str, Any]] = []
        self._history: dict[int, dict[str, Any]] = {}
        self._next_update_id = 1
        self._next_message_id = 1
        self._lock = threading.Lock()
        self._errors: FaultQueue[Injected] = FaultQueue()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._active: dict[str, list[tuple[PollRecord, web.Request]]] = {}
        self._buckets: dict[tuple[str, int], _Bucket] = {}  # (token, chat or 0 for the bot)
        self._allowed: dict[str, frozenset[str] | None] = {}  # token -> kinds (None: default)

    # -- test controls ------------------------------------------------------------------

    def inject(self, method: str, status: int, description: str = "", *,
               retry_after: int | None = None, stall_s: float = 0.0, times: int = 1) -> None:  # fmt: skip
        """The next `times` calls of `method` answer `status` (0: stall, then answer)."""
        with self._lock:
            answer = Injected(status, description or f"injected {status}", retry_after, stall_s)
            self._errors.add(method, answer, times)

    def clear_injected(self) -> None:
        """Forget every scripted answer not given yet."""
        with self._lock:
            self._errors.clear()

    def inject_stall(self, method: str, stall_s: float, *, times: int = 1) -> None:
        """The next `times` calls of `method` are held `stall_s` before a normal answer."""
        self.inject(method, 0, "stall", stall_s=stall_s, times=times)

    def _message(self, user_id: int, chat_type: str, username: str | None,
                 sent_at: float | None = None) -> dict[str, Any]:  # fmt: skip
        with self._lock:
            message_id = self._next_message_id
            self._next_message_id += 1
        sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if username:
            sender["username"] = username
        chat: dict[str, Any] = {"id": user_id, "type": chat_type}
        if chat_type != "private":
            chat = {"id": group_chat_id(user_id), "type": chat_type, "title": "group"}
        date = int(time.time() if sent_at is None else sent_at)
        return {"message_id": message_id, "date": date, "chat": chat, "from": sender}

    def _push(self, update: dict[str, Any]) -> int:
        with self._lock:
            update["update_id"] = self._next_update_id
            self._next_update_id += 1
            self._updates.append(update)
            self._history[int(update["update_id"])] = update
            message = update.get("message")
            if message is not None:
                self.pushed[int(update["update_id"])] = (
                    int(message["chat"]["id"]),
                    int(message["message_id"]),
                )
            return int(update["update_id"])

    def redeliver(self, update_id: int) -> int:
        """Queue an earlier update again under a new id, as Telegram does when the
        poller died before confirming it; returns the new update_id."""
        with self._lock:
            earlier = self._history[update_id]
        return self._push({k: v for k, v in earlier.items() if k != "update_id"})

    def push_text(self, user_id: int, text: str, chat_type: str = "private",
                  username: str | None = None, replying_to: str | None = None,
                  sent_at: float | None = None, topic: int | None = None) -> int:  # fmt: skip
        """Queue a message update; text starting with "/" carries a bot_command entity.
        With `replying_to`, it replies to an earlier message of the sender with that text;
        with `sent_at` (epoch seconds), it was typed then (its `date`), not now; with
        `topic`, it is posted in that topic of a forum supergroup."""
        message = self._message(user_id, "supergroup" if topic else chat_type, username, sent_at)
        _set_text(message, text)
        if topic is not None:
            message["chat"]["is_forum"] = True
            message.update(message_thread_id=topic, is_topic_message=True)
        if replying_to is not None:
            message["reply_to_message"] = {**self._message(user_id, chat_type, username),
                                           "text": replying_to}  # fmt: skip
        return self._push({"message": message})

    def push_command(self, user_id: int, text: str, chat_type: str = "private",
                     username: str | None = None, sent_at: float | None = None) -> int:  # fmt: skip
        """Queue a command message (`text` must start with "/"); returns its update_id."""
        if not text.startswith("/"):
            raise ValueError(f"a command starts with '/': {text!r}")
        return self.push_text(user_id, text, chat_type, username, sent_at=sent_at)

    def push_update(self, kind: str, body: dict[str, Any]) -> int:
        """Queue an update of any kind (`channel_post`, `message_reaction`...) as given."""
        return self._push({kind: body})

    def push_edit(self, update_id: int, text: str) -> int:
        """The sender edits the message of update `update_id` to `text`: Telegram sends an
        `edited_message` update (same message id and date, an `edit_date`); returns its id."""
        with self._lock:
            original = json.loads(json.dumps(self._history[update_id]["message"]))
        original.pop("entities", None)
        _set_text(original, text)
        original["edit_date"] = int(time.time())
        return self._push({"edited_message": original})

    def block(self, user_id: int, *, tell: bool = True) -> int | None:
        """The user blocks the bot: sends to their chat get 403 from now on; with `tell`,
        the bot gets the `my_chat_member` update (status `kicked`) Telegram sends (its
        update_id is returned)."""
        with self._lock:
            self.blocked.add(user_id)
        return self.push_my_chat_member(user_id, "member", "kicked") if tell else None

    def unblock(self, user_id: int, *, tell: bool = True) -> int | None:
        """The user unblocks the bot (`my_chat_member`, status `member`, with `tell`)."""
        with self._lock:
            self.blocked.discard(user_id)
        return self.push_my_chat_member(user_id, "kicked", "member") if tell else None

    def migrate(self, group_id: int, supergroup_id: int, *, tell: bool = False) -> None:
        """The group became a supergroup: sends to the old id get 400 with
        `parameters.migrate_to_chat_id`, as Telegram answers; with `tell`, the bot gets
        the service messages Telegram posts in both chats."""
        with self._lock:
            self.migrated[group_id] = supergroup_id
        if not tell:
            return
        for chat, key, other in ((group_id, "migrate_to_chat_id", supergroup_id),
                                 (supergroup_id, "migrate_from_chat_id", group_id)):  # fmt: skip
            message = self._message(BOT_ID, "group", None)
            message["chat"] = {"id": chat, "title": "group",
                               "type": "group" if chat == group_id else "supergroup"}  # fmt: skip
            message["from"] = {"id": 777, "is_bot": False, "first_name": "owner"}
            message[key] = other
            self._push({"message": message})

    def push_my_chat_member(self, user_id: int, old: str, new: str,
                            chat_type: str = "private") -> int:  # fmt: skip
        """Queue the update telling the bot its membership in a chat changed."""
        chat = self._message(user_id, chat_type, None)["chat"]
        sender = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        me = {"id": BOT_ID, "is_bot": True, "first_name": "Lunara", "username": self.username}

        def member(status: str) -> dict[str, Any]:
            return {
                "status": status,
                "user": me,
                **({"until_date": 0} if status == "kicked" else {}),
            }

        return self._push(
            {"my_chat_member": {"chat": chat, "from": sender, "date": int(time.time()),
                                "old_chat_member": member(old), "new_chat_member": member(new)}}
        )  # fmt: skip

    def push_callback_query(self, user_id: int, data: str, message_id: int = 1) -> str:
        """Queue an inline-button press on message `message_id`; returns the query id."""
        query_id = f"cbq{self._next_update_id}"
        message = self._message(BOT_ID, "private", self.username)
        message.update(message_id=message_id, chat={"id": user_id, "type": "private"}, text="…")
        message["from"] = {"id": BOT_ID, "is_bot": True, "first_name": "Lunara"}
        sender = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        self._push(
            {"callback_query": {"id": query_id, "from": sender, "chat_instance": str(user_id),
                                "data": data, "message": message}}
        )  # fmt: skip
        return query_id

    def push_pre_checkout(self, user_id: int, payload: str, total_amount: int,
                          currency: str = "XTR") -> str:  # fmt: skip
        """Queue a pre_checkout_query; returns its id (answers land in `answers`)."""
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
                                total_amount: int, currency: str = "XTR") -> int:  # fmt: skip
        """Queue the service message of a completed Stars payment; returns its update_id."""
        message = self._message(user_id, "private", None)
        message["successful_payment"] = {
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        return self._push({"message": message})

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Accepted sendMessage calls: dicts with chat_id, text, parse_mode, message_id."""
        with self._lock:
            return [dict(m) for m in self.sent if chat_id is None or m["chat_id"] == chat_id]

    def messages_to(self, chat_id: int) -> list[str]:
        return [m["text"] for m in self.sent_messages(chat_id)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0,
                 what: str = "condition") -> None:  # fmt: skip
        wait_until(predicate, timeout, what)

    def wait_for_messages(self, chat_id: int, count: int, timeout: float = 15.0) -> list[str]:
        """Block until `count` messages went to `chat_id`; return their texts."""
        self.wait_for(lambda: len(self.messages_to(chat_id)) >= count, timeout,
                      f"{count} messages to {chat_id}")  # fmt: skip
        return self.messages_to(chat_id)

    def pending_updates(self) -> int:
        with self._lock:
            return len(self._updates)

    def call_count(self, method: str, token: str | None = None) -> int:
        with self._lock:
            return sum(1 for t, m, _ in self.calls if m == method and token in (None, t))

    def stats(self) -> dict[str, Any]:
        """Counters for soak runs and the control endpoint."""
        with self._lock:
            return {
                "calls": len(self.calls),
                "sent": len(self.sent),
                "rejected": len(self.rejected),
                "pending_updates": len(self._updates),
                "polls_by_token": dict(self.polls_by_token),
                "conflicts_by_token": dict(self.conflicts_by_token),
                "max_concurrent_polls": self.max_concurrent_polls,
                "confirmed_below": self.confirmed_below,
                "in_flight_polls": sum(self._in_flight.values()),
                "too_many_requests": self.too_many_requests,
                "forbidden": self.forbidden,
            }

    def _admit(self, token: str, method: str, params: dict[str, Any]) -> None:
        """Refuse a send as Telegram would: 403 to a user who blocked the bot, 429 past a
        flood limit (the bot's, or the chat's, each per bot token); a message that passes
        counts against both."""
        if method not in FLOODED_METHODS or "chat_id" not in params:
            return
        chat_id = int(params["chat_id"])
        with self._lock:
            if chat_id in self.blocked:
                self.forbidden += 1
                raise _ApiError(403, BLOCKED)
            if chat_id in self.migrated:
                raise _ApiError(400, MIGRATED, migrate_to_chat_id=self.migrated[chat_id])
            if not self.flood_limits:
                return
            now = self.flood_clock()
            scopes = [(0, BOT_FLOOD), (chat_id, PRIVATE_FLOOD if chat_id > 0 else GROUP_FLOOD)]
            buckets = []
            for key, rule in scopes:
                bucket = self._buckets.get((token, key))
                if bucket is None:
                    bucket = self._buckets[(token, key)] = _Bucket(rule)
                buckets.append(bucket)
            for bucket in buckets:
                wait = bucket.wait(now)
                if wait > 0:
                    self.too_many_requests += 1
                    retry_after = bucket.refuse(now, wait)
                    raise _ApiError(429, f"Too Many Requests: retry after {retry_after}",
                                    retry_after)  # fmt: skip
            for bucket in buckets:
                bucket.take(now)

    # -- HTTP ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_post("/_control/inject", self._control_inject)
        app.router.add_post("/_control/push_command", self._control_push_command)
        app.router.add_post("/_control/push_pre_checkout", self._control_push_pre_checkout)
        app.router.add_post("/_control/push_successful_payment", self._control_push_payment)
        app.router.add_get("/_control/sent", self._control_sent)
        app.router.add_get("/_control/invoices", self._control_invoices)
        app.router.add_get("/_control/calls", self._control_calls)
        app.router.add_get("/_control/polls", self._control_polls)
        app.router.add_get("/_control/stats", self._control_stats)
        app.router.add_post("/_control/block", self._control_block)

    async def _control_inject(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        self.inject(str(body["method"]), int(body.get("status", 0)),
                    str(body.get("description", "")), retry_after=body.get("retry_after"),
                    stall_s=float(body.get("stall_s", 0)), times=int(body.get("times", 1)))  # fmt: skip
        return web.json_response({"ok": True})

    async def _control_push_command(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        sent_at = body.get("sent_at")  # epoch seconds: typed then, delivered only now
        update_id = self.push_text(int(body["user_id"]), str(body["text"]),
                                   str(body.get("chat_type", "private")), body.get("username"),
                                   sent_at=None if sent_at is None else float(sent_at))  # fmt: skip
        chat_id, message_id = self.pushed[update_id]
        return web.json_response(
            {"update_id": update_id, "chat_id": chat_id, "message_id": message_id}
        )

    async def _control_push_pre_checkout(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        query_id = self.push_pre_checkout(int(body["user_id"]), str(body["payload"]),
                                          int(body["total_amount"]), str(body.get("currency", "XTR")))  # fmt: skip
        return web.json_response({"id": query_id})

    async def _control_push_payment(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        update_id = self.push_successful_payment(int(body["user_id"]), str(body["payload"]),
                                                 str(body["charge_id"]), int(body["total_amount"]))  # fmt: skip
        _, message_id = self.pushed[update_id]
        return web.json_response({"update_id": update_id, "message_id": message_id})

    async def _control_sent(self, request: web.Request) -> web.Response:
        chat = request.query.get("chat_id")
        return web.json_response(self.sent_messages(int(chat) if chat else None))

    async def _control_invoices(self, request: web.Request) -> web.Response:
        """Accepted sendInvoice calls, each with the command it answers (`reply_to`)."""
        with self._lock:
            invoices = [dict(i, reply_to=_reply_to(i)) for i in self.invoices]
        return web.json_response(invoices)

    async def _control_calls(self, request: web.Request) -> web.Response:
        with self._lock:
            calls = [{"token": t, "method": m, "params": p} for t, m, p in self.calls]
        return web.json_response(calls)

    async def _control_polls(self, request: web.Request) -> web.Response:
        with self._lock:
            polls = [asdict(p) for p in self.polls]
        return web.json_response(polls)

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _control_block(self, request: web.Request) -> web.Response:
        """Block (`"blocked": true`, the default) or unblock the bot for `user_id`."""
        body = await json_body(request)
        if body.get("blocked", True):
            self.block(int(body["user_id"]), tell=bool(body.get("tell", True)))
        else:
            self.unblock(int(body["user_id"]), tell=bool(body.get("tell", True)))
        return web.json_response({"ok": True})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
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
            else:  # an uploaded file: record its name, not its bytes
                params[key] = {"filename": getattr(value, "filename", None)}
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await self._params(request)
        with self._lock:
            self.calls.append((token, method, params))
            injected = self._errors.take(method)
        failure = await play(injected)
        if failure is not None:
            if method == "getUpdates":
                self._record_injected_poll(token, request, params, failure.status)
            return _error(_ApiError(failure.status, failure.description, failure.retry_after))
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return _error(_ApiError(404, "Not Found: method not found"))
        try:
            self._admit(token, method, params)
            result = await handler(token, params, request)
        except _ApiError as error:
            return _error(error)
        except (KeyError, ValueError, TypeError) as error:
            return _error(_ApiError(400, f"Bad Request: invalid parameters: {error}"))
        return web.json_response({"ok": True, "result": result})

    def _record_injected_poll(self, token: str, request: web.Request, params: dict[str, Any],
                              status: int) -> None:  # fmt: skip
        now = time.monotonic()
        with self._lock:
            self.polls_by_token[token] += 1
            self.polls.append(
                PollRecord(token, _peer(request), int(params.get("offset") or 0),
                           float(params.get("timeout") or 0), now, 1, now, f"injected:{status}")
            )  # fmt: skip

    def _bot_message(self, chat_id: int, text: str | None = None) -> dict[str, Any]:
        with self._lock:
            message_id = self._next_message_id
            self._next_message_id += 1
        chat_type = "private" if chat_id > 0 else "supergroup"
        message: dict[str, Any] = {
            "message_id": message_id, "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type},
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Lunara", "username": self.username},
        }  # fmt: skip
        if text is not None:
            message["text"] = text
        return message

    def _checked_text(self, params: dict[str, Any]) -> str:
        text = str(params.get("text", ""))
        mode = params.get("parse_mode")
        problem = check_html(text) if mode == "HTML" else check_plain(text)
        if problem:
            with self._lock:
                self.rejected.append((params, problem))
            raise _ApiError(400, problem)
        return text

    async def _api_getMe(self, token: str, params: dict[str, Any],
                         request: web.Request) -> dict[str, Any]:  # fmt: skip
        return {"id": BOT_ID, "is_bot": True, "first_name": "Lunara", "username": self.username,
                "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False}  # fmt: skip

    async def _api_deleteWebhook(self, token: str, params: dict[str, Any],
                                 request: web.Request) -> bool:  # fmt: skip
        return True

    async def _api_setMyCommands(self, token: str, params: dict[str, Any],
                                 request: web.Request) -> bool:  # fmt: skip
        """Checked as Telegram checks it: a known scope, names of 1-32 lower-case letters,
        digits and underscores, descriptions of 1-256 characters, at most 100 commands.
        Kept per scope (`menus`): "default", "all_private_chats", "chat:<id>"..."""
        commands = list(params.get("commands") or [])
        scope = params.get("scope") or {"type": "default"}
        kind = scope.get("type") if isinstance(scope, dict) else None
        if kind not in SCOPES or (kind in ("chat", "chat_administrators", "chat_member")
                                  and "chat_id" not in scope):  # fmt: skip
            raise _ApiError(400, "Bad Request: BOT_COMMAND_SCOPE_INVALID")
        if len(commands) > 100:
            raise _ApiError(400, "Bad Request: too many commands")
        for entry in commands:
            name, description = str(entry.get("command", "")), str(entry.get("description", ""))
            if not COMMAND_NAME.fullmatch(name):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(description) <= 256:
                raise _ApiError(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        key = kind if "chat_id" not in scope else f"{kind}:{scope['chat_id']}"
        with self._lock:
            self.commands = commands
            self.menus[key] = [str(entry["command"]) for entry in commands]
        return True

    async def _api_getUpdates(self, token: str, params: dict[str, Any],
                              request: web.Request) -> list[dict[str, Any]]:  # fmt: skip
        """Long poll. A newer poll of the same token ends the older one with 409 Conflict.

        That is what the real Bot API does: the poll that was in flight when another
        client (or another instance) started polling is the one terminated.
        """
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        self._ask_for_kinds(token, params.get("allowed_updates"))
        with self._lock:
            overlapping = bool(self._active.get(token))
        if overlapping:  # let a client that just hung up be seen as gone, not as a rival
            await asyncio.sleep(OVERLAP_SETTLE_S)
        with self._lock:
            rivals = [(r, q) for r, q in self._active.get(token, []) if not _gone(q)]
            concurrent = len(rivals) + 1
            self.polls_by_token[token] += 1
            self._in_flight[token] += 1
            self.max_concurrent_polls = max(self.max_concurrent_polls, concurrent)
            for other, _ in rivals:
                other.outcome = "conflict"  # terminated by this newer request
            record = PollRecord(token, _peer(request), offset, timeout, time.monotonic(),
                                concurrent)  # fmt: skip
            self.polls.append(record)
            self._active.setdefault(token, []).append((record, request))
        try:
            deadline = time.monotonic() + min(timeout, self.max_poll_s)
            while True:
                with self._lock:
                    if record.outcome == "conflict":
                        self.conflicts_by_token[token] += 1
                        raise _ApiError(409, CONFLICT)
                    if offset:  # confirming an offset forgets every earlier update
                        self.confirmed_below = max(self.confirmed_below, offset)
                        self._updates = [u for u in self._updates if u["update_id"] >= offset]
                    self._withhold(token)
                    ready = list(self._updates[: max(1, min(limit, 100))])
                    if ready or time.monotonic() >= deadline:
                        record.outcome = f"updates:{len(ready)}"
                        return ready
                if _gone(request):
                    record.outcome = "abandoned"  # the client hung up (cancelled its poll)
                    return []
                await asyncio.sleep(0.01)
        finally:
            record.ended = time.monotonic()
            with self._lock:
                self._in_flight[token] -= 1
                self._active[token].remove((record, request))

    def _ask_for_kinds(self, token: str, asked: Any) -> None:
        """Keep the `allowed_updates` of a getUpdates (absent: the last one stands; an
        empty list: Telegram's default)."""
        if asked is None:
            return
        kinds = [str(kind) for kind in asked]
        with self._lock:
            self.allowed_updates_asked.append(kinds)
            self._allowed[token] = frozenset(kinds) if kinds else None

    def _withhold(self, token: str) -> None:
        """Drop queued updates of a kind the token did not ask for (Telegram does not
        keep them for it). Called with the lock held."""
        allowed = self._allowed.get(token)

        def wanted(update: dict[str, Any]) -> bool:
            kind = update_kind(update)
            return kind not in DEFAULT_UNDELIVERED if allowed is None else kind in allowed

        kept = [u for u in self._updates if wanted(u)]
        if len(kept) != len(self._updates):
            self.withheld += [u for u in self._updates if not wanted(u)]
            self._updates = kept

    async def _api_sendMessage(self, token: str, params: dict[str, Any],
                               request: web.Request) -> dict[str, Any]:  # fmt: skip
        text = self._checked_text(params)
        chat_id = int(params["chat_id"])
        message = self._bot_message(chat_id, text)
        with self._lock:
            self.sent.append({"chat_id": chat_id, "text": text,
                              "parse_mode": params.get("parse_mode"),
                              "message_id": message["message_id"],
                              "reply_to": _reply_to(params),
                              "thread_id": params.get("message_thread_id"),
                              "reply_markup": params.get("reply_markup"),
                              "at": time.time()})  # fmt: skip
        return message

    async def _api_editMessageText(self, token: str, params: dict[str, Any],
                                   request: web.Request) -> dict[str, Any]:  # fmt: skip
        text = self._checked_text(params)
        chat_id = int(params["chat_id"])
        with self._lock:
            self.edits.append({"chat_id": chat_id, "message_id": int(params["message_id"]),
                               "text": text, "parse_mode": params.get("parse_mode")})  # fmt: skip
        message = self._bot_message(chat_id, text)
        message["message_id"] = int(params["message_id"])
        message["edit_date"] = int(time.time())
        return message

    async def _api_deleteMessage(self, token: str, params: dict[str, Any],
                                 request: web.Request) -> bool:  # fmt: skip
        with self._lock:
            self.deleted.append((int(params["chat_id"]), int(params["message_id"])))
        return True

    async def _api_answerCallbackQuery(self, token: str, params: dict[str, Any],
                                       request: web.Request) -> bool:  # fmt: skip
        with self._lock:
            self.callback_answers.append(params)
        return True

    async def _api_sendChatAction(self, token: str, params: dict[str, Any],
                                  request: web.Request) -> bool:  # fmt: skip
        with self._lock:
            self.chat_actions.append(params)
        return True

    async def _api_sendInvoice(self, token: str, params: dict[str, Any],
                               request: web.Request) -> dict[str, Any]:  # fmt: skip
        if params.get("currency") == "XTR" and params.get("provider_token") not in (None, ""):
            raise _ApiError(400, "Bad Request: provider_token must be empty for Telegram Stars")
        with self._lock:
            self.invoices.append(dict(params, at=time.time()))
        message = self._bot_message(int(params["chat_id"]))
        message["invoice"] = {
            "title": params.get("title", ""), "description": params.get("description", ""),
            "start_parameter": "", "currency": params.get("currency", ""),
            "total_amount": sum(int(p["amount"]) for p in params.get("prices") or []),
        }  # fmt: skip
        return message

    async def _api_answerPreCheckoutQuery(self, token: str, params: dict[str, Any],
                                          request: web.Request) -> bool:  # fmt: skip
        with self._lock:
            self.answers.append(params)
        return True

    async def _api_refundStarPayment(self, token: str, params: dict[str, Any],
                                     request: web.Request) -> bool:  # fmt: skip
        """A charge is refunded once: again, 400 CHARGE_ALREADY_REFUNDED, as Telegram says."""
        charge = str(params["telegram_payment_charge_id"])
        with self._lock:
            if charge in self.refunded_charges:
                raise _ApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
            self.refunded_charges.add(charge)
            self.refunds.append(params)
        return True


def _set_text(message: dict[str, Any], text: str) -> None:
    """Give a message its text; one starting with "/" carries a bot_command entity."""
    message["text"] = text
    if text.startswith("/"):
        length = len(text.split(maxsplit=1)[0])
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]


def update_kind(update: dict[str, Any]) -> str:
    """`message`, `edited_message`, `my_chat_member`...: the field beside `update_id`."""
    return next(key for key in update if key != "update_id")


def group_chat_id(user_id: int) -> int:
    """The group chat id `push_text(..., chat_type="group")` uses for `user_id`."""
    return -1000000000 - user_id


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "?"


def _error(error: _ApiError) -> web.Response:
    body: dict[str, Any] = {
        "ok": False, "error_code": error.status, "description": error.description,
    }  # fmt: skip
    if error.retry_after is not None:
        body["parameters"] = {"retry_after": error.retry_after}
    if error.migrate_to_chat_id is not None:
        body["parameters"] = {"migrate_to_chat_id": error.migrate_to_chat_id}
    return web.json_response(body, status=error.status)


def main(argv: list[str] | None = None) -> int:
    def configure(parser: Any) -> None:
        parser.add_argument("--username", default="lunara_test_bot")
        parser.add_argument("--max-poll-s", type=float, default=10.0)
        parser.add_argument("--no-flood-limits", action="store_true",
                            help="the friendly server: no 429 for sending too fast")  # fmt: skip

    return run_standalone(
        lambda args: FakeTelegram(
            username=args.username,
            max_poll_s=args.max_poll_s,
            flood_limits=not args.no_flood_limits,
        ),
        argv,
        configure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
