"""The guard's pure parts: the rate limit for everything a user sends, and lateness."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from lunara.telegram.commands import COMMANDS
from lunara.telegram.guard import Admission, RateLimiter, late_by


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_a_user_is_told_to_slow_down_once_per_window_then_let_through() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window_s=60.0, clock=clock)
    seen = [limiter.admit(7) for _ in range(10)]
    assert seen == [Admission.ALLOWED] * 3 + [Admission.SLOW_DOWN] + [Admission.IGNORED] * 6
    assert limiter.admit(8) is Admission.ALLOWED  # another user has a limit of their own
    clock.now += 59.0
    assert limiter.admit(7) is Admission.IGNORED  # still the same window
    clock.now += 1.0
    assert limiter.admit(7) is Admission.ALLOWED  # the first three have left the window
    assert [limiter.admit(7) for _ in range(3)] == [Admission.ALLOWED] * 2 + [Admission.SLOW_DOWN]


@given(st.integers(1, 5), st.lists(st.floats(0.0, 30.0), min_size=1, max_size=60))
def test_slow_down_is_said_at_most_once_in_any_window_and_never_past_the_limit(
    limit: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(limit, window_s=60.0, clock=clock)
    allowed: list[float] = []
    warned: list[float] = []
    for gap in gaps:
        clock.now += gap
        admission = limiter.admit(1)
        if admission is Admission.ALLOWED:
            allowed.append(clock.now)
        elif admission is Admission.SLOW_DOWN:
            warned.append(clock.now)
    for moment in allowed:  # never more than `limit` let through in any window
        assert sum(1 for other in allowed if moment <= other < moment + 60.0) <= limit
    assert all(later - earlier >= 60.0 for earlier, later in itertools.pairwise(warned))


def test_a_command_is_late_only_past_the_age_and_a_clock_ahead_is_not_late() -> None:
    assert late_by(sent_at=100.0, taken_at=161.0, max_age_s=60.0) == 61.0
    assert late_by(sent_at=100.0, taken_at=160.0, max_age_s=60.0) is None
    assert late_by(sent_at=200.0, taken_at=100.0, max_age_s=60.0) is None


def test_trade_commands_and_settings_changes_act_and_reading_does_not() -> None:
    acting = {name for name, command in COMMANDS.items() if command.acts_on(f"/{name} x=1")}
    assert {"buy", "sell", "settings", "pause", "resume"} <= acting
    assert not acting & {"balance", "positions", "status", "plans", "help", "analyze"}
    assert not COMMANDS["settings"].acts_on("/settings")
    assert COMMANDS["settings"].acts_on("/settings stake_usdt=50")
