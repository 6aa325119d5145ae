"""Who may run which command: one guard in front of every handler.

Each command declares the permission it needs (`tg.trade.buy`, `tg.admin.broadcast`…).
The guard resolves `telegram:<numeric id>` through the manifest (never a username),
audits the decision, and applies a per-user rate limit — all before any handler code
runs. Plan limits (how much of something) are checked by the handlers, separately.
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
from blueprint.manifest import Manifest, Permission

if TYPE_CHECKING:
    from lunara.telegram.commands import CommandContext

Handler = Callable[["CommandContext"], Awaitable[None]]

MAX_TRACKED_USERS = 10_000


@dataclass(frozen=True)
class Command:
    name: str
    permission: Permission
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
        self._seen[user_id] = moments
        while len(self._seen) > MAX_TRACKED_USERS:
            self._seen.popitem(last=False)
        return allowed


class Guard:
    def __init__(self, manifest: Manifest, audit: AuditLog, limiter: RateLimiter) -> None:
        self.manifest = manifest
        self.audit = audit
        self.limiter = limiter

    def principal(self, user_id: int) -> str:
        return telegram_principal(user_id)

    def may(self, user_id: int, permission: Permission) -> bool:
        return self.manifest.allows(self.principal(user_id), permission)

    def check(self, user_id: int, command: Command) -> Verdict:
        principal = self.principal(user_id)
        detail: dict[str, Any] = {"role": self.manifest.role_of(principal)}
        if not self.manifest.allows(principal, command.permission):
            self.audit.record(
                principal, f"tg.{command.name}", Decision.DENIED, "refused", detail,
                permission=command.permission,
            )  # fmt: skip
            return Verdict.DENIED
        if not self.limiter.allow(user_id):
            self.audit.record(
                principal, f"tg.{command.name}", Decision.DENIED, "rate limited", detail,
                permission=command.permission,
            )  # fmt: skip
            return Verdict.RATE_LIMITED
        self.audit.record(
            principal, f"tg.{command.name}", Decision.ALLOWED, None, detail,
            permission=command.permission,
        )  # fmt: skip
        return Verdict.ALLOWED

    def admins(self, user_ids: list[int]) -> list[int]:
        """Those of `user_ids` whose role may use admin commands."""
        return [uid for uid in user_ids if self.may(uid, Permission.TG_USERS)]
