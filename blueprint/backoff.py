"""When to restart a bot that stopped unexpectedly, and when to give up.

Pure functions over plain numbers, so the schedule and the crash-window accounting are
tested without processes or clocks. The watchdog owns the I/O and feeds these the
current time.

- Delays double from `backoff_initial_s` up to `backoff_max_s`; a bot that ran healthily
  for `healthy_after_s` before it stopped starts again from the initial delay.
- More than `max_restarts` restarts within `window_s` is a crash loop: the watchdog
  stops restarting (state `fatal`) instead of burning the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class RestartLimits(Protocol):
    """The restart policy fields this module reads (blueprint.manifest.RestartPolicy)."""

    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...

    @property
    def max_restarts(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def healthy_after_s(self) -> float: ...


@dataclass(frozen=True)
class RestartDecision:
    """What to do after the bot stopped unexpectedly."""

    fatal: bool
    delay_s: float
    consecutive_failures: int
    restart_times: tuple[float, ...]  # restarts within the window, including this one if any


def backoff_delay(consecutive_failures: int, initial_s: float, max_s: float) -> float:
    """Delay before the restart that follows the n-th failure in a row (n >= 1)."""
    if consecutive_failures < 1:
        return 0.0
    # Doubling overflows floats long before it matters; stop doubling once past the cap.
    delay = initial_s
    for _ in range(consecutive_failures - 1):
        if delay >= max_s:
            break
        delay *= 2
    return min(delay, max_s)


def restarts_in_window(
    restart_times: Sequence[float], now: float, window_s: float
) -> tuple[float, ...]:
    """The restarts that still count against the crash window at `now`."""
    return tuple(moment for moment in restart_times if now - moment < window_s)


def decide_restart(
    policy: RestartLimits,
    restart_times: Sequence[float],
    consecutive_failures: int,
    uptime_s: float,
    now: float,
) -> RestartDecision:
    """Decide between a delayed restart and giving up, after one unexpected stop."""
    previous = 0 if uptime_s >= policy.healthy_after_s else consecutive_failures
    failures = previous + 1
    recent = restarts_in_window(restart_times, now, policy.window_s)
    if len(recent) >= policy.max_restarts:
        return RestartDecision(
            fatal=True, delay_s=0.0, consecutive_failures=failures, restart_times=recent
        )
    delay = backoff_delay(failures, policy.backoff_initial_s, policy.backoff_max_s)
    return RestartDecision(
        fatal=False,
        delay_s=delay,
        consecutive_failures=failures,
        restart_times=(*recent, now),
    )
