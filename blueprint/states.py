"""The supervisor's states and how the evidence decides one.

A leaf: it imports nothing of ours, so the ledger, the status computation, the
controller, the watchdog's status socket and its health endpoint all name states
from one place without importing one another. Deciding a state is pure (facts in,
verdict out), so it is tested over every combination of facts rather than by
arranging processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

INVALID_CONFIG_NOTE = (
    "invalid configuration (last_exit.reason says what): not restarted; fix it, then start"
)


class State(StrEnum):
    """What `lunara status` calls the deployment (DESIGN.md, `status --json` `state`)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    # Another instance of this deployment holds the instance lease; this one waits.
    STANDBY = "standby"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FATAL = "fatal"
    # The watchdog is gone and its bot still runs.
    ORPHANED = "orphaned"


# Derived from the evidence each time, never written to the ledger: an orphan has no
# watchdog left to record it, and a standby shares its home's ledger with the active
# instance, whose entry it must never overwrite.
DERIVED_STATES = frozenset({State.ORPHANED, State.STANDBY})
STORED_STATES = frozenset(State) - DERIVED_STATES


class ControlEvent(StrEnum):
    """Ledger event kinds written by the controller (the watchdog's are in its Event)."""

    START_REQUESTED = "start.requested"
    STOP_REQUESTED = "stop.requested"
    STOPPED = "bot.stopped"


class Dependency(StrEnum):
    """What the bot needs from outside and cannot bring back by restarting."""

    TELEGRAM = "telegram"
    REDIS = "redis"
    EXCHANGE = "exchange"
    AI = "ai"


class Reachability(StrEnum):
    """A dependency as the bot last found it: `off` when it is not configured."""

    OK = "ok"
    DOWN = "down"
    OFF = "off"


@dataclass(frozen=True)
class Liveness:
    """What the process table and the heartbeat say right now."""

    watchdog_alive: bool
    bot_alive: bool
    heartbeat_age_s: float | None  # None: no beat since the current bot started
    bot_uptime_s: float | None
    heartbeat_timeout_s: float
    # The bot's heartbeat says it waits for the instance lease, held by this instance.
    standby_of: str | None = None


@dataclass(frozen=True)
class Verdict:
    state: State
    healthy: bool
    notes: tuple[str, ...] = ()


def decide_state(stored: str, facts: Liveness, invalid_config: bool = False) -> Verdict:
    """Name the state from the ledger's claim and the facts; the facts win.

    `invalid_config`: the last exit had code 6, so a `fatal` state is the bot refusing its
    configuration, not a crash loop.
    """
    if stored == State.FATAL and invalid_config and not facts.bot_alive:
        return Verdict(State.FATAL, False, (INVALID_CONFIG_NOTE,))
    if not facts.watchdog_alive:
        if facts.bot_alive:
            return Verdict(
                State.ORPHANED,
                False,
                (
                    "the watchdog is gone but the bot is still running: "
                    "`lunara stop` stops it, `lunara start` adopts it",
                ),
            )
        if stored == State.FATAL:
            return Verdict(
                State.FATAL, False, ("crash loop: restarts exhausted; fix the bot, then start",)
            )
        if stored != State.STOPPED:
            return Verdict(
                State.STOPPED, False, (f"the watchdog is gone (the ledger said {stored})",)
            )
        return Verdict(State.STOPPED, False)
    if stored == State.STOPPING:
        return Verdict(State.STOPPING, False, ("a stop is in progress",))
    if stored == State.FATAL:
        return Verdict(State.FATAL, False, ("crash loop: restarts exhausted",))
    if not facts.bot_alive:
        if stored in (State.STARTING, State.STOPPED):
            return Verdict(State.STARTING, False, ("the watchdog is starting the bot",))
        return Verdict(State.BACKOFF, False, ("the bot is down; the watchdog will restart it",))
    timeout = facts.heartbeat_timeout_s
    if facts.heartbeat_age_s is None:
        uptime = facts.bot_uptime_s or 0.0
        if uptime <= 2 * timeout:
            return Verdict(State.STARTING, False, ("waiting for the bot's first heartbeat",))
        return Verdict(
            State.RUNNING, False, (f"no heartbeat since the bot started {uptime:.0f} s ago",)
        )
    if facts.heartbeat_age_s > timeout:
        return Verdict(
            State.RUNNING,
            False,
            (f"stale heartbeat: {facts.heartbeat_age_s:.1f} s old (timeout {timeout:g} s)",),
        )
    if facts.standby_of is not None:
        return Verdict(
            State.STANDBY,
            True,
            (
                "standby: another instance of this deployment holds the instance lease "
                f"({facts.standby_of}); this one takes over when it stops",
            ),
        )
    return Verdict(State.RUNNING, True)
