"""Soak: the real bot under the real watchdog, 500 users and a fault injector, then invariants.

    .venv/bin/python -m bench.soak [--minutes 30] [--seed N] [--users 500] [--rate 6] [--keep]

Starts a private redis-server (AOF on, so a restart keeps its data) and the fake
Telegram, Binance and Gemini servers as separate processes (127.0.0.1 only), then
`lunara start` runs the real bot (`python -m lunara`, live mode on the fake Binance,
0.5 s tick) under the real watchdog. Users onboard through Telegram (/start, /setkeys,
/settings with fixed trailing-stop parameters; in runs under 5 minutes only the first
40, the rest are seeded in the database first, because onboarding runs at ~10
commands/s); then a steady stream of commands arrives (buys, sells, settings changes,
analyses, /positions, /balance, payments, garbage) while prices move as a staircase
(each level held `LEVEL_HOLD_S`, so the live bot observes every level even around
kills) that makes trailing stops activate and trigger.

At seeded random times the fault injector SIGKILLs the bot (and the next bot's first
Telegram call, getMe, gets a 502), SIGKILLs the watchdog (`lunara start` then adopts the
bot), SIGTERMs the bot (getMe again 502), restarts Redis, flushes Redis once, corrupts
the ledger file once; makes the fake Telegram answer 409, 429 with retry_after, 5xx, and
stall getUpdates past the client timeout; makes the fake exchange answer 429 with
Retry-After, -1021 (clock skew), stall an order past the bot's timeout, and execute an
order but drop the reply; makes the fake Gemini answer 429 and 503.
Process faults are spaced so that every price level is observed by a live bot; the
flush never lands within 10 s after a bot kill, and no bot kill follows it within 30 s
(a bot that the flush left deaf to Telegram must show as a polling gap).

At the end (after a clean `lunara stop`) it prints, with PASS/FAIL, and exits 1 on any
FAIL:

- duplicate orders at the exchange, by client order id and by content (an exchange
  order the ledger's positions do not account for; more BUYs than /buy commands);
- every open position's trailing stop equals the pure `trailing.replay` of the price
  levels it lived through;
- 0 stuck: no position is left open under a replayed stop that the last price level
  (held with a live bot, fault-free, until the stop) triggers; stops triggered at an
  earlier level whose price came back above them are counted, not judged;
- every closed position left at most one LOT_SIZE step of its base asset (the step from
  the fake's exchangeInfo), as recorded and as the exchange's fills of it say;
- every closed position's realised P&L equals the exchange's fills of it (quote from the
  sells less quote paid for the buys, less commissions paid in quote) within 1e-8;
- every accepted Telegram command (its update confirmed by the poller) got exactly one
  threaded reply (message or invoice), and every accepted payment (its service message)
  is recorded and was thanked exactly once; the one duplicate excused (and counted) is
  an answer a SIGKILL caught between its send and its record: it reached Telegram within
  `CAUGHT_WINDOW_S` of the kill and is sent again after the restart, because the Bot
  API has no idempotent send;
- notifications delivered vs produced: every message the bot wrote to its outbox other
  than an answer (entries, exits and stops, broadcasts, reports to the admins) and marked
  sent reached Telegram exactly once (a second copy excused, and counted, as for answers:
  the first within `CAUGHT_WINDOW_S` of a SIGKILL, the second after it); nothing reached
  Telegram without an outbox row; those still queued, blocked or refused are counted;
- zero tracebacks / "unexpected" lines in the logs; zero secrets in logs, replies, the
  audit log or the ledger;
- `lunara status --json` always answered within 1 s and was never wrong about whether
  the bot was running (probes within 1.5 s of a process fault are not judged);
- bot RSS: peak (target <= 200 MiB) and least-squares slope over the last half of the
  run (target <= 1 MiB per 10 minutes; judged only in runs of 10 minutes or more, printed
  always). In a judged run every process fault (bot and watchdog kills, SIGTERM, Redis
  restarts and the flush, the corrupt ledger) falls in its first 20 %, so the rest is one
  bot life, well past its warm-up, under the injected faults and the full load. Were
  there several lives in the last half, the slope is pooled over them (each from its own
  mean, after its first 30 s, 60 s in long runs), so a restart does not read as a trend.
  `bench/memory_long.py` reads one bot life without any fault for longer;
- restarts counted by the watchdog equal the bot SIGKILLs plus SIGTERMs injected. A
  killed watchdog does not count: the bot it leaves lives on and the new watchdog
  adopts it, keeping the count.

`--minutes 2` is the short mode that `tests/test_soak.py` runs.

The modules, one idea each: `cluster` (the processes and their observers), `load` (the
users, their commands and the prices), `faults` (the plan and the injector), `run` (one
run, start to finish, and what it collects), `checks` (the invariants) and `report`.
"""
