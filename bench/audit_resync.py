"""Memory an audit resync leaves behind after Redis loses its data, against 256 KiB batches.

    .venv/bin/python bench/audit_resync.py [--lines 7000]

When Redis comes back empty (flushed, or restarted without its data), the next audit
entry makes the mirror ship audit.jsonl again from its start, a batch per round trip.
In the bot that happens inside its own process, and a large batch lifts its RSS for
good: the lines and the packed command are many small objects at once, and the
allocator keeps the memory they took. The soak's one Redis flush showed this as a
1.1 MiB step in a bot that was otherwise flat.

Each side runs in a fresh process with the same long-lived heap (200,000 small dicts,
like a bot's) and the same audit log (`--lines` entries written through the real
`AuditLog`; 7,000 is the soak's log at its flush). Its mirror has sent all of the log
when Redis is flushed; one more `AuditLog.record` then resends the backlog through the
real `RedisMirror` to a private redis-server. Printed per side: the RSS step (after a
full collection), how long that one `record` call took, how much of the log it resent
and how many entries the stream holds afterwards. The peer is the same code with the
256 KiB batches used before. Target: a step of at most 0.25 MiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
import redis

from blueprint import mirror as mirror_module
from blueprint.audit import AuditLog, Decision
from blueprint.mirror import NullMirror, RedisMirror
from blueprint.units import MIB

PEER_BATCH_BYTES = 256 * 1024
PEER_BATCHES_PER_CALL = 20
STEP_TARGET_MIB = 0.25
NAME = "lunara-bench"


def write_log(path: Path, lines: int) -> None:
    log = AuditLog(path, NullMirror())
    for number in range(lines):
        log.record(
            f"telegram:{300_000 + number % 500}",
            "tg.buy",
            Decision.ALLOWED,
            "ok",
            {"symbol": "BTCUSDT", "quote": "25", "order": f"lun-{number:010d}"},
            permission="tg.trade.buy",
        )


def rss_mib() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / MIB


def measure(path: Path, redis_url: str, batch_bytes: int, per_call: int) -> dict[str, float]:
    """In a fresh process: the RSS step and time of resending `path` after a flush."""
    mirror_module.AUDIT_BATCH_BYTES = batch_bytes
    mirror_module.AUDIT_BATCHES_PER_CALL = per_call
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    mirror = RedisMirror(redis_url, NAME, audit_path=path)
    log = AuditLog(path, mirror)
    client.set(mirror.keys.audit_synced_offset, path.stat().st_size)  # all of it sent
    log.record("os_user:bench", "bench", Decision.ALLOWED, "ok")  # warm: one line, one round trip
    heap = [{"id": number, "name": str(number)} for number in range(200_000)]
    before = rss_mib()
    client.flushall()  # Redis loses its data
    started = time.perf_counter()
    log.record("os_user:bench", "bench", Decision.ALLOWED, "ok")  # resends the whole log
    seconds = time.perf_counter() - started
    after = rss_mib()
    synced = int(client.get(mirror.keys.audit_synced_offset) or 0)
    del heap
    return {
        "step_mib": after - before,
        "seconds": seconds,
        "stream": float(client.xlen(mirror.keys.audit)),
        "sent_mib": synced / MIB,
    }


def run_side(log: Path, redis_url: str, batch_bytes: int, per_call: int) -> dict[str, float]:
    path = log.with_name(f"audit-{batch_bytes}.jsonl")  # each side appends to its own copy
    shutil.copyfile(log, path)
    result = subprocess.run(
        [sys.executable, __file__, "--side", f"{batch_bytes},{per_call}", "--log", str(path),
         "--redis-url", redis_url],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=7000, help="audit entries in the log")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        batch_bytes, per_call = (int(part) for part in args.side.split(","))
        print(json.dumps(measure(args.log, args.redis_url, batch_bytes, per_call)))
        return 0

    from bench.executor_tick import start_redis

    workdir = Path(tempfile.mkdtemp(prefix="lunara-bench-audit-"))
    server = None
    try:
        server, redis_url = start_redis(workdir)
        path = workdir / "audit.jsonl"
        write_log(path, args.lines)
        size = path.stat().st_size
        ours = run_side(
            path, redis_url, mirror_module.AUDIT_BATCH_BYTES, mirror_module.AUDIT_BATCHES_PER_CALL
        )
        peer = run_side(path, redis_url, PEER_BATCH_BYTES, PEER_BATCHES_PER_CALL)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"audit resync after a Redis flush: {args.lines} entries, {size / MIB:.2f} MiB")
    for label, batch, per_call, figures in (
        ("lunara", mirror_module.AUDIT_BATCH_BYTES, mirror_module.AUDIT_BATCHES_PER_CALL, ours),
        ("peer", PEER_BATCH_BYTES, PEER_BATCHES_PER_CALL, peer),
    ):
        print(
            f"  {label:6} {per_call:3d} x {batch // 1024:3d} KiB batches per call: RSS step "
            f"{figures['step_mib']:+.2f} MiB; the one record() took {figures['seconds'] * 1000:.0f} "
            f"ms and resent {figures['sent_mib']:.2f} MiB; the stream holds "
            f"{figures['stream']:.0f} entries"
        )
    ratio = ours["step_mib"] / peer["step_mib"] if peer["step_mib"] > 0 else float("nan")
    passed = ours["step_mib"] <= STEP_TARGET_MIB and ours["sent_mib"] >= peer["sent_mib"]
    print(f"  step ratio lunara/peer: {ratio:.2f}")
    print(
        f"  {'PASS' if passed else 'MISS'}: step <= {STEP_TARGET_MIB} MiB, "
        "and as much resent per call as the peer"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
