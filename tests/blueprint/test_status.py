"""The status report: exit codes by state, and the bot's dependencies as status shows them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from blueprint.dependencies import dependency_notes, read_dependencies, write_dependencies
from blueprint.errors import ExitCode
from blueprint.health import render_metrics
from blueprint.render import describe_dependencies
from blueprint.states import State
from blueprint.status import StatusReport

OFF = {"state": "off", "last_ok_at": None, "down_since": None, "reason": None}
AT = 1_765_000_000.0  # 2025-12-06T05:46:40+00:00


def report(state: str, healthy: bool, dependencies: Any = None) -> StatusReport:
    return StatusReport(
        state=state, pid=1, supervisor_pid=2, started_at=None, uptime_s=1.0, restarts=0,
        last_exit=None, rss_mib=10.0, heartbeat_age_s=0.5,
        mirror={"backend": "off", "healthy": True, "synced_revision": None},
        ledger_revision=1, principal=None, healthy=healthy, notes=[],
        dependencies=dependencies,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "healthy", "code"),
    [
        (State.RUNNING, True, ExitCode.OK),
        (State.RUNNING, False, ExitCode.UNHEALTHY),
        (State.STANDBY, False, ExitCode.OK),  # another instance is active: as it should be
        (State.STARTING, False, ExitCode.UNHEALTHY),
        (State.BACKOFF, False, ExitCode.UNHEALTHY),
        (State.STOPPED, False, ExitCode.NOT_RUNNING),
    ],
)
def test_exit_code_by_state(state: str, healthy: bool, code: ExitCode) -> None:
    assert report(state, healthy).exit_code() == code


def bot_report(**changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"telegram": OFF, "redis": OFF, "exchange": OFF, "ai": OFF} | changes


def test_a_report_is_shown_with_iso_times_and_the_reason_only_while_down(tmp_path: Path) -> None:
    path = tmp_path / "dependencies.json"
    write_dependencies(
        path,
        bot_report(
            telegram={"state": "down", "last_ok_at": AT, "down_since": AT + 5, "reason": "no"},
            redis={"state": "ok", "last_ok_at": AT, "down_since": None, "reason": None},
        ),
    )
    shown = read_dependencies(path, time.time() - 60)
    assert shown == {
        "telegram": {
            "state": "down",
            "last_ok_at": "2025-12-06T05:46:40.000+00:00",
            "down_since": "2025-12-06T05:46:45.000+00:00",
            "reason": "no",
        },
        "redis": {"state": "ok", "last_ok_at": "2025-12-06T05:46:40.000+00:00"},
        "exchange": {"state": "off", "last_ok_at": None},
        "ai": {"state": "off", "last_ok_at": None},
    }
    assert dependency_notes(shown) == [
        "telegram is down since 2025-12-06T05:46:45.000+00:00, "
        "last ok 2025-12-06T05:46:40.000+00:00: no"
    ]
    assert describe_dependencies(shown) == (
        "telegram down (last ok 2025-12-06T05:46:40.000+00:00), redis ok, exchange off, ai off"
    )


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[]",
        json.dumps({"telegram": OFF}),  # a dependency missing
        json.dumps(bot_report(ai={"state": "maybe"})),  # not a state
    ],
)
def test_an_unreadable_report_is_not_guessed_at(tmp_path: Path, content: str) -> None:
    path = tmp_path / "dependencies.json"
    path.write_text(content)
    assert read_dependencies(path, 0.0) is None


def test_a_report_older_than_the_bot_is_the_previous_bots(tmp_path: Path) -> None:
    path = tmp_path / "dependencies.json"
    write_dependencies(path, bot_report())
    os.utime(path, (1000.0, 1000.0))
    assert read_dependencies(path, 1000.5) is None
    assert read_dependencies(path, 999.5) is not None
    assert read_dependencies(tmp_path / "absent.json", 0.0) is None


def test_metrics_have_one_series_per_dependency_in_use() -> None:
    shown = {
        "telegram": {"state": "down", "last_ok_at": "2025-12-06T05:46:40.000+00:00"},
        "redis": {"state": "ok", "last_ok_at": "2025-12-06T05:46:41.500+00:00"},
        "exchange": {"state": "off", "last_ok_at": None},
        "ai": {"state": "ok", "last_ok_at": None},
    }
    text = render_metrics(report(State.RUNNING, True, shown), {})
    assert 'lunara_dependency_up{dependency="telegram"} 0\n' in text
    assert 'lunara_dependency_up{dependency="redis"} 1\n' in text
    assert 'lunara_dependency_up{dependency="ai"} 1\n' in text
    assert 'dependency="exchange"' not in text
    assert (
        'lunara_dependency_last_ok_timestamp_seconds{dependency="redis"} 1765000001.500\n' in text
    )
    assert 'lunara_dependency_last_ok_timestamp_seconds{dependency="ai"}' not in text
    assert text.count("# TYPE lunara_dependency_up gauge") == 1
    assert "lunara_dependency" not in render_metrics(report(State.RUNNING, True), {})
