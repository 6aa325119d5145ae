"""The soak's invariants, each a Verdict with its figures, computed from what a run
collected (`bench.soak.run.Collected`) and nothing else, so each can be tested on a
hand-built record."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench.soak.faults import BOT_FAULTS, SLOPE_MIN_RUN_MIN
from bench.soak.load import FEE_RATE, LEVEL_HOLD_S, PARAMS, Level, Pushed
from bench.soak.run import TICK_SECONDS, Collected, Lot
from lunara.trading.trailing import StopState, advance, initial_state, is_triggered

STATUS_BUDGET_S = 1.0
STATUS_GRACE_S = 1.5  # probes this close to a process fault are not judged
RSS_TARGET_MIB = 200.0
SLOPE_TARGET_MIB_PER_10MIN = 1.0
SLOPE_WARMUP_S = 30.0  # a bot's first seconds (imports, caches) are not a leak
SLOPE_WARMUP_LONG_S = 60.0
# A command answered just before a SIGKILL, its answer not yet recorded, is answered again
# after the restart; only an answer this close to the kill can have been caught so.
CAUGHT_WINDOW_S = 0.5
POLL_GAP_LIMIT_S = 20.0  # a live bot never goes this long without polling Telegram
PNL_TOLERANCE = Decimal("1e-8")  # quote (and base) a recorded figure may differ from the fills'
TROUBLE = re.compile(r"Traceback|unexpected", re.IGNORECASE)


@dataclass
class Verdict:
    name: str
    passed: bool | None  # None: measured, not judged in this run
    figures: list[str]


def check_orders(data: Collected) -> Verdict:
    ids = [str(o["clientOrderId"]) for o in data.orders]
    by_id = [i for i, n in Counter(ids).items() if n > 1]
    owner = {cid: row["user_id"] for cid, row in data.ledger_orders.items()}
    exchange = Counter(
        (owner.get(str(o["clientOrderId"])), o["symbol"], o["side"], Decimal(o["executedQty"]))
        for o in data.orders
    )
    # Each exchange order must be a filled order of some position. A position holds what
    # its buy executed less a commission in the base asset, and an exit can be partial,
    # so orders are matched by the executed quantity their ledger row records, and the
    # position by its id.
    positions = {position["id"]: position for position in data.positions}
    accounted: Counter[tuple[Any, ...]] = Counter()
    for row in data.ledger_orders.values():
        position = positions.get(row["position_id"])
        if row["status"] != "filled" or position is None:
            continue
        key = (position["user_id"], position["symbol"], row["side"], Decimal(row["quantity"]))
        accounted[key] += 1
    extra = exchange - accounted
    buys = Counter(owner.get(str(o["clientOrderId"])) for o in data.orders if o["side"] == "BUY")
    commands = Counter(p.user_id for p in data.pushed if p.kind == "buy")
    too_many = {u: n for u, n in buys.items() if u is None or n > commands[u]}
    unsettled = [
        c
        for c, row in data.ledger_orders.items()
        if row["status"] in ("pending", "sent", "unknown")
    ]
    sells = sum(1 for o in data.orders if o["side"] == "SELL")
    figures = [
        f"{len(ids)} orders at the exchange ({len(ids) - sells} buys, {sells} sells), "
        f"{data.binance_stats.get('duplicate_attempts', 0)} reused client ids refused by it",
        f"duplicates by client order id: {len(by_id)}",
        f"duplicates by content (exchange orders no position accounts for): "
        f"{sum(extra.values())} {dict(list(extra.items())[:5]) if extra else ''}",
        f"users with more buys than /buy commands: {len(too_many)}",
        f"ledger orders left unsettled after the stop: {len(unsettled)}",
    ]
    passed = not by_id and not extra and not too_many
    return Verdict("zero duplicate orders", passed, figures)


def entry_level(entry: float, opened_at: float, symbol: str, levels: Sequence[Level]) -> int:
    """The index of the level a position was filled at: the last one sent before it
    opened or, if a level changed while the order filled, the one whose price it got."""
    start = 0
    for index, level in enumerate(levels):
        if level.sent_at <= opened_at:
            start = index
    for index in range(start, -1, -1):
        if float(levels[index].prices[symbol]) == entry or levels[index].set_at <= opened_at:
            return index
    return start


def replayed_stops(
    entry: float, opened_at: float, symbol: str, levels: Sequence[Level]
) -> list[tuple[int, StopState]]:
    """Replay: the stop after each level, from the one the position was filled at on."""
    state = initial_state(entry, PARAMS, 0.0)
    replayed = []
    for index in range(entry_level(entry, opened_at, symbol, levels), len(levels)):
        state = advance(state, float(levels[index].prices[symbol]), PARAMS, 0.0, FEE_RATE)
        replayed.append((index, state))
    return replayed


def expected_stop(
    entry: float, opened_at: float, symbol: str, levels: Sequence[Level]
) -> StopState:
    """The stop a position reaches through every level it lived through."""
    replayed = replayed_stops(entry, opened_at, symbol, levels)
    return replayed[-1][1] if replayed else initial_state(entry, PARAMS, 0.0)


def check_stops(data: Collected) -> Verdict:
    open_positions = [p for p in data.positions if p["status"] == "open"]
    wrong = []
    activated = 0
    for position in open_positions:
        entry = float(Decimal(position["entry_price"]))
        expected = expected_stop(
            entry, float(position["opened_at"]), position["symbol"], data.levels
        )
        saved = data.saved_stops.get(int(position["id"]))
        if saved is None:
            wrong.append(f"position {position['id']}: no saved stop")
            continue
        got = (float(saved["peak_price"]), float(saved["stop_price"]), bool(saved["activated"]))
        activated += got[2]
        if float(saved["entry_price"]) != entry or got != expected.levels():
            wrong.append(f"position {position['id']} {position['symbol']} entry {entry}: "
                         f"stored {got}, replay {expected.levels()}")  # fmt: skip
        live = data.live_stops.get(int(position["id"]))
        if live is not None and live.levels() != got:
            wrong.append(f"position {position['id']}: Redis {live.levels()} != SQLite {got}")
    closed = [p for p in data.positions if p["status"] == "closed"]
    reasons = Counter(str(p.get("exit_reason")) for p in closed)
    figures = [
        f"{len(data.levels)} price levels; {len(open_positions)} open positions checked "
        f"({activated} with an activated trailing stop); {len(closed)} closed "
        f"({', '.join(f'{n} {r}' for r, n in reasons.most_common())})",
        f"stops differing from the replay: {len(wrong)}",
        *[f"    {line}" for line in wrong[:10]],
    ]
    return Verdict("trailing stops equal the replay", not wrong, figures)


def first_trigger(position: dict[str, Any], levels: Sequence[Level]) -> int | None:
    """The first level at which the replayed stop of `position` is triggered (advanced by
    the level's price, then compared with it, as each tick does) while it was open."""
    entry = float(Decimal(position["entry_price"]))
    closed_at = position["closed_at"]
    replayed = replayed_stops(entry, float(position["opened_at"]), position["symbol"], levels)
    for index, state in replayed:
        if closed_at is not None and levels[index].sent_at > float(closed_at):
            break
        if is_triggered(state, float(levels[index].prices[position["symbol"]])):
            return index
    return None


def check_exits(data: Collected) -> Verdict:
    """0 stuck: no position is left open under a stop that its market has triggered.

    What the end of the run can prove: the last price level is held LEVEL_HOLD_S with a
    live bot, then through the drain until the clean stop, with no fault left (the last
    is injected 20 s before the end of the load), so every tick in that time sees it. A
    position still open at the stop whose replayed stop (the pure rules over the levels
    it lived through; check_stops holds the bot's stored stop to the same replay) is at
    or above that last price had each of those ticks to sell it and none did: it is
    stuck. Judged: stuck == 0, with the last level held at least LEVEL_HOLD_S.

    A stop triggered at an earlier level and not exited before the price came back above
    it is counted, not judged: a fault at that level (a clock skew refusing every signed
    request for the whole level, an order stalled past the timeout holding the tick) can
    rightly keep an exit from going through; the position stays under its stop, and the
    next fall through it sells.
    """
    final = data.levels[-1]
    held_s = data.run_ended - final.set_at
    stuck: list[str] = []
    missed: list[str] = []
    exited = 0
    delays: list[float] = []
    for position in data.positions:
        triggered = first_trigger(position, data.levels)
        if triggered is None:
            continue
        symbol = position["symbol"]
        if position["status"] == "closed":
            exited += 1
            if position["closed_at"] is not None and position["exit_reason"] != "manual":
                delays.append(float(position["closed_at"]) - data.levels[triggered].set_at)
            continue
        stop = expected_stop(float(Decimal(position["entry_price"])),
                             float(position["opened_at"]), symbol, data.levels)  # fmt: skip
        attempts = Counter(
            str(row["status"])
            for row in data.ledger_orders.values()
            if row["position_id"] == position["id"] and row["side"] == "SELL"
        )
        line = (f"position {position['id']} {symbol}: stop {stop.stop_price:.2f} first hit at "
                f"level {triggered} ({data.levels[triggered].prices[symbol]}), last price "
                f"{final.prices[symbol]}; exit orders {dict(attempts) or 'none'}")  # fmt: skip
        if is_triggered(stop, float(final.prices[symbol])):
            stuck.append(line)
        else:
            missed.append(line)
    hit = exited + len(stuck) + len(missed)
    delays.sort()
    figures = [
        f"{hit} positions hit their stop in the replay while open: {exited} exited, "
        f"{len(stuck)} stuck "
        f"(open under a stop the last price triggers; that price held {held_s:.0f} s, "
        f"{held_s / float(TICK_SECONDS):.0f} ticks, before the stop)",
        f"open with a stop hit at an earlier level, the price now above it (not judged): "
        f"{len(missed)}",
        "stop exits after the level that first triggered them: "
        + (f"median {delays[len(delays) // 2]:.1f} s, max {delays[-1]:.1f} s" if delays
           else "none"),
        *[f"    stuck: {line}" for line in stuck[:10]],
        *[f"    earlier: {line}" for line in missed[:5]],
    ]  # fmt: skip
    return Verdict("0 stuck: every stop the market triggered was exited",
                   not stuck and held_s >= LEVEL_HOLD_S, figures)  # fmt: skip


@dataclass
class Flows:
    """What a position's fills at the exchange moved on the account: quote (a commission
    paid in it included), base (a commission taken from it included), and commissions
    paid in any other asset (BNB)."""

    quote: Decimal = Decimal(0)
    base: Decimal = Decimal(0)
    other_fees: dict[str, Decimal] = field(default_factory=dict)
    fills: int = 0


def exchange_orders_by_position(data: Collected) -> dict[int, list[dict[str, Any]]]:
    """The exchange's orders of each position, found by the client ids of its ledger
    orders (a client id names its trader, so it is unique across the run)."""
    position_of: dict[str, int] = {}
    for client_id, row in data.ledger_orders.items():
        if row["position_id"] is not None:
            position_of[client_id] = int(row["position_id"])
    for position in data.positions:
        for column in ("entry_client_order_id", "exit_client_order_id"):
            if position[column]:
                position_of.setdefault(str(position[column]), int(position["id"]))
    found: dict[int, list[dict[str, Any]]] = {}
    for order in data.orders:
        position_id = position_of.get(str(order["clientOrderId"]))
        if position_id is not None:
            found.setdefault(position_id, []).append(order)
    return found


def fill_flows(orders: Sequence[dict[str, Any]], lot: Lot) -> Flows:
    """Sum the exchange's fills of some orders, each at its own price and commission."""
    flows = Flows()
    for order in orders:
        bought = 1 if order["side"] == "BUY" else -1
        for fill in order.get("fills") or []:
            quantity, price = Decimal(fill["qty"]), Decimal(fill["price"])
            fee, asset = Decimal(fill["commission"]), str(fill["commissionAsset"])
            flows.base += bought * quantity
            flows.quote -= bought * quantity * price
            if asset == lot.quote:
                flows.quote -= fee
            elif asset == lot.base:
                flows.base -= fee
            else:
                flows.other_fees[asset] = flows.other_fees.get(asset, Decimal(0)) + fee
            flows.fills += 1
    return flows


def check_residue(data: Collected) -> Verdict:
    """The base left behind by each closed position is at most one LOT_SIZE step.

    A position holds what its buy received (the commission taken in the base asset is
    not there to sell), and an exit sells whole steps only, so less than one step may
    stay on the account as dust; more means a position was not sold out. Judged from
    both sides: the residue the bot recorded when it closed the position, and the base
    the exchange's fills of that position left (bought, less the commission taken from
    it, less sold). The step is the symbol's LOT_SIZE in the fake's exchangeInfo. Out
    of [0, step] on either side fails, as does a recorded residue that differs from the
    fills' by more than PNL_TOLERANCE of the base.
    """
    exchange = exchange_orders_by_position(data)
    closed = [p for p in data.positions if p["status"] == "closed"]
    worst = Decimal(0)
    bad: list[str] = []
    differ: list[str] = []
    for position in closed:
        lot = data.lots[position["symbol"]]
        left = fill_flows(exchange.get(int(position["id"]), []), lot).base
        label = f"position {position['id']} {position['symbol']}"
        recorded = position["residue_quantity"]
        if recorded is None:
            bad.append(f"{label}: closed with no residue recorded")
            continue
        for source, residue in (("recorded", Decimal(recorded)), ("fills", left)):
            worst = max(worst, abs(residue) / lot.step)
            if not 0 <= residue <= lot.step:
                bad.append(f"{label}: {source} residue {residue} "
                           f"({residue / lot.step:.2f} steps of {lot.step})")  # fmt: skip
        if abs(Decimal(recorded) - left) > PNL_TOLERANCE:
            differ.append(f"{label}: recorded {recorded}, fills {left}")
    figures = [
        f"{len(closed)} closed positions; largest residue {worst:.3f} lot steps (limit 1)",
        f"outside [0, 1 step]: {len(bad)}; recorded residue not the fills': {len(differ)}",
        *[f"    {line}" for line in bad[:8]],
        *[f"    {line}" for line in differ[:5]],
    ]
    return Verdict("base residue per closed position <= one lot step",
                   not bad and not differ, figures)  # fmt: skip


def check_pnl(data: Collected) -> Verdict:
    """Every closed position's realised P&L equals what the exchange's fills of it say.

    Recomputed from the fake exchange's own record of the position's orders (each fill's
    price, quantity and commission), not from the bot's: quote received on the sell
    fills minus quote paid on the buy fills, minus every commission paid in the quote
    asset. A commission taken in the base asset needs no valuing: the base it took was
    never there to sell, so the quote the sells brought is already short of it. One paid
    in a third asset (BNB) moves no quote; the bot records it per asset, and the count
    is shown. Equal within PNL_TOLERANCE of the quote; a position closed with no P&L
    recorded, or with no fills at the exchange, is a mismatch.
    """
    exchange = exchange_orders_by_position(data)
    closed = [p for p in data.positions if p["status"] == "closed"]
    largest = Decimal(0)
    mismatched: list[str] = []
    other_fees = 0
    total = Decimal(0)
    for position in closed:
        flows = fill_flows(exchange.get(int(position["id"]), []), data.lots[position["symbol"]])
        other_fees += bool(flows.other_fees)
        label = f"position {position['id']} {position['symbol']}"
        recorded = position["realized_pnl"]
        if recorded is None or flows.fills == 0:
            mismatched.append(f"{label}: P&L {recorded}, {flows.fills} fills at the exchange")
            continue
        difference = abs(Decimal(recorded) - flows.quote)
        largest = max(largest, difference)
        total += flows.quote
        if difference > PNL_TOLERANCE:
            mismatched.append(f"{label}: recorded {recorded}, fills {flows.quote}")
    figures = [
        f"{len(closed)} closed positions, P&L from the fills {total:+.8f} in all; mismatches "
        f"over {PNL_TOLERANCE:f}: {len(mismatched)}; largest difference {largest:f}",
        f"commissions paid in a third asset (outside the quote flows): {other_fees} positions",
        *[f"    {line}" for line in mismatched[:8]],
    ]
    return Verdict("realised P&L equals the fills", not mismatched, figures)


def check_replies(data: Collected) -> Verdict:
    accepted = [p for p in data.pushed if p.update_id < data.confirmed_below]
    none = [p for p in accepted if data.replies[p.message_id] == 0]
    twice = [p for p in accepted if data.replies[p.message_id] > 1]
    caught = {p.message_id: gap for p in twice if (gap := caught_by_kill(data, p)) is not None}
    many = [p for p in twice if p.message_id not in caught]
    unconfirmed = len(data.pushed) - len(accepted)
    paid = [p for p in accepted if p.kind == "payment"]
    unrecorded = [p for p in paid if p.text not in data.recorded_payments]
    gaps = polling_gaps(data)
    figures = [
        f"{len(data.pushed)} commands and payments pushed, {len(accepted)} accepted, "
        f"{unconfirmed} never confirmed",
        f"accepted with no reply: {len(none)}; with more than one: {len(many)}",
        f"answered again because a SIGKILL fell between an answer's send and its record: "
        f"{len(caught)}"
        + "".join(
            f" (first answer {gap * 1000:+.0f} ms before the kill)" for gap in caught.values()
        ),
        f"payments accepted: {len(paid)}, recorded: {len(paid) - len(unrecorded)}",
        f"a live bot went more than {POLL_GAP_LIMIT_S:g} s without polling: {len(gaps)} times",
        *[f"    bot pid {pid}: no getUpdates for {gap:.0f} s" for pid, gap in gaps[:5]],
        *[f"    no reply: {p.kind} {p.text[:40]!r} (update {p.update_id})" for p in none[:5]],
        *[f"    not recorded: payment {p.text} (update {p.update_id})" for p in unrecorded[:5]],
        *[line for p in many[:5] for line in describe_replies(data, p)],
    ]
    passed = not none and not many and not unconfirmed and not unrecorded and not gaps
    return Verdict("exactly one reply per accepted command and payment; payments recorded",
                   passed, figures)  # fmt: skip


ANSWER_PRIORITY = 0  # lunara.storage.outbox.Priority.ANSWER


def check_notifications(data: Collected) -> Verdict:
    """Notifications delivered vs produced: each outbox row other than an answer, by
    (chat, text), against the messages Telegram took for that chat with that text."""
    produced: Counter[tuple[int, str]] = Counter()
    marked_sent: Counter[tuple[int, str]] = Counter()
    states: Counter[str] = Counter()
    written = set()
    for row in data.outbox:
        key = (int(row["chat_id"]), str(row["text"]))
        written.add(key)
        if row["text"] is None or int(row["priority"]) == ANSWER_PRIORITY:
            continue
        produced[key] += 1
        states[str(row["state"])] += 1
        if row["state"] == "sent":
            marked_sent[key] += 1
    delivered: dict[tuple[int, str], list[float]] = {}
    strays = []
    for message in data.sent:
        key = (int(message["chat_id"]), str(message.get("text", "")))
        if key in produced:
            delivered.setdefault(key, []).append(float(message.get("at") or 0.0))
        elif message.get("reply_to") is None and key not in written:
            strays.append(message)
    kills = [at for at, kind, _ in data.faults.injected if kind == "kill_bot"]
    once = lost = caught = uncaught = 0
    for key, sent_rows in marked_sent.items():
        moments = sorted(delivered.get(key, []))
        once += min(len(moments), sent_rows)
        lost += max(sent_rows - len(moments), 0)
        for earlier, extra in zip(moments, moments[sent_rows:], strict=False):
            if any(abs(earlier - at) <= CAUGHT_WINDOW_S and extra > at for at in kills):
                caught += 1
            else:
                uncaught += 1
    figures = [
        f"produced {sum(produced.values())} (not answers), delivered {once}; marked sent but "
        f"never delivered: {lost}; delivered again: {uncaught} (+{caught} a SIGKILL caught "
        "between the send and its record)",
        f"not delivered: still queued {states['queued']}, to users who blocked the bot "
        f"{states['blocked']}, refused by Telegram {states['failed']}",
        f"sent without an outbox row: {len(strays)}",
        *[f"    stray to {m['chat_id']}: {str(m.get('text', ''))[:50]!r}" for m in strays[:5]],
    ]
    return Verdict("notifications delivered vs produced", not lost and not uncaught and not strays,
                   figures)  # fmt: skip


def answers_to(data: Collected, command: Pushed) -> list[dict[str, Any]]:
    """The messages and invoices threaded to `command`, in the order Telegram got them."""
    answers = [*data.sent, *({**i, "text": f"invoice {i.get('payload')}"} for i in data.invoices)]
    threaded = [a for a in answers if a.get("reply_to") == command.message_id]
    return sorted(threaded, key=lambda a: float(a.get("at") or 0.0))


def caught_by_kill(data: Collected, command: Pushed) -> float | None:
    """How long before a bot SIGKILL (negative: after it) the first of exactly two
    answers reached Telegram, if that was within CAUGHT_WINDOW_S and the second answer
    came after the kill.

    That is the one duplicate no bot can avoid: the Bot API has no idempotent send, so
    an answer sent but not yet recorded when the process dies is sent again by the next
    run's replay (the inbox chooses answering twice over never answering). The fake may
    take in an answer the bot wrote just before it died a little after the kill. Anything
    else answered twice is a bug.
    """
    answers = answers_to(data, command)
    if len(answers) != 2:
        return None
    first, second = (float(a.get("at") or 0.0) for a in answers)
    for at, kind, _ in data.faults.injected:
        if kind == "kill_bot" and abs(at - first) <= CAUGHT_WINDOW_S and second > at:
            return at - first
    return None


def describe_replies(data: Collected, command: Pushed) -> list[str]:
    """A command answered more than once: when each answer came, after which fault."""
    lines = [f"    {data.replies[command.message_id]} replies: {command.kind} {command.text[:40]!r} "
             f"(update {command.update_id})"]  # fmt: skip
    for answer in answers_to(data, command):
        at = float(answer.get("at") or 0.0)
        text = str(answer.get("text", "")).replace("\n", " ")[:60]
        lines.append(f"      {clock(at)} ({after_fault(data, at)}): {text!r}")
    return lines


def clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def after_fault(data: Collected, at: float) -> str:
    """Which faults came in the 30 s before `at`, the latest first."""
    recent = [(t, kind) for t, kind, _ in data.faults.injected if at - 30 <= t <= at]
    if not recent:
        return "no fault in the 30 s before"
    return ", ".join(f"{at - t:.1f} s after {kind}" for t, kind in reversed(recent[-3:]))


def polling_gaps(data: Collected) -> list[tuple[int, float]]:
    """(bot pid, seconds) for each stretch one live bot spent without polling Telegram.

    The fake and this process share CLOCK_MONOTONIC, so its poll times compare with the
    RSS samples, which say which bot pid was alive when.
    """
    polls = sorted((float(p["started"]), float(p["ended"] or p["started"])) for p in data.polls)
    end_of_run = data.rss[-1][0] if data.rss else 0.0
    quiet = [(ended, started) for (_, ended), (started, _) in itertools.pairwise(polls)]
    if polls:
        quiet.append((max(ended for _, ended in polls), end_of_run))
    gaps = []
    for begin, end in quiet:
        if end - begin <= POLL_GAP_LIMIT_S:
            continue
        lives: dict[int, list[float]] = {}
        for t, pid, _ in data.rss:
            if begin <= t <= end:
                lives.setdefault(pid, []).append(t)
        for pid, times in lives.items():
            if times[-1] - times[0] > POLL_GAP_LIMIT_S:
                gaps.append((pid, times[-1] - times[0]))
    return gaps


def check_logs(data: Collected) -> tuple[Verdict, Verdict]:
    files = [p for p in (data.home / "logs").rglob("*") if p.is_file()]
    files += [data.home / name for name in ("audit.jsonl", "ledger.json")]
    trouble: list[str] = []
    leaks: Counter[str] = Counter()
    for path in files:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            if TROUBLE.search(line):
                trouble.append(f"{path.name}: {line.strip()[:150]}")
        for name, secret in data.secrets.items():
            if secret in text:
                leaks[f"{name} in {path.name}"] += 1
    replies = "\n".join(data.reply_texts)
    for name, secret in data.secrets.items():
        if secret in replies:
            leaks[f"{name} in replies"] += 1
    names = Counter(line.split(":", 1)[0] for line in trouble)
    exceptions = Verdict(
        "zero unhandled exceptions in the logs",
        not trouble,
        [f"Traceback/unexpected lines: {len(trouble)} ({dict(names)})",
         *[f"    {line}" for line in trouble[:8]]],
    )  # fmt: skip
    secrets = Verdict(
        "zero secrets in logs, replies, audit, ledger",
        not leaks,
        [f"{len(data.secrets)} secrets looked for in {len(files)} files and "
         f"{len(data.reply_texts)} replies; found: {sum(leaks.values())}",
         *[f"    {what}" for what in list(leaks)[:8]]],
    )  # fmt: skip
    return exceptions, secrets


def check_status(data: Collected) -> Verdict:
    slow = [p for p in data.probes if p.latency_s > STATUS_BUDGET_S or p.code is None]
    judged = wrong = 0
    examples = []
    for probe in data.probes:
        if any(abs(probe.at - t) < STATUS_GRACE_S for t in data.faults.process_times):
            continue
        if probe.truth_before != probe.truth_after or probe.code is None:
            continue  # a real transition during the probe
        judged += 1
        truth = probe.truth_after
        claims_running = probe.pid is not None and probe.state in ("running", "starting",
                                                                   "orphaned", "stopping")  # fmt: skip
        right = claims_running == bool(truth) and (probe.pid in truth if claims_running else True)
        if not right:
            wrong += 1
            examples.append(f"    {time.strftime('%H:%M:%S', time.localtime(probe.at))} "
                            f"state {probe.state} pid {probe.pid}, live bots {sorted(truth)}")  # fmt: skip
    latencies = sorted(p.latency_s for p in data.probes) or [0.0]
    figures = [
        f"{len(data.probes)} probes, {judged} judged; latency median "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
        f"over {STATUS_BUDGET_S:g} s: {len(slow)}; wrong about the bot: {wrong}",
        *examples[:5],
        *[f"    slow: {clock(p.at)} {p.latency_s * 1000:.0f} ms, exit {p.code} "
          f"({after_fault(data, p.at)})" for p in slow[:5]],
    ]  # fmt: skip
    return Verdict("status within 1 s and never wrong", not slow and wrong == 0, figures)


def pooled_slope_mib_per_10min(groups: Sequence[Sequence[tuple[float, float]]]) -> float | None:
    """Least-squares slope shared by several series, each around its own mean.

    Every bot life has its own level (a restarted bot starts small); pooling the
    within-life deviations measures how RSS grows while a bot lives, not the restarts.
    """
    covariance = spread = 0.0
    count = 0
    for points in groups:
        if len(points) < 2:
            continue
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        covariance += sum((x - mean_x) * (y - mean_y) for x, y in points)
        spread += sum((x - mean_x) ** 2 for x, _ in points)
        count += len(points)
    if count < 10 or spread == 0:
        return None
    return covariance / spread * 600.0


def check_rss(data: Collected) -> Verdict:
    if not data.rss:
        return Verdict("bot RSS", False, ["no RSS samples"])
    peak = max(m for _, _, m in data.rss)
    judged_run = data.minutes >= SLOPE_MIN_RUN_MIN
    warmup = SLOPE_WARMUP_LONG_S if judged_run else SLOPE_WARMUP_S
    began, ended = data.load_window
    half = (began + ended) / 2
    born: dict[int, float] = {}
    for t, pid, _ in data.rss:
        born.setdefault(pid, t)
    lives: dict[int, list[tuple[float, float]]] = {}
    for t, pid, mib in data.rss:
        if half <= t <= ended and t >= born[pid] + warmup:
            lives.setdefault(pid, []).append((t, mib))
    slope = pooled_slope_mib_per_10min(list(lives.values()))
    samples = sum(len(points) for points in lives.values())
    judged = judged_run and slope is not None
    slope_ok = slope is not None and slope <= SLOPE_TARGET_MIB_PER_10MIN
    shown = "n/a" if slope is None else f"{slope:+.2f}"
    verdict = (
        "judged"
        if judged
        else f"not judged: needs a run of >= {SLOPE_MIN_RUN_MIN:.0f} min"
        if not judged_run
        else "NOT JUDGED: too few samples"
    )
    figures = [
        f"peak {peak:.1f} MiB (target <= {RSS_TARGET_MIB:.0f}); final {data.rss[-1][2]:.1f} MiB; "
        f"{len(born)} bot processes sampled",
        f"slope over the last half of the load ({samples} samples from {len(lives)} bot "
        f"lives, each after its first {warmup:.0f} s, pooled): {shown} MiB per 10 min (target <= "
        f"{SLOPE_TARGET_MIB_PER_10MIN:g}; {verdict})",
    ]
    passed = peak <= RSS_TARGET_MIB and (slope_ok if judged_run else True)
    return Verdict("bot RSS", passed, figures)


def check_restarts(data: Collected) -> Verdict:
    kills = data.faults.count(*BOT_FAULTS)
    watchdog_kills = data.faults.count("kill_watchdog")
    figures = [
        f"watchdog restarts {data.restarts}; bot SIGKILLs + SIGTERMs injected {kills} "
        f"(watchdog SIGKILLs {watchdog_kills}: adopted, not counted)",
        "faults: " + ", ".join(f"{k} {n}" for k, n in
                               sorted(Counter(k for _, k, _ in data.faults.injected).items())),
        *[f"    problem: {p}" for p in data.fault_problems[:8]],
    ]  # fmt: skip
    return Verdict("restarts counted equal kills injected",
                   data.restarts == kills and not data.fault_problems, figures)  # fmt: skip
