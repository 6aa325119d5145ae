"""Who may run which command: one guard in front of every handler.

Each command declares the permission it needs (`tg.trade.buy`, `tg.admin.broadcast`…).
The guard resolves `telegram:<numeric id>` through the manifest (never a username),
audits the decision, and applies a per-user rate limit to everything a user sends
(commands, unknown ones too, plain text and edits) — all before any handler code runs.
It also knows which commands act (buy, sell, change settings...) and so must not run
when Telegram delivers them late. Plan limits (how much of something) are checked by
the handlers, separately.

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
from dataclasses import dataclass, field
from enum import Enum
from math import inf
from typing import Any, Generic, TypeVar

from blueprint.audit import AuditLog, Decision
from blueprint.identity import telegram_principal
from blueprint.manifest import Manifest, Permission

# What a command's handler is given (the Telegram layer's `CommandContext`). The guard
# reads only the declaration, never the context, so it does not name it: the commands
# module builds on the guard and the guard never imports the commands back.
ContextT = TypeVar("ContextT")

MAX_TRACKED_USERS = 10_000
REFUSAL_WINDOW_S = 60.0
REFUSALS_AUDITED_PER_WINDOW = 60


class Acts(Enum):
    """Whether a command changes something (trades, settings, the bot's state): such a
    command is not run when it arrives late, since the trader decided on a market that
    has moved since. One that only reads is answered however late it comes."""

    NEVER = "never"
    ALWAYS = "always"
    WITH_ARGUMENTS = "with arguments"  # `/settings` shows them; `/settings k=v` changes them


@dataclass(frozen=True)
class Command(Generic[ContextT]):
    name: str
    permission: Permission
    usage: str
    description: str
    handler: Callable[[ContextT], Awaitable[None]]
    private_only: bool = False  # private data or secrets: in a group, a pointer instead
    acts: Acts = Acts.NEVER

    def acts_on(self, text: str) -> bool:
        """Whether this command, sent as `text`, would change something."""
        if self.acts is Acts.WITH_ARGUMENTS:
            return len(text.split()) > 1
        return self.acts is Acts.ALWAYS


def late_by(sent_at: float, taken_at: float, max_age_s: float) -> float | None:
    """How late a message reached us (seconds from when it was sent to when the bot took
    it), if later than `max_age_s`; else None. Telegram keeps what it could not deliver
    for a day and then delivers it all at once. A message dated in the future (the
    clocks differ a little) is not late."""
    delay = taken_at - sent_at
    return delay if delay > max_age_s else None


class Verdict(Enum):
    ALLOWED = "allowed"
    DENIED = "denied"


class Admission(Enum):
    """What the rate limit makes of one more message from a user."""

    ALLOWED = "allowed"
    SLOW_DOWN = "slow down"  # over the limit: not answered, the user told to slow down
    IGNORED = "ignored"  # over the limit again in the same window: not answered at all


@dataclass
class _Sender:
    moments: deque[float] = field(default_factory=deque)  # of the messages let through
    warned_at: float | None = None  # when the user was last told to slow down

    def forgettable(self, now: float, window_s: float) -> bool:
        """Nothing of this sender is left in the window: forgetting them changes no answer."""
        last = max(self.moments[-1] if self.moments else -inf, self.warned_at or -inf)
        return now - last >= window_s


class RateLimiter:
    """At most `limit` messages per user per `window_s` (sliding window, bounded memory).
    Past the limit a user is told to slow down once per window, not once per message: a
    flood of messages must not become a flood of answers."""

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[int, _Sender] = OrderedDict()

    def admit(self, user_id: int) -> Admission:
        now = self._clock()
        sender = self._seen.pop(user_id, None) or _Sender()
        self._seen[user_id] = sender
        admission = self._admit(sender, now)
        # Least recently seen first: a sender whose newest message and warning left the
        # window has nothing left to limit, and neither has anyone seen before them.
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if len(self._seen) <= MAX_TRACKED_USERS and not oldest.forgettable(now, self.window_s):
                break
            self._seen.popitem(last=False)
        return admission

    def _admit(self, sender: _Sender, now: float) -> Admission:
        moments = sender.moments
        while moments and now - moments[0] >= self.window_s:
            moments.popleft()
        if len(moments) < self.limit:
            moments.append(now)
            return Admission.ALLOWED
        if sender.warned_at is not None and now - sender.warned_at < self.window_s:
            return Admission.IGNORED
        sender.warned_at = now
        return Admission.SLOW_DOWN

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

    def may(self, user_id: int, permission: Permission) -> bool:
        return self.manifest.allows(self.principal(user_id), permission)

    def admit(self, user_id: int, command: Command[Any] | None) -> Admission:
        """Count one message (`command`: the command it carries, if one we know) against
        the user's rate limit; a command refused for it is audited as such."""
        admission = self.limiter.admit(user_id)
        if admission is not Admission.ALLOWED and command is not None:
            principal = self.principal(user_id)
            detail: dict[str, Any] = {"role": self.manifest.role_of(principal)}
            self._refused(user_id, command, "rate limited", detail)
        return admission

    def check(self, user_id: int, command: Command[Any]) -> Verdict:
        principal = self.principal(user_id)
        detail: dict[str, Any] = {"role": self.manifest.role_of(principal)}
        if not self.manifest.allows(principal, command.permission):
            self._refused(user_id, command, "refused", detail)
            return Verdict.DENIED
        self.audit.record(
            principal, f"tg.{command.name}", Decision.ALLOWED, None, detail,
            permission=command.permission,
        )  # fmt: skip
        return Verdict.ALLOWED

    def _refused(
        self, user_id: int, command: Command[Any], outcome: str, detail: dict[str, Any]
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
        return [uid for uid in user_ids if self.may(uid, Permission.TG_USERS)]
