"""Crash reports: what the next bot tells the admins after an abnormal exit, once."""

from __future__ import annotations

import signal
from pathlib import Path

from blueprint.ledger import ExitRecord, LedgerDocument
from blueprint.manifest import RestartPolicy
from blueprint.watchdog import Reason, describe_exit
from lunara.crash_report import ReportMarker, pending_report

POLICY = RestartPolicy(backoff_initial_s=1, backoff_max_s=60, max_restarts=5, window_s=300)
NOW = 1_800_000_000.0


def ledger_with(exit_record: ExitRecord | None, restart_times: list[float]) -> LedgerDocument:
    document = LedgerDocument(name="lunara")
    document.last_exit = exit_record
    document.restart_times = restart_times
    return document


def test_an_oom_kill_is_reported_with_signal_reason_rss_and_window() -> None:
    record = ExitRecord(
        code=None,
        signal=signal.SIGKILL,
        at="2027-01-15T08:00:00+00:00",
        reason=describe_exit(None, signal.SIGKILL),
        rss_mib=498.2,
    )
    report = pending_report(ledger_with(record, [NOW - 10]), POLICY, None, now=NOW)
    assert report is not None
    text = report.to_html()
    assert "SIGKILL" in text
    assert "out-of-memory" in text
    assert "498.2 MiB" in text
    assert "1 of 5" in text
    assert not report.crash_loop_near


def test_the_crash_loop_warning_appears_when_one_restart_is_left() -> None:
    record = ExitRecord(code=1, signal=None, at="t1", reason="exited with code 1")
    times = [NOW - 50, NOW - 40, NOW - 30, NOW - 20]
    report = pending_report(ledger_with(record, times), POLICY, None, now=NOW)
    assert report is not None
    assert report.crash_loop_near
    assert "crash-loop limit is near" in report.to_html()


def test_restarts_outside_the_window_do_not_count() -> None:
    record = ExitRecord(code=1, signal=None, at="t1", reason="exited with code 1")
    report = pending_report(ledger_with(record, [NOW - 1000] * 4), POLICY, None, now=NOW)
    assert report is not None
    assert report.restarts_in_window == 0


def test_a_requested_stop_is_not_a_crash() -> None:
    record = ExitRecord(code=0, signal=None, at="t1", reason=Reason.STOPPED)
    assert pending_report(ledger_with(record, []), POLICY, None, now=NOW) is None


def test_a_memory_limit_restart_is_reported_even_with_exit_code_0() -> None:
    record = ExitRecord(
        code=0, signal=None, at="t2", reason="memory limit exceeded (RSS 512.3 MiB > 450 MiB)"
    )
    report = pending_report(ledger_with(record, [NOW]), POLICY, None, now=NOW)
    assert report is not None
    assert "memory limit exceeded" in report.to_html()


def test_an_exit_is_reported_once(tmp_path: Path) -> None:
    marker = ReportMarker(tmp_path / "crash-report.json")
    record = ExitRecord(code=1, signal=None, at="t3", reason="exited with code 1")
    document = ledger_with(record, [])
    assert pending_report(document, POLICY, marker.load(), now=NOW) is not None
    marker.save(record.at)
    assert pending_report(document, POLICY, marker.load(), now=NOW) is None


def test_reason_text_is_escaped_for_telegram_html() -> None:
    record = ExitRecord(code=1, signal=None, at="t4", reason="bad <input> & more")
    report = pending_report(ledger_with(record, []), POLICY, None, now=NOW)
    assert report is not None
    assert "bad &lt;input&gt; &amp; more" in report.to_html()
