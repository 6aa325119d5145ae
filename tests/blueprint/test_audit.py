"""The audit log: one intact JSON line per decision, readable even when damaged."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from blueprint.audit import AuditLog, AuditWriteError, Decision, authorize
from blueprint.errors import ExitCode, PermissionDenied
from blueprint.manifest import Manifest, Permission, validate_manifest
from blueprint.mirror import NullMirror, open_mirror
from tests.blueprint.streams import stream_fields

SECRET_TOKEN = "ci-token-for-tests-only"
FIELDS = {"at", "principal", "action", "permission", "decision", "outcome", "detail"}


class FileCheckingMirror(NullMirror):
    """Keeps what it is handed and whether the line was already on disk at that moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[dict[str, Any], bool]] = []

    def append_audit(self, entry: dict[str, Any]) -> None:
        on_disk = self.path.exists() and entry["at"] in self.path.read_text()
        self.received.append((entry, on_disk))


@pytest.fixture
def manifest() -> Manifest:
    return validate_manifest(
        {
            "version": 1,
            "name": "lunara",
            "program": {"command": ["bot"]},
            "roles": {"owner": ["*"], "ci": ["bot.status", "bot.start"]},
            "principals": {
                "os_user:root": "owner",
                "token:ci": {
                    "role": "ci",
                    "sha256": hashlib.sha256(SECRET_TOKEN.encode()).hexdigest(),
                },
            },
        }
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_record_is_one_json_line_with_every_field(home: Path) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    log = AuditLog(home / "audit.jsonl", NullMirror(), clock=lambda: at)
    entry = log.record(
        "token:ci", "start", Decision.ALLOWED, "ok", {"pid": 42}, permission="bot.start"
    )
    assert entry == {
        "at": "2026-01-02T03:04:05.678+00:00",
        "principal": "token:ci",
        "action": "start",
        "permission": "bot.start",
        "decision": "allowed",
        "outcome": "ok",
        "detail": {"pid": 42},
    }
    assert read_lines(home / "audit.jsonl") == [entry]


def test_the_audit_file_is_private_to_its_owner(home: Path) -> None:
    path = home / "audit.jsonl"
    AuditLog(path, NullMirror()).record("os_user:root", "status", Decision.ALLOWED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    AuditLog(path, NullMirror()).record("os_user:root", "status", Decision.ALLOWED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_each_entry_is_mirrored_after_it_is_on_disk(home: Path) -> None:
    path = home / "audit.jsonl"
    mirror = FileCheckingMirror(path)
    log = AuditLog(path, mirror)
    first = log.record("os_user:root", "status", Decision.ALLOWED)
    second = log.record("os_user:bob", "stop", Decision.DENIED)
    assert mirror.received == [(first, True), (second, True)]


def test_entries_reach_the_redis_mirror(home: Path, redis_db: str) -> None:
    log = AuditLog(home / "audit.jsonl", open_mirror(redis_db, "audit-test"))
    log.record("os_user:root", "status", Decision.ALLOWED, permission="bot.status")
    client = redis.Redis.from_url(redis_db)
    try:
        stream = stream_fields(client.xrange("lunara:audit-test:audit"))
    finally:
        client.close()
    assert len(stream) == 1
    assert b"os_user:root" in b"".join(stream[0].values())


def test_secret_looking_detail_values_are_redacted(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror())
    entry = log.record(
        "token:ci",
        "start",
        Decision.ALLOWED,
        detail={"token": SECRET_TOKEN, "nested": {"api_key": SECRET_TOKEN}, "pid": 1},
    )
    assert entry["detail"] == {"token": "[redacted]", "nested": {"api_key": "[redacted]"}, "pid": 1}
    assert SECRET_TOKEN not in path.read_text()


def test_tail_returns_the_last_entries_oldest_first(home: Path) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    for index in range(10):
        log.record("os_user:root", f"action-{index}", Decision.ALLOWED)
    assert [entry["action"] for entry in log.tail(3)] == ["action-7", "action-8", "action-9"]
    assert len(log.tail(100)) == 10
    assert log.tail(0) == []


def test_tail_of_a_missing_log_is_empty(home: Path) -> None:
    assert AuditLog(home / "audit.jsonl", NullMirror()).tail(5) == []


def test_tail_skips_corrupt_lines(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror())
    log.record("os_user:root", "first", Decision.ALLOWED)
    with path.open("ab") as handle:
        handle.write(b'{"truncated": \n[1, 2]\n\xff\xfe not utf-8\n\n"a string"\n')
    log.record("os_user:root", "second", Decision.ALLOWED)
    assert [entry["action"] for entry in log.tail(10)] == ["first", "second"]
    assert [entry["action"] for entry in log.tail(1)] == ["second"]


def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next_entry(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror())
    log.record("os_user:root", "before", Decision.ALLOWED)
    with path.open("ab") as handle:
        handle.write(b'{"at": "2026-01-01T00:00:00+00:00", "princ')
    log.record("os_user:root", "after", Decision.ALLOWED)
    assert [entry["action"] for entry in log.tail(10)] == ["before", "after"]


def test_tail_reads_across_block_boundaries(home: Path) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    for index in range(300):
        log.record("os_user:root", f"action-{index}", Decision.ALLOWED, detail={"pad": "x" * 900})
    assert (home / "audit.jsonl").stat().st_size > 4 * 64 * 1024
    tail = log.tail(250)
    assert [entry["action"] for entry in tail] == [f"action-{index}" for index in range(50, 300)]


def test_an_unwritable_log_is_a_clear_error(home: Path) -> None:
    log = AuditLog(home / "missing-dir" / "audit.jsonl", NullMirror())
    with pytest.raises(AuditWriteError, match="cannot write the audit log"):
        log.record("os_user:root", "status", Decision.ALLOWED)


def _append_many(path: str, writer: int, count: int, start: Any) -> None:
    log = AuditLog(Path(path), NullMirror())
    start.wait()  # every writer begins together, so their appends overlap
    for index in range(count):
        # Entries larger than a pipe buffer, so interleaving would show.
        log.record(
            f"os_user:w{writer}", "status", Decision.ALLOWED, detail={"i": index, "pad": "y" * 6000}
        )


def test_concurrent_appends_from_several_processes_keep_every_line_intact(home: Path) -> None:
    path = home / "audit.jsonl"
    writers, count = 4, 400
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(writers)
    processes = [
        context.Process(target=_append_many, args=(str(path), writer, count, start))
        for writer in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    # 9.6 MB of entries: the log rotated on the way; read the files oldest first.
    files = [file for file in reversed(AuditLog(path, NullMirror()).files()) if file.exists()]
    assert len(files) > 1
    entries = [entry for file in files for entry in read_lines(file)]  # raises if torn
    assert len(entries) == writers * count
    for writer in range(writers):
        mine = [
            entry["detail"]["i"] for entry in entries if entry["principal"] == f"os_user:w{writer}"
        ]
        assert mine == list(range(count))
    assert all(set(entry) == FIELDS for entry in entries)


def test_authorize_allows_and_audits(manifest: Manifest, home: Path) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    authorize(manifest, log, "token:ci", Permission.STATUS, "status")
    [entry] = log.tail(5)
    assert entry["principal"] == "token:ci"
    assert entry["decision"] == "allowed"
    assert entry["permission"] == "bot.status"
    assert entry["action"] == "status"
    assert entry["detail"] == {"role": "ci"}


@pytest.mark.parametrize(
    ("principal", "permission", "message"),
    [
        ("os_user:bob", "bot.stop", "os_user:bob may not bot.stop (role: none)"),
        ("token:ci", "bot.stop", "token:ci may not bot.stop (role: ci)"),
        ("token:ci", "bot.unheard_of", "token:ci may not bot.unheard_of (role: ci)"),
    ],
)
def test_authorize_denies_audits_and_says_why(
    manifest: Manifest, home: Path, principal: str, permission: str, message: str
) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    with pytest.raises(PermissionDenied) as caught:
        # A string, not a Permission: a name the enum lacks must be refused as well.
        authorize(manifest, log, principal, permission, "stop")  # type: ignore[arg-type]
    assert caught.value.message == message
    assert caught.value.exit_code == ExitCode.PERMISSION_DENIED
    [entry] = log.tail(5)
    assert entry["decision"] == "denied"
    assert entry["principal"] == principal
    assert entry["permission"] == permission
    assert entry["outcome"] == "refused"


def test_no_raw_token_reaches_the_audit_log(manifest: Manifest, home: Path) -> None:
    from blueprint.identity import cli_principal

    log = AuditLog(home / "audit.jsonl", NullMirror())
    principal = cli_principal(manifest, {"LUNARA_TOKEN": SECRET_TOKEN})
    authorize(manifest, log, principal, Permission.START, "start")
    with pytest.raises(PermissionDenied):
        authorize(manifest, log, principal, Permission.STOP, "stop")
    text = (home / "audit.jsonl").read_text()
    assert "token:ci" in text
    assert SECRET_TOKEN not in text
