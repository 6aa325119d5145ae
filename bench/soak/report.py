"""The soak's report: every verdict with PASS, FAIL or INFO and its figures."""

from __future__ import annotations

from pathlib import Path

from bench.soak.checks import (
    Verdict,
    check_exits,
    check_logs,
    check_notifications,
    check_orders,
    check_pnl,
    check_replies,
    check_residue,
    check_restarts,
    check_rss,
    check_status,
    check_stops,
)
from bench.soak.run import TICK_SECONDS, Collected


def report(data: Collected) -> bool:
    verdicts = [check_orders(data), check_stops(data), check_exits(data), check_residue(data),
                check_pnl(data), check_replies(data), check_notifications(data),
                *check_logs(data), check_status(data),
                check_rss(data), check_restarts(data)]  # fmt: skip
    verdicts.append(Verdict("clean lunara stop", data.stop_exit == 0,
                            [f"exit {data.stop_exit}"]))  # fmt: skip
    print(f"soak: {data.minutes:g} min of faults and load, {data.users} users, live mode on the "
          f"fake Binance, tick {TICK_SECONDS} s, Redis + Telegram + Gemini fakes")  # fmt: skip
    if data.load_errors:
        print(f"  load generator errors: {len(data.load_errors)} (first: {data.load_errors[0]})")
    for verdict in verdicts:
        mark = {True: "PASS", False: "FAIL", None: "INFO"}[verdict.passed]
        print(f"  [{mark}] {verdict.name}")
        for line in verdict.figures:
            print(f"         {line}")
    failed = [v.name for v in verdicts if v.passed is False]
    print(f"  {'FAIL: ' + '; '.join(failed) if failed else 'PASS'}")
    return not failed


def write_rss(data: Collected, path: Path) -> None:
    """The RSS samples as CSV (seconds since the load began, bot pid, MiB), for a closer look."""
    began, _ = data.load_window
    lines = [f"{t - began:.1f},{pid},{mib:.2f}" for t, pid, mib in data.rss]
    path.write_text("seconds,pid,mib\n" + "\n".join(lines) + "\n", encoding="utf-8")
