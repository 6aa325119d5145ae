"""The restart schedule and crash-window accounting, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from blueprint.backoff import backoff_delay, decide_restart, restarts_in_window


@dataclass(frozen=True)
class Policy:
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_restarts: int = 5
    window_s: float = 300.0
    healthy_after_s: float = 60.0


seconds = st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False)
policies = st.builds(
    Policy,
    backoff_initial_s=seconds,
    backoff_max_s=seconds,
    max_restarts=st.integers(min_value=0, max_value=50),
    window_s=seconds,
    healthy_after_s=seconds,
)


def test_delays_double_from_the_initial_delay_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(1, 0.2, 5.0) == 0.2


@given(st.integers(min_value=1, max_value=10_000), seconds, seconds)
def test_delay_never_exceeds_the_cap_and_never_shrinks(
    failures: int, initial: float, cap: float
) -> None:
    delay = backoff_delay(failures, initial, cap)
    assert 0 < delay <= cap
    assert delay <= backoff_delay(failures + 1, initial, cap)
    assert backoff_delay(1, initial, cap) == min(initial, cap)


@given(st.lists(st.floats(min_value=0, max_value=2000), max_size=30), seconds, seconds)
def test_window_keeps_only_restarts_younger_than_the_window(
    times: list[float], now_offset: float, window: float
) -> None:
    now = 2000 + now_offset
    recent = restarts_in_window(times, now, window)
    assert all(now - moment < window for moment in recent)
    assert len(recent) == sum(1 for moment in times if now - moment < window)


@given(policies, st.lists(st.floats(min_value=0, max_value=1000), max_size=60), seconds)
def test_more_than_max_restarts_within_the_window_is_fatal(
    policy: Policy, times: list[float], uptime: float
) -> None:
    now = 1000.0
    decision = decide_restart(policy, times, 3, uptime, now)
    recent = restarts_in_window(times, now, policy.window_s)
    assert decision.fatal == (len(recent) >= policy.max_restarts)
    if decision.fatal:
        assert decision.restart_times == recent
    else:
        assert decision.restart_times == (*recent, now)
        assert len(decision.restart_times) <= policy.max_restarts


@given(policies)
def test_a_crash_loop_gets_exactly_max_restarts_then_gives_up(policy: Policy) -> None:
    times: tuple[float, ...] = ()
    failures = 0
    now = 0.0
    restarts = 0
    for _ in range(policy.max_restarts + 1):
        decision = decide_restart(policy, times, failures, 0.0, now)
        if decision.fatal:
            break
        restarts += 1
        times, failures = decision.restart_times, decision.consecutive_failures
        now += min(decision.delay_s, policy.window_s / (policy.max_restarts + 2))
    else:
        raise AssertionError("the crash loop never became fatal")
    assert restarts == policy.max_restarts


def test_a_bot_that_was_healthy_long_enough_restarts_after_the_initial_delay() -> None:
    policy = Policy(backoff_initial_s=0.5, backoff_max_s=30, healthy_after_s=10)
    unhealthy = decide_restart(policy, [], 4, uptime_s=2.0, now=100.0)
    assert unhealthy.delay_s == 8.0
    assert unhealthy.consecutive_failures == 5
    healthy = decide_restart(policy, [], 4, uptime_s=10.0, now=100.0)
    assert healthy.delay_s == 0.5
    assert healthy.consecutive_failures == 1
