"""Who may run which command: one guard in front of every handler.

Each command declares the permission it needs (`tg.trade.buy`, `tg.admin.broadcast`…).
The guard resolves `telegram:<numeric id>` through the manifest (never a username),
audits the decision, and applies a per-user rate limit — all before any handler code
runs. Plan limits (how much of something) are checked by the handlers, separately.

Anyone can message the bot, so nothing a stranger can make it keep grows without
bound: the rate limiter forgets a user once their window has passed (and holds at most
MAX_TRACKED_USERS), and refusals are audited by sample (`RefusalAudit`): the first of
each user per window, at most REFUSALS_AUDITED_PER_WINDOW in all, the rest counted in
the next line written. Every allowed command keeps its own line.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from blueprint.audit import AuditLog, Decision
from blueprint.identity import telegram_principal
from blueprint.manifest import Manifest

if TYPE_CHECKING:
    from lunara.telegram.commands import CommandContext

Handler = Callable[["CommandContext"], Awaitable[None]]

MAX_TRACKED_USERS = 10_000
REFUSAL_WINDOW_S = 60.0
REFUSALS_AUDITED_PER_WINDOW = 60


@dataclass(frozen=True)
class Command:
    name: str
    permission: str
    usage: str
    description: str
    handler: Handler
    private_only: bool = False  # private data or secrets: in a group, a pointer instead


class Verdict(Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    RATE_LIMITED = "rate_limited"


class RateLimiter:
    """At most `limit` commands per user per `window_s` (sliding window, bounded memory)."""

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[int, deque[float]] = OrderedDict()

    def allow(self, user_id: int) -> bool:
        now = self._clock()
        moments = self._seen.pop(user_id, None) or deque()
        while moments and now - moments[0] >= self.window_s:
            moments.popleft()
        allowed = len(moments) < self.limit
        if allowed:
            moments.append(now)
        if moments:
            self._seen[user_id] = moments
        # Least recently seen first: a user whose newest command left the window has
        # nothing left to limit, and neither has anyone seen before them.
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if len(self._seen) <= MAX_TRACKED_USERS and now - oldest[-1] < self.window_s:
                break
            self._seen.popitem(last=False)
        return allowed

    @property
    def tracked(self) -> int:
        """Users whose recent commands are remembered."""
        return len(self._seen)


class RefusalAudit:
    """Which refused commands get an audit line of their own.

    A refusal is the answer to anyone who writes to the bot, so auditing each one
    would let strangers grow the audit log (and its Redis stream) at will. Per window,
    the first refusal of each user is audited, at most `per_window` in all; the others
    are counted, and the count goes into the next line written. What is remembered is
    the users audited in the current window: at most `per_window` of them.
    """

    def __init__(
        self,
        window_s: float = REFUSAL_WINDOW_S,
        per_window: int = REFUSALS_AUDITED_PER_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.per_window = per_window
        self._clock = clock
        self._audited: OrderedDict[int, float] = OrderedDict()  # user -> when, oldest first
        self._unaudited = 0

    def admit(self, user_id: int) -> int | None:
        """None when this refusal is only counted; else how many went unaudited since
        the last line (to write in this one)."""
        now = self._clock()
        while self._audited and now - next(iter(self._audited.values())) >= self.window_s:
            self._audited.popitem(last=False)
        if user_id in self._audited or len(self._audited) >= self.per_window:
            self._unaudited += 1
            return None
        self._audited[user_id] = now
        unaudited, self._unaudited = self._unaudited, 0
        return unaudited

    @property
    def tracked(self) -> int:
        """Users remembered as audited in the current window."""
        return len(self._audited)


class Guard:
    def __init__(
        self,
        manifest: Manifest,
        audit: AuditLog,
        limiter: RateLimiter,
        refusals: RefusalAudit | None = None,
    ) -> None:
        self.manifest = manifest
        self.audit = audit
        self.limiter = limiter
        self.refusals = RefusalAudit() if refusals is None else refusals

    def principal(self, user_id: int) -> str:
        return telegram_principal(user_id)

    def may(self, user_id: int, permission: str) -> bool:
        return self.manifest.allows(self.principal(user_id), permission)

    def check(self, user_id: int, command: Command) -> Verdict:
        principal = self.principal(user_id)
        detail: dict[str, Any] = {"role": self.manifest.role_of(principal)}
        if not self.manifest.allows(principal, command.permission):
            self._refused(user_id, command, "refused", detail)
            return Verdict.DENIED
        if not self.limiter.allow(user_id):
            self._refused(user_id, command, "rate limited", detail)
            return Verdict.RATE_LIMITED
        self.audit.record(
            principal, f"tg.{command.name}", Decision.ALLOWED, None, detail,
            permission=command.permission,
        )  # fmt: skip
        return Verdict.ALLOWED

    def _refused(
        self, user_id: int, command: Command, outcome: str, detail: dict[str, Any]
    ) -> None:
        unaudited = self.refusals.admit(user_id)
        if unaudited is None:
            return
        if unaudited:
            detail["unaudited_refusals"] = unaudited
        self.audit.record(
            self.principal(user_id), f"tg.{command.name}", Decision.DENIED, outcome, detail,
            permission=command.permission,
        )  # fmt: skip

    def admins(self, user_ids: list[int]) -> list[int]:
        """Those of `user_ids` whose role may use admin commands."""
        return [uid for uid in user_ids if self.may(uid, "tg.admin.users")]
