"""The audit log: one intact JSON line per decision, readable even when damaged."""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import pwd
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from blueprint.audit import AuditLog, AuditWriteError, Decision, authorize, identify
from blueprint.errors import ExitCode, PermissionDenied
from blueprint.identity import UNKNOWN_TOKEN_PRINCIPAL, UnknownToken
from blueprint.manifest import Manifest, Permission, validate_manifest
from blueprint.mirror import NullMirror, open_mirror
from tests.blueprint.streams import stream_fields
from tests.waiting import wait_until

SECRET_TOKEN = "ci-token-for-tests-only"
FIELDS = {"at", "principal", "action", "permission", "decision", "outcome", "detail"}
ROLES = {"os_user:root": "owner", "token:ci": "ci", "os_user:bob": None}
"""The roles the `manifest` fixture gives, written out (None: no role)."""


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


@pytest.mark.slow
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
    assert entry["action"] == "stop"
    assert entry["detail"] == {"role": ROLES[principal]}


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


# --- identify: a token that matches no principal ---------------------------------------


def test_a_token_that_matches_no_principal_is_refused_and_audited_as_unknown(
    manifest: Manifest, home: Path
) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    with pytest.raises(UnknownToken):
        identify(manifest, log, "not-" + SECRET_TOKEN, Permission.STOP, "stop")
    [entry] = log.tail(5)
    assert {key: entry[key] for key in FIELDS - {"at"}} == {
        "principal": UNKNOWN_TOKEN_PRINCIPAL,
        "action": "stop",
        "permission": "bot.stop",
        "decision": "denied",
        "outcome": "unknown token",
        "detail": None,
    }
    assert SECRET_TOKEN not in (home / "audit.jsonl").read_text()


def _uid_of_nobody_here() -> int:
    """A uid with no passwd entry, so not this process's: named by its number."""
    known = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(54_321, 65_000) if uid not in known)


@pytest.mark.parametrize("token", [None, ""], ids=["no-token", "empty-token"])
def test_without_a_token_the_caller_is_the_os_user_of_the_uid_given_not_this_process(
    manifest: Manifest, home: Path, token: str | None
) -> None:
    # The watchdog's control socket passes its peer's uid: never its own user's role.
    log = AuditLog(home / "audit.jsonl", NullMirror())
    peer = _uid_of_nobody_here()
    assert identify(manifest, log, token, Permission.STOP, "stop", peer) == f"os_user:{peer}"
    assert log.tail(5) == []


def test_a_known_token_names_the_caller_whatever_the_uid(manifest: Manifest, home: Path) -> None:
    log = AuditLog(home / "audit.jsonl", NullMirror())
    peer = _uid_of_nobody_here()
    assert identify(manifest, log, SECRET_TOKEN, Permission.STATUS, "status", peer) == "token:ci"
    assert log.tail(5) == []


# --- the audit log's file --------------------------------------------------------------


@pytest.mark.parametrize(("max_file_bytes", "kept_files"), [(0, 5), (-1, 5), (100, 0), (0, 0)])
def test_an_audit_log_without_a_positive_bound_or_a_kept_file_is_refused(
    home: Path, max_file_bytes: int, kept_files: int
) -> None:
    message = "^the audit log needs a positive size bound and one kept file$"
    with pytest.raises(ValueError, match=message):
        AuditLog(home / "audit.jsonl", NullMirror(), max_file_bytes=max_file_bytes,
                 kept_files=kept_files)  # fmt: skip


def test_the_smallest_bounds_still_keep_every_entry_readable(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror(), max_file_bytes=1, kept_files=1)
    assert log.files() == [path, home / "audit.jsonl.1"]
    log.record("os_user:root", "first", Decision.ALLOWED)
    log.record("os_user:root", "second", Decision.ALLOWED)
    log.record("os_user:root", "third", Decision.ALLOWED)
    # Each entry is larger than the bound: it is written alone, the previous file rotated.
    assert [entry["action"] for entry in log.tail(5)] == ["second", "third"]
    assert sorted(file.name for file in home.iterdir()) == ["audit.jsonl", "audit.jsonl.1"]


def test_the_log_reads_the_current_file_then_each_kept_one(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror(), kept_files=3)
    assert log.files() == [path, *(home / f"audit.jsonl.{n}" for n in (1, 2, 3))]


def _fixed_entry(log: AuditLog, action: str) -> int:
    """Record an entry of a known length; its length in bytes, newline included."""
    log.record("os_user:root", action, Decision.ALLOWED)
    return len(log.path.read_bytes().splitlines(keepends=True)[-1])


def test_an_entry_that_exactly_fills_the_bound_stays_in_the_file(home: Path) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    probe = AuditLog(home / "probe.jsonl", NullMirror(), clock=lambda: at)
    size = _fixed_entry(probe, "one")
    log = AuditLog(home / "audit.jsonl", NullMirror(), clock=lambda: at, max_file_bytes=2 * size)
    _fixed_entry(log, "one")
    _fixed_entry(log, "two")
    assert not log.rotated(1).exists()
    _fixed_entry(log, "six")
    assert [entry["action"] for entry in read_lines(log.rotated(1))] == ["one", "two"]
    assert [entry["action"] for entry in read_lines(log.path)] == ["six"]


def test_a_file_holding_one_byte_is_rotated_or_continued_like_any_other(home: Path) -> None:
    path = home / "audit.jsonl"
    path.write_bytes(b"\n")
    path.chmod(0o600)
    AuditLog(path, NullMirror(), max_file_bytes=10).record("os_user:root", "a", Decision.ALLOWED)
    assert AuditLog(path, NullMirror()).rotated(1).read_bytes() == b"\n"
    assert [entry["action"] for entry in read_lines(path)] == ["a"]
    path.write_bytes(b"{")  # a crash one byte into the first entry
    AuditLog(path, NullMirror()).record("os_user:root", "b", Decision.ALLOWED)
    assert path.read_text().startswith("{\n")
    assert [entry["action"] for entry in AuditLog(path, NullMirror()).tail(5)] == ["b"]


def test_entries_follow_each_other_line_by_line_with_no_blank_line(home: Path) -> None:
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror())
    for action in ("first", "second", "third"):
        log.record("os_user:root", action, Decision.ALLOWED)
    lines = path.read_text().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line)["action"] for line in lines[:-1]] == ["first", "second", "third"]


def test_an_entry_is_one_compact_line_of_utf_8_json(home: Path) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    log = AuditLog(home / "audit.jsonl", NullMirror(), clock=lambda: at)
    log.record("os_user:zoë", "status", Decision.ALLOWED, "ok", {"n": 1}, permission="bot.status")
    assert (home / "audit.jsonl").read_bytes() == (
        '{"at":"2026-01-02T03:04:05.000+00:00","principal":"os_user:zoë","action":"status",'
        '"permission":"bot.status","decision":"allowed","outcome":"ok","detail":{"n":1}}\n'
    ).encode()


def test_detail_values_json_cannot_hold_and_undecodable_text_are_still_recorded(
    home: Path,
) -> None:
    """A path, a time, or an argument the OS handed over as undecodable bytes (a lone
    surrogate) must not make the audit fail, which would refuse the command."""
    log = AuditLog(home / "audit.jsonl", NullMirror())
    when = datetime(2026, 1, 2, tzinfo=UTC)
    log.record(
        "os_user:root",
        "backup",
        Decision.ALLOWED,
        detail={"to": Path("/backups/x.db"), "at": when, "argument": "caf\udce9"},
    )
    [entry] = log.tail(1)
    assert entry["detail"] == {
        "to": "/backups/x.db",
        "at": "2026-01-02 00:00:00+00:00",
        "argument": "caf\udce9",
    }


def test_a_new_audit_file_is_created_private_not_made_private_afterwards(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed: list[int] = []
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: changed.append(mode))
    AuditLog(home / "audit.jsonl", NullMirror()).record("os_user:root", "status", Decision.ALLOWED)
    assert stat.S_IMODE((home / "audit.jsonl").stat().st_mode) == 0o600
    assert changed == []  # no moment when another user could have opened it


def test_a_symlink_at_the_audit_path_is_never_written_through(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted.jsonl"
    (home / "audit.jsonl").symlink_to(elsewhere)
    with pytest.raises(AuditWriteError, match="cannot write the audit log"):
        AuditLog(home / "audit.jsonl", NullMirror()).record(
            "os_user:root", "status", Decision.ALLOWED
        )
    assert not elsewhere.exists()


def _descriptors_on(path: Path) -> int:
    """How many descriptors of this process are open on `path`."""
    count = 0
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(descriptor) == str(path):
                count += 1
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return count


def _replace_with_new_file(path: Path) -> None:
    os.replace(path, path.with_name("audit.jsonl.1"))  # another writer rotated it
    path.touch(mode=0o600)


def _remove(path: Path) -> None:
    os.replace(path, path.with_name("audit.jsonl.1"))  # rotated, not yet started anew


def _replace_with_symlink(path: Path) -> None:
    moved = path.with_name("moved.jsonl")
    os.replace(path, moved)
    path.symlink_to(moved)  # the very file the writer holds, now behind a link


@pytest.mark.parametrize(
    ("change", "written"),
    [(_replace_with_new_file, True), (_remove, True), (_replace_with_symlink, False)],
    ids=["rotated-and-started-anew", "rotated", "symlink"],
)
def test_a_writer_that_waited_for_the_lock_writes_only_to_the_file_now_at_the_path(
    home: Path, change: Callable[[Path], None], written: bool
) -> None:
    """Another writer rotates (or an intruder swaps) the file while this one waits for
    the lock: the entry goes to the file now at the path, or fails, never elsewhere."""
    path = home / "audit.jsonl"
    log = AuditLog(path, NullMirror())
    log.record("os_user:root", "before", Decision.ALLOWED)
    holder = os.open(path, os.O_RDONLY)
    errors: list[BaseException] = []

    def record() -> None:
        try:
            log.record("os_user:root", "waited", Decision.ALLOWED)
        except AuditWriteError as error:
            errors.append(error)

    writer = threading.Thread(target=record)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        writer.start()
        wait_until(lambda: _descriptors_on(path) == 2, what="the writer to open the file")
        change(path)
    finally:
        os.close(holder)  # releases the lock
        writer.join()
    if written:
        assert errors == []
        assert [entry["action"] for entry in read_lines(path)] == ["waited"]
        assert [entry["action"] for entry in read_lines(log.rotated(1))] == ["before"]
    else:
        assert len(errors) == 1
        assert [entry["action"] for entry in read_lines(home / "moved.jsonl")] == ["before"]


# --- reading it back -------------------------------------------------------------------


def test_a_last_line_without_its_newline_is_still_read(home: Path) -> None:
    path = home / "audit.jsonl"
    path.write_text('{"action": "first"}\n{"action": "edited by hand"}')
    assert [entry["action"] for entry in AuditLog(path, NullMirror()).tail(5)] == [
        "first",
        "edited by hand",
    ]


def test_the_first_byte_of_a_file_one_byte_past_a_read_block_is_read(home: Path) -> None:
    path = home / "audit.jsonl"
    first = b'{"action":"first"}\n'
    empty = b'{"action":"second","pad":""}\n'
    pad = 64 * 1024 + 1 - len(first) - len(empty)
    path.write_bytes(first + b'{"action":"second","pad":"' + b"x" * pad + b'"}\n')
    assert path.stat().st_size == 64 * 1024 + 1
    assert [entry["action"] for entry in AuditLog(path, NullMirror()).tail(5)] == [
        "first",
        "second",
    ]
