"""The ledger on a real disk, with real locks, real processes and a real Redis mirror."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import psutil
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blueprint.errors import BlueprintError, ExitCode
from blueprint.ledger import (
    MAX_EVENTS,
    BotState,
    ExitRecord,
    Ledger,
    LedgerCorrupt,
    LedgerDocument,
    LedgerRead,
    LedgerView,
    ProcessRecord,
    is_watchdog_cmdline,
    parse_ledger,
)
from blueprint.mirror import MirrorKeys, NullMirror, RedisMirror
from blueprint.paths import HomePaths
from blueprint.states import STORED_STATES
from tests.blueprint.streams import stream_fields
from tests.waiting import wait_until

NAME = "ledger-test"
ROOT = Path("/srv/lunara/home")


def make_ledger(home: Path, mirror: Any = None, **options: Any) -> Ledger:
    return Ledger(HomePaths(home), NAME, mirror or NullMirror(), **options)


def bump_restarts(document: LedgerDocument) -> None:
    document.restarts += 1


def _update_many(home: str, count: int) -> None:
    ledger = make_ledger(Path(home))
    for _ in range(count):
        ledger.update(bump_restarts)


# --- writing ----------------------------------------------------------------------------


def test_each_update_writes_the_next_revision_privately_and_atomically(home: Path) -> None:
    ledger = make_ledger(home)
    for expected in (1, 2, 3):
        assert ledger.update(bump_restarts).revision == expected
    document = json.loads((home / "ledger.json").read_text())
    assert document["revision"] == 3
    assert document["restarts"] == 3
    assert document["updated_at"]
    assert stat.S_IMODE((home / "ledger.json").stat().st_mode) == 0o600
    assert not [path.name for path in home.iterdir() if path.name.endswith(".tmp")]
    assert ledger.read() == ledger.read()
    assert ledger.read().document.to_dict() == document


def test_concurrent_updates_from_many_processes_lose_nothing(home: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_update_many, args=(str(home), 25)) for _ in range(8)]
    for worker in workers:
        worker.start()
    reader = make_ledger(home)
    seen: list[int] = []
    while any(worker.is_alive() for worker in workers):
        read = reader.read()
        assert read.recovered is None
        seen.append(read.document.revision)
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    final = reader.read().document
    assert final.revision == 200
    assert final.restarts == 200
    assert seen == sorted(seen)


def test_events_are_bounded_and_sent_to_the_mirror(redis_db: str, home: Path) -> None:
    mirror = RedisMirror(redis_db, NAME)
    ledger = make_ledger(home, mirror)

    def many_events(document: LedgerDocument) -> None:
        for index in range(MAX_EVENTS + 50):
            document.add_event("tick", str(index))

    document = ledger.update(many_events)
    assert len(document.events) == MAX_EVENTS
    assert document.events[-1]["detail"] == str(MAX_EVENTS + 49)
    ledger.update(lambda document: document.add_event("bot.stopped", "by os_user:root"))
    client = redis.Redis.from_url(redis_db)
    try:
        streamed = [
            json.loads(fields[b"event"])
            for fields in stream_fields(client.xrange(f"lunara:{NAME}:events"))
        ]
        mirrored = json.loads(client.get(MirrorKeys.for_name(NAME).ledger) or b"{}")
    finally:
        client.close()
    assert len(streamed) == MAX_EVENTS + 51
    assert streamed[-1]["kind"] == "bot.stopped"
    assert streamed[-1]["revision"] == 2
    assert mirrored == json.loads((home / "ledger.json").read_text())


def test_the_orphaned_state_is_never_stored(home: Path) -> None:
    ledger = make_ledger(home)
    ledger.update(bump_restarts)

    def orphan(document: LedgerDocument) -> None:
        document.state = BotState.ORPHANED

    with pytest.raises(ValueError, match="never stored"):
        ledger.update(orphan)
    assert ledger.read().document.revision == 1


def test_a_held_lock_times_out_with_a_clear_error(home: Path) -> None:
    ledger = make_ledger(home, lock_timeout_s=0.2)
    ledger.update(bump_restarts)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
            "lock.acquire(); print('locked', flush=True); sys.stdin.read()",
            str(HomePaths(home).ledger_lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(BlueprintError) as raised:
            ledger.update(bump_restarts)
        assert raised.value.exit_code == ExitCode.FAILURE
        assert "locked by another lunara process" in raised.value.message

        (home / "ledger.json").write_text("{oops")
        read = ledger.read()
        assert read.recovered is not None
        assert "not written yet" in read.recovered
        assert (home / "ledger.json").read_text() == "{oops"
    finally:
        holder.communicate(timeout=10)
    assert ledger.update(bump_restarts).revision == 2


# --- missing and corrupt ledgers ------------------------------------------------------------


def test_a_never_used_home_reads_as_fresh_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "never-used"
    read = make_ledger(home).read()
    assert read.recovered is None
    assert read.document == LedgerDocument(NAME)
    assert not home.exists()


def test_a_corrupt_ledger_is_rebuilt_and_kept_for_inspection(home: Path) -> None:
    ledger = make_ledger(home)
    (home / "ledger.json").write_text('{"name": "x", "revision": 9, "restarts": "three"}')
    read = ledger.read()
    assert read.recovered == (
        "ledger.json was corrupt ('restarts' must be a non-negative integer, got \"three\"); "
        "no mirror or live process found, so it starts again as stopped"
    )
    assert read.document.revision == 10
    assert read.document.state == BotState.STOPPED
    assert read.document.events[-1]["detail"] == read.recovered
    assert ledger.read() == LedgerRead(read.document)
    copies = list(home.glob("ledger.json.corrupt-*"))
    assert [copy.read_text() for copy in copies] == [
        '{"name": "x", "revision": 9, "restarts": "three"}'
    ]


def test_only_the_last_five_corrupt_copies_are_kept(home: Path) -> None:
    ledger = make_ledger(home)
    for index in range(7):
        (home / "ledger.json").write_text(f"garbage {index}")
        assert ledger.read().recovered is not None
    copies = sorted(home.glob("ledger.json.corrupt-*"))
    assert [copy.read_text() for copy in copies] == [f"garbage {index}" for index in range(2, 7)]


def test_the_read_only_view_reads_what_the_writer_wrote(home: Path) -> None:
    written = make_ledger(home).update(bump_restarts)
    assert LedgerView(HomePaths(home), NAME).read() == LedgerRead(written)


def test_the_read_only_view_never_rebuilds_writes_or_waits_for_the_lock(home: Path) -> None:
    (home / "ledger.json").write_text("{oops")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
            "lock.acquire(); print('locked', flush=True); sys.stdin.read()",
            str(HomePaths(home).ledger_lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        read = LedgerView(HomePaths(home), NAME).read()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()
    assert read.document == LedgerDocument(NAME)
    assert read.recovered is not None
    assert "corrupt" in read.recovered
    assert (home / "ledger.json").read_text() == "{oops"
    assert list(home.glob("ledger.json.corrupt-*")) == []


def test_the_read_only_view_of_a_missing_ledger_is_fresh_and_creates_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "never-used"
    assert LedgerView(HomePaths(home), NAME).read() == LedgerRead(LedgerDocument(NAME))
    assert not home.exists()


def test_update_over_a_corrupt_ledger_rebuilds_then_applies_the_change(home: Path) -> None:
    (home / "ledger.json").write_bytes(b"\x00\x01\x02")
    document = make_ledger(home).update(bump_restarts)
    assert document.restarts == 1
    assert document.revision == 2
    assert document.events[-1]["kind"] == "ledger_rebuilt"


class Where(TypedDict):
    host: str
    home: str


def here(home: Path) -> Where:
    """The host and home a mirror entry written by this home carries."""
    return {"host": socket.gethostname(), "home": str(HomePaths(home).root)}


def test_rebuild_from_the_mirror_continues_above_its_revision(redis_db: str, home: Path) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirrored = LedgerDocument(
        NAME,
        revision=12,
        state=BotState.RUNNING,
        watchdog=ProcessRecord(4242, 1_700_000_000.5),
        bot=ProcessRecord(4243, 1_700_000_001.25),
        started_by="token:ci",
        restarts=2,
        last_exit=ExitRecord(code=None, signal=9, at="2026-11-24T08:00:00+00:00", reason="memory"),
        **here(home),
    )
    mirror.publish_ledger(mirrored.to_dict())
    (home / "ledger.json").write_text('{"name": "ledger-test", "revision": 3, "state": 7}')
    read = make_ledger(home, mirror).read()
    assert read.recovered == (
        "ledger.json was corrupt ('state' must be one of backoff, fatal, running, starting, "
        "stopped, stopping, got 7); rebuilt from the Redis mirror at revision 12"
    )
    assert read.document.revision == 13
    # Redis is never trusted for pids: only our own process table names them.
    assert (read.document.watchdog, read.document.bot) == (None, None)
    assert read.document.last_exit == mirrored.last_exit
    assert (read.document.state, read.document.restarts) == (BotState.RUNNING, 2)
    assert mirror.health()["synced_revision"] == 13


def test_a_salvaged_file_revision_above_the_mirror_wins(redis_db: str, home: Path) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirror.publish_ledger(LedgerDocument(NAME, revision=12, **here(home)).to_dict())
    (home / "ledger.json").write_text('{"name": "ledger-test", "revision": 40, "events": {}}')
    assert make_ledger(home, mirror).read().document.revision == 41


def test_a_missing_ledger_of_a_running_system_is_recovered_from_the_mirror(
    redis_db: str, home: Path
) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirror.publish_ledger(
        LedgerDocument(NAME, revision=12, state=BotState.BACKOFF, **here(home)).to_dict()
    )
    read = make_ledger(home, mirror).read()
    assert read.recovered == "ledger.json was missing; rebuilt from the Redis mirror at revision 12"
    assert (read.document.revision, read.document.state) == (13, BotState.BACKOFF)
    assert json.loads((home / "ledger.json").read_text())["revision"] == 13


def test_a_missing_ledger_is_never_rebuilt_from_another_homes_mirror_entry(
    redis_db: str, tmp_path: Path
) -> None:
    """Two homes under one name share the mirror entry; the other home's bot is not ours."""
    mirror = RedisMirror(redis_db, NAME)
    other = tmp_path / "other"
    running = LedgerDocument(
        NAME,
        revision=12,
        state=BotState.RUNNING,
        watchdog=ProcessRecord(os.getpid(), psutil.Process().create_time()),
        **here(other),
    )
    mirror.publish_ledger(running.to_dict())
    ours = tmp_path / "ours"
    ours.mkdir()
    read = make_ledger(ours, mirror).read()
    assert read.recovered is None
    assert (read.document.state, read.document.watchdog) == (BotState.STOPPED, None)
    elsewhere = {**running.to_dict(), "host": "another-host", "home": str(HomePaths(ours).root)}
    redis.Redis.from_url(redis_db).set(MirrorKeys.for_name(NAME).ledger, json.dumps(elsewhere))
    assert make_ledger(ours, mirror).read().document.watchdog is None  # same path, other host


def test_a_missing_ledger_continues_a_stopped_mirror_quietly(redis_db: str, home: Path) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirror.publish_ledger(LedgerDocument(NAME, revision=12, restarts=4, **here(home)).to_dict())
    ledger = make_ledger(home, mirror)
    read = ledger.read()
    assert read.recovered is None
    assert (read.document.revision, read.document.restarts) == (12, 4)
    assert not (home / "ledger.json").exists()
    assert ledger.update(bump_restarts).revision == 13


def test_a_corrupt_mirror_copy_is_ignored(redis_db: str, home: Path) -> None:
    client = redis.Redis.from_url(redis_db)
    client.set(MirrorKeys.for_name(NAME).ledger, json.dumps({"name": NAME, "revision": -4}))
    client.close()
    (home / "ledger.json").write_text("[]")
    read = make_ledger(home, RedisMirror(redis_db, NAME)).read()
    assert read.recovered is not None
    assert "top level is a list" in read.recovered
    assert read.document.revision == 1


# --- property-based: no contents make read() raise --------------------------------------

FIELD_NAMES = (
    "name", "revision", "state", "watchdog", "bot", "started_at", "started_by", "restarts",
    "restart_times", "last_exit", "events", "updated_at", "foreground", "stop_timeout_s",
    "host", "home",
)  # fmt: skip

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(max_size=20)
process_records = st.builds(
    ProcessRecord, st.integers(min_value=1, max_value=2**22), st.floats(0, 2e9)
)
exit_records = st.builds(
    ExitRecord,
    st.none() | st.integers(-255, 255),
    st.none() | st.integers(1, 64),
    text,
    text,
    st.none() | finite,
)
events = st.fixed_dictionaries({"at": text, "kind": text, "detail": text})
documents = st.builds(
    LedgerDocument,
    name=st.text(min_size=1, max_size=20),
    revision=st.integers(0, 2**40),
    state=st.sampled_from(sorted(STORED_STATES)).map(BotState),
    watchdog=st.none() | process_records,
    bot=st.none() | process_records,
    started_at=st.none() | text,
    started_by=st.none() | text,
    restarts=st.integers(0, 10_000),
    restart_times=st.lists(finite, max_size=5),
    last_exit=st.none() | exit_records,
    events=st.lists(events, max_size=5),
    updated_at=st.none() | text,
    foreground=st.booleans(),
    stop_timeout_s=st.none() | st.floats(0, 3600),
    host=st.none() | text,
    home=st.none() | text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)
not_a_string = st.integers() | st.booleans() | st.lists(st.integers(), max_size=2) | finite
bad_process = (
    st.integers()
    | text
    | st.fixed_dictionaries({"pid": st.integers(max_value=0), "create_time": finite})
    | st.fixed_dictionaries({"pid": st.integers(1, 99), "create_time": text | st.none()})
    | st.fixed_dictionaries({"pid": text | finite, "create_time": st.floats(0, 9)})
)
WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.just("") | st.none() | not_a_string,
    "revision": st.integers(max_value=-1) | finite | text | st.booleans() | st.none(),
    "state": st.just("orphaned")
    | text.filter(lambda value: value not in STORED_STATES)
    | st.none(),
    "watchdog": bad_process,
    "bot": bad_process,
    "started_at": not_a_string,
    "started_by": not_a_string,
    "restarts": st.integers(max_value=-1) | text | finite | st.booleans() | st.none(),
    "restart_times": text | st.integers() | st.lists(text, min_size=1) | st.none(),
    "last_exit": st.integers()
    | text
    | st.fixed_dictionaries({"code": text, "signal": st.none(), "at": text, "reason": text})
    | st.fixed_dictionaries(
        {"code": st.none(), "signal": st.none(), "at": st.none(), "reason": text}
    )
    | st.fixed_dictionaries({"at": text, "reason": text, "rss_mib": text}),
    "events": text | st.integers() | st.lists(st.integers(), min_size=1) | st.none(),
    "updated_at": not_a_string,
    "foreground": st.integers() | text | st.none(),
    "stop_timeout_s": st.integers(max_value=-1) | text | st.booleans() | st.just(float("nan")),
    "host": not_a_string,
    "home": not_a_string,
}


EXAMPLES_WITH_A_FRESH_HOME = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def fresh_home() -> Iterator[Callable[[], Path]]:
    """Hypothesis runs many examples per test: each gets its own home."""
    with tempfile.TemporaryDirectory() as scratch:
        counter = iter(range(10**9))

        def make() -> Path:
            path = Path(scratch) / f"home-{next(counter)}"
            path.mkdir()
            return path

        yield make


def read_bytes_as_ledger(home: Path, raw: bytes) -> Any:
    (home / "ledger.json").write_bytes(raw)
    return make_ledger(home).read()


@given(documents)
def test_documents_round_trip_through_json(document: LedgerDocument) -> None:
    raw = json.dumps(document.to_dict()).encode()
    assert parse_ledger(raw) == document


@given(json_values)
def test_any_json_is_either_a_document_or_a_clear_corruption(value: Any) -> None:
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        LedgerDocument.from_dict(value)
    except LedgerCorrupt as error:
        assert error.message  # noqa: PT017


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents, st.sampled_from(FIELD_NAMES), st.data())
def test_a_wrongly_typed_field_is_rebuilt_and_named(
    fresh_home: Callable[[], Path], document: LedgerDocument, field: str, data: st.DataObject
) -> None:
    contents = document.to_dict()
    contents[field] = data.draw(WRONG_VALUES[field], label=field)
    with pytest.raises(LedgerCorrupt, match=field):
        LedgerDocument.from_dict(contents)
    read = read_bytes_as_ledger(fresh_home(), json.dumps(contents).encode())
    assert read.recovered is not None
    assert read.recovered.startswith("ledger.json was corrupt")
    assert field in read.recovered
    revision = contents["revision"]
    salvageable = isinstance(revision, int) and not isinstance(revision, bool) and revision >= 0
    assert read.document.revision == (revision + 1 if salvageable else 1)
    assert LedgerDocument.from_dict(read.document.to_dict()) == read.document


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents, st.data())
def test_a_truncated_ledger_is_rebuilt(
    fresh_home: Callable[[], Path], document: LedgerDocument, data: st.DataObject
) -> None:
    raw = json.dumps(document.to_dict(), indent=2).encode()
    cut = data.draw(st.integers(0, raw.rindex(b"}") - 1), label="cut")
    read = read_bytes_as_ledger(fresh_home(), raw[:cut])
    assert read.recovered is not None
    assert read.recovered.startswith("ledger.json was corrupt")
    assert read.document.revision == 1
    assert read.document.state == BotState.STOPPED


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(fresh_home: Callable[[], Path], raw: bytes) -> None:
    home = fresh_home()
    read = read_bytes_as_ledger(home, raw)
    assert isinstance(read.document, LedgerDocument)
    assert read.recovered is not None
    assert make_ledger(home).read() == LedgerRead(read.document)


# --- the process table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "matches"),
    [
        (["/usr/bin/python3", "-m", "blueprint.watchdog", "--home", str(ROOT)], True),
        (["python", "-m", "blueprint.watchdog", "--home", f"{ROOT}/", "--manifest", "m"], True),
        (["python", "-u", "-m", "blueprint.watchdog", f"--home={ROOT}"], True),
        (["python", "-m", "blueprint.watchdog", "--manifest", "m", "--home", str(ROOT)], True),
        (["python", "-m", "blueprint.watchdog", "--home", "/srv/lunara/other"], False),
        (["python", "-m", "blueprint.watchdog", "--home", "srv/lunara/home"], False),
        (["python", "-m", "blueprint.watchdog"], False),
        (["python", "-m", "blueprint.watchdog", "--home"], False),
        (["python", "-m", "lunara", "--home", str(ROOT)], False),
        (["python", "-c", "-m blueprint.watchdog", "--home", str(ROOT)], False),
        (["-m", "blueprint.watchdog", "--home", str(ROOT)], False),
        ([], False),
    ],
)
def test_the_watchdog_is_recognised_by_its_command_line(cmdline: list[str], matches: bool) -> None:
    assert is_watchdog_cmdline(cmdline, ROOT) is matches


FAKE_WATCHDOG = textwrap.dedent(
    """
    import fcntl, os, pathlib, subprocess, sys
    if "--no-lock" not in sys.argv:  # the real watchdog holds the home's lock while it runs
        lock = os.open(pathlib.Path(sys.argv[2]) / "watchdog.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    pathlib.Path(sys.argv[-1]).write_text(str(child.pid))
    sys.stdin.read()
    child.stdin.close()
    child.wait()
    """
)


@contextlib.contextmanager
def watchdog_lookalike(
    tmp_path: Path, home: Path, *extra: str
) -> Iterator[tuple[psutil.Process, psutil.Process]]:
    """A process whose argv is exactly the watchdog's, with one child standing for the bot."""
    package = tmp_path / "fake" / "blueprint"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "watchdog.py").write_text(FAKE_WATCHDOG)
    ready = tmp_path / "child.pid"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blueprint.watchdog",
            "--home",
            str(home.resolve()),
            *extra,
            str(ready),
        ],
        cwd=package.parent,
        env={**os.environ, "PYTHONPATH": str(package.parent)},
        stdin=subprocess.PIPE,
    )
    try:
        wait_until(lambda: ready.exists() and ready.read_text() != "", 10, "the writer to be ready")
        yield psutil.Process(process.pid), psutil.Process(int(ready.read_text()))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


@pytest.fixture
def fake_watchdog(tmp_path: Path, home: Path) -> Iterator[tuple[psutil.Process, psutil.Process]]:
    """A watchdog look-alike that holds the home's lock, as ours does."""
    with watchdog_lookalike(tmp_path, home) as processes:
        yield processes


def test_a_process_that_only_looks_like_our_watchdog_is_not_taken_for_it(
    tmp_path: Path, home: Path
) -> None:
    """Same user, same command line, but not holding the home's watchdog.lock."""
    with watchdog_lookalike(tmp_path, home, "--no-lock"):
        read = make_ledger(home.resolve()).read()
    assert read.recovered is None
    assert (read.document.state, read.document.watchdog) == (BotState.STOPPED, None)


def test_a_missing_ledger_is_rebuilt_from_the_live_watchdog_and_bot(
    home: Path, fake_watchdog: tuple[psutil.Process, psutil.Process]
) -> None:
    watchdog, bot = fake_watchdog
    read = make_ledger(home.resolve()).read()
    assert read.recovered == (
        f"ledger.json was missing; rebuilt from the process table "
        f"(watchdog pid {watchdog.pid}, bot pid {bot.pid})"
    )
    document = read.document
    assert document.watchdog == ProcessRecord(watchdog.pid, watchdog.create_time())
    assert document.bot == ProcessRecord(bot.pid, bot.create_time())
    assert (document.state, document.revision) == (BotState.RUNNING, 1)
    assert json.loads((home / "ledger.json").read_text())["watchdog"]["pid"] == watchdog.pid


def test_the_process_table_overrides_a_stopped_mirror_copy(
    redis_db: str, home: Path, fake_watchdog: tuple[psutil.Process, psutil.Process]
) -> None:
    watchdog, _ = fake_watchdog
    mirror = RedisMirror(redis_db, NAME)
    mirror.publish_ledger(LedgerDocument(NAME, revision=30, **here(home)).to_dict())
    (home / "ledger.json").write_text("")
    read = make_ledger(home.resolve(), mirror).read()
    assert read.recovered is not None
    assert read.recovered.startswith(
        "ledger.json was corrupt (the file is empty); rebuilt from the Redis mirror at "
        "revision 30 and the process table"
    )
    assert read.document.revision == 31
    assert read.document.state == BotState.RUNNING
    assert read.document.watchdog == ProcessRecord(watchdog.pid, watchdog.create_time())


def test_a_ledger_that_cannot_be_locked_is_still_read_and_update_fails_clearly(
    home: Path,
) -> None:
    (home / "ledger.json.lock").mkdir()
    (home / "ledger.json").write_text("{")
    ledger = make_ledger(home, lock_timeout_s=0.2)
    read = ledger.read()
    assert read.recovered is not None
    assert "not written yet: cannot lock the ledger" in read.recovered
    assert read.document.revision == 1
    with pytest.raises(BlueprintError, match="cannot lock the ledger"):
        ledger.update(bump_restarts)
    assert (home / "ledger.json").read_text() == "{"
