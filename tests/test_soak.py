"""The soak in its short mode: two minutes of load and faults, every invariant asserted.

`python -m bench.soak --minutes 2` starts Redis, the fake Telegram, Binance and Gemini servers
and the real bot under `lunara start`, drives 500 users through it while a fault
injector kills the bot and the watchdog, restarts and flushes Redis, corrupts the
ledger and makes every fake misbehave; it exits 0 only when every property held
(no duplicate orders, stops equal their replay, no position stuck under a triggered
stop, residue under one lot step and P&L equal to the exchange's fills for every closed
position, one reply per accepted command, no tracebacks or secrets in the logs, an
honest and fast `lunara status`, bounded RSS, restarts equal kills). Its report is
printed, so a failure shows every figure.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.soak.checks import (
    Verdict,
    caught_by_kill,
    check_exits,
    check_notifications,
    check_pnl,
    check_residue,
)
from bench.soak.faults import FaultLog
from bench.soak.load import Level, Pushed
from bench.soak.run import Collected, Lot

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 280  # two minutes of faults, plus onboarding, draining and the checks


@pytest.mark.slow
def test_soak_two_minutes_of_faults_and_load_keeps_every_invariant() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LUNARA_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUDGET_S,
        stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, f"soak failed:\n{result.stdout}\n{result.stderr[-4000:]}"


def collected(**fields: Any) -> Collected:
    """A run's record holding nothing but `fields`: each check reads only a few."""
    empty = Collected(
        pushed=[], confirmed_below=0, replies=Counter(), polls=[], reply_texts=[], sent=[],
        invoices=[], orders=[], binance_stats={}, lots={}, levels=[], positions=[],
        ledger_orders={}, saved_stops={}, live_stops={}, probes=[], rss=[], faults=FaultLog(),
        fault_problems=[], restarts=None, final_status=None, stop_exit=0, home=Path(),
        secrets={}, users=0, minutes=0.0, run_started=0.0, run_ended=0.0,
        load_window=(0.0, 0.0), recorded_payments=set(), load_errors=[], outbox=[],
    )  # fmt: skip
    return dataclasses.replace(empty, **fields)


def replies_and_kills(answers: list[float], kills: list[tuple[float, str]]) -> Collected:
    """The report's view of one command (message 7) answered at `answers`, with `kills`."""
    sent = [{"reply_to": 7, "text": "Plan: Free", "at": at} for at in answers]
    sent.append({"reply_to": 8, "text": "another command's answer", "at": 99.9})
    faults = FaultLog(injected=[(at, kind, "pid 1") for at, kind in kills])
    return collected(sent=sent, invoices=[], faults=faults)


def test_soak_excuses_only_an_answer_a_sigkill_caught_before_it_was_recorded() -> None:
    command = Pushed(update_id=1, message_id=7, user_id=1, kind="status", text="/status")
    caught = replies_and_kills([100.0, 106.0], [(100.04, "kill_bot")])
    assert caught_by_kill(caught, command) == pytest.approx(0.04)
    # Sent just before the kill, taken in by Telegram a moment after it: the same case.
    late = replies_and_kills([100.0, 106.0], [(99.97, "kill_bot")])
    assert caught_by_kill(late, command) == pytest.approx(-0.03)

    # Answered twice with no SIGKILL close to the first answer: a bug, not excused.
    for answers, kills in [
        ([100.0, 106.0], [(101.0, "kill_bot")]),  # the kill came too late to catch it
        ([100.0, 106.0], [(99.0, "kill_bot")]),  # the kill came 1 s before the first answer
        ([100.0, 100.2], [(100.3, "kill_bot")]),  # both answers came before the kill
        ([100.0, 106.0], [(100.04, "sigterm_bot")]),  # a SIGTERM lets the answer be recorded
        ([100.0, 106.0, 107.0], [(100.04, "kill_bot")]),  # three answers are never one kill
        ([100.0, 106.0], []),
    ]:
        assert caught_by_kill(replies_and_kills(answers, kills), command) is None


def traded(realized_pnl: str, residue: str) -> Collected:
    """One BTCUSDT position as the checks see it: bought 0.001 at 50,000 (commission
    0.000001 BTC), sold 0.00099 at 51,000 (commission 0.05049 USDT), recorded as closed
    with `realized_pnl` and `residue`. Its fills say P&L 0.43951 and residue 0.000009."""
    position = {"id": 1, "user_id": 5, "symbol": "BTCUSDT", "status": "closed",
                "entry_price": "50000", "opened_at": 10.0, "closed_at": 20.0,
                "exit_reason": "stop_loss", "entry_client_order_id": "lu-buy",
                "exit_client_order_id": "lu-sell", "realized_pnl": realized_pnl,
                "residue_quantity": residue}  # fmt: skip
    ledger = {cid: {"position_id": 1, "side": side, "status": "filled", "user_id": 5}
              for cid, side in (("lu-buy", "BUY"), ("lu-sell", "SELL"))}  # fmt: skip
    orders = [
        {"clientOrderId": "lu-buy", "side": "BUY", "fills": [
            {"price": "50000", "qty": "0.001", "commission": "0.000001",
             "commissionAsset": "BTC"}]},
        {"clientOrderId": "lu-sell", "side": "SELL", "fills": [
            {"price": "51000", "qty": "0.00099", "commission": "0.05049",
             "commissionAsset": "USDT"}]},
    ]  # fmt: skip
    lots = {"BTCUSDT": Lot("BTC", "USDT", Decimal("0.00001"))}
    return collected(positions=[position], ledger_orders=ledger, orders=orders, lots=lots)


def test_soak_recomputes_pnl_and_residue_from_the_exchange_fills() -> None:
    assert check_pnl(traded("0.43951", "0.000009")).passed is True
    assert check_residue(traded("0.43951", "0.000009")).passed is True

    off_by_more_than_tolerance = check_pnl(traded("0.43951002", "0.000009"))
    assert off_by_more_than_tolerance.passed is False
    assert "largest difference 0.00000002" in off_by_more_than_tolerance.figures[0]
    # The base commission counted twice (once in the quantity, once valued in quote).
    assert check_pnl(traded("0.38951", "0.000009")).passed is False

    over_a_step = check_residue(traded("0.43951", "0.000019"))
    assert over_a_step.passed is False
    assert "largest residue 1.900 lot steps" in over_a_step.figures[0]
    assert check_residue(traded("0.43951", "0.000008")).passed is False


def test_soak_counts_a_position_open_under_a_stop_the_last_price_triggers_as_stuck() -> None:
    prices = [50000, 49000, 48400]  # the stop sits 3 % under the entry: 48,500
    levels = [Level(10.0 + 4 * i, 10.1 + 4 * i, {"BTCUSDT": Decimal(p)})
              for i, p in enumerate(prices)]  # fmt: skip
    position = {"id": 1, "symbol": "BTCUSDT", "entry_price": "50000", "opened_at": 10.5,
                "status": "open", "closed_at": None, "exit_reason": None}  # fmt: skip
    data = collected(levels=levels, positions=[position], ledger_orders={},
                           run_ended=levels[-1].set_at + 30)  # fmt: skip
    stuck = check_exits(data)
    assert stuck.passed is False
    assert "while open: 0 exited, 1 stuck" in stuck.figures[0]

    position.update(status="closed", closed_at=19.0, exit_reason="stop_loss")
    assert check_exits(data).passed is True
    # Above its stop at the last level, the earlier fall through it is shown, not judged.
    position.update(status="open", closed_at=None)
    levels.append(Level(22.0, 22.1, {"BTCUSDT": Decimal(49000)}))
    recovered = check_exits(data)
    assert recovered.passed is True
    assert recovered.figures[1].endswith(": 1")


def test_soak_tells_notifications_delivered_from_produced_and_excuses_only_a_caught_copy() -> None:
    def row(chat: int, text: str, state: str = "sent", priority: int = 1) -> dict[str, Any]:
        return {"chat_id": chat, "text": text, "state": state, "priority": priority}

    outbox = [row(1, "Stop loss hit"), row(2, "Stop loss hit"), row(3, "Maintenance", "blocked"),
              row(4, "Plan: Free", priority=0), row(5, "queued notice", "queued")]  # fmt: skip
    sent = [{"chat_id": 1, "text": "Stop loss hit", "reply_to": None, "at": 100.0},
            {"chat_id": 2, "text": "Stop loss hit", "reply_to": None, "at": 100.1},
            {"chat_id": 2, "text": "Stop loss hit", "reply_to": None, "at": 107.0},
            {"chat_id": 4, "text": "Plan: Free", "reply_to": 9, "at": 100.2}]  # fmt: skip

    def verdict(kills: list[float], extra: list[dict[str, Any]] = []) -> Verdict:  # noqa: B006
        faults = FaultLog(injected=[(at, "kill_bot", "pid 1") for at in kills])
        return check_notifications(collected(outbox=outbox, sent=sent + extra, faults=faults))

    caught = verdict([100.3])  # chat 2's first copy came 0.2 s before a kill
    assert caught.passed is True
    assert caught.figures[0] == ("produced 4 (not answers), delivered 2; marked sent but never "
                                 "delivered: 0; delivered again: 0 (+1 a SIGKILL caught between "
                                 "the send and its record)")  # fmt: skip
    assert "still queued 1, to users who blocked the bot 1" in caught.figures[1]
    assert verdict([]).passed is False  # the same copy with no kill near it
    stray = verdict([100.3], [{"chat_id": 6, "text": "sent around the outbox", "reply_to": None}])
    assert stray.passed is False
    assert "sent without an outbox row: 1" in stray.figures[2]
