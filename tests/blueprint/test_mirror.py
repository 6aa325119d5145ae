"""The Redis mirror against real redis-servers: the shared one, one we stop and restart,
and a listener that accepts connections but never answers."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from blueprint.errors import ConfigError
from blueprint.mirror import (
    AUDIT_MAX_LENGTH,
    EVENTS_MAX_LENGTH,
    MirrorKeys,
    NullMirror,
    RedisMirror,
    open_mirror,
)
from tests.blueprint.streams import stream_fields
from tests.waiting import wait_until

NAME = "mirror-test"
KEYS = MirrorKeys.for_name(NAME)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeClock:
    """A monotonic clock the test moves by hand, to step through cool-offs."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class OwnRedis:
    """A redis-server of our own that the test may stop and start again on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
            ]
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        wait_until(lambda: _pings(client), 10, "Redis to answer")
        client.close()

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    if server.process is not None:
        server.stop()


class SilentListener:
    """Accepts TCP connections and never replies: a hung Redis. Counts connections."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def client(redis_db: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_db)
    yield connection
    connection.close()


def ledger(revision: int, **extra: object) -> dict[str, object]:
    return {"name": NAME, "revision": revision, "state": "running", **extra}


def stored_revision(connection: redis.Redis) -> int:
    return int(json.loads(connection.get(KEYS.ledger) or b"{}")["revision"])


def audit_stream(connection: redis.Redis, key: str = KEYS.audit) -> list[bytes]:
    return [fields[b"entry"] for fields in stream_fields(connection.xrange(key))]


def write_audit_lines(path: Path, start: int, stop: int) -> list[bytes]:
    lines = [json.dumps({"n": n, "action": "bot.status"}).encode() for n in range(start, stop)]
    with path.open("ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))
    return lines


def test_a_lower_revision_never_replaces_the_mirrored_ledger(
    redis_db: str, client: redis.Redis
) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirror.publish_ledger(ledger(5, state="running"))
    mirror.publish_ledger(ledger(3, state="stopped"))
    mirror.publish_ledger(ledger(5, state="fatal"))
    assert mirror.fetch_ledger() == ledger(5, state="running")
    mirror.publish_ledger(ledger(6, state="stopped"))
    assert mirror.fetch_ledger() == ledger(6, state="stopped")
    assert mirror.health() == {"backend": "redis", "healthy": True, "synced_revision": 6}


def test_garbage_under_the_ledger_key_is_replaced_and_never_returned(
    redis_db: str, client: redis.Redis
) -> None:
    client.set(KEYS.ledger, b"\xff not json")
    mirror = RedisMirror(redis_db, NAME)
    assert mirror.fetch_ledger() is None
    assert mirror.health()["synced_revision"] is None
    mirror.publish_ledger(ledger(1))
    assert stored_revision(client) == 1


def test_health_of_an_empty_redis_is_healthy_with_no_revision(redis_db: str) -> None:
    health = RedisMirror(redis_db, NAME).health()
    assert health == {"backend": "redis", "healthy": True, "synced_revision": None}


def test_event_stream_is_capped_near_its_limit(redis_db: str, client: redis.Redis) -> None:
    mirror = RedisMirror(redis_db, NAME)
    for index in range(EVENTS_MAX_LENGTH * 2 + 500):
        mirror.append_event({"kind": "tick", "detail": str(index)})
    length = client.xlen(KEYS.events)
    assert EVENTS_MAX_LENGTH <= length <= EVENTS_MAX_LENGTH + 200
    newest = stream_fields(client.xrevrange(KEYS.events, count=1))[0]
    assert json.loads(newest[b"event"])["detail"] == str(EVENTS_MAX_LENGTH * 2 + 499)


def test_audit_stream_is_capped_and_the_whole_file_is_marked_synced(
    redis_db: str, client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_audit_lines(path, 0, AUDIT_MAX_LENGTH + 2_000)
    mirror = RedisMirror(redis_db, NAME, audit_path=path)
    while mirror.sync_audit(path):
        pass
    length = client.xlen(KEYS.audit)
    assert AUDIT_MAX_LENGTH <= length <= AUDIT_MAX_LENGTH + 200
    assert audit_stream(client)[-1] == lines[-1]
    assert int(client.get(KEYS.audit_synced_offset) or 0) == path.stat().st_size


def test_append_audit_ships_each_file_line_once(
    redis_db: str, client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    mirror = RedisMirror(redis_db, NAME, audit_path=path)
    expected: list[bytes] = []
    for index in range(5):
        expected += write_audit_lines(path, index, index + 1)
        mirror.append_audit({"n": index})
    mirror.append_audit({"n": "nothing new"})
    assert audit_stream(client) == expected


def test_a_line_still_being_written_waits_for_its_newline(
    redis_db: str, client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2')
    mirror = RedisMirror(redis_db, NAME, audit_path=path)
    assert mirror.sync_audit(path) == 1
    with path.open("ab") as handle:
        handle.write(b"}\n")
    assert mirror.sync_audit(path) == 1
    assert audit_stream(client) == [b'{"n": 1}', b'{"n": 2}']


def test_concurrent_audit_syncs_send_every_line_exactly_once(
    redis_db: str, client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    padding = "x" * 900
    lines = [json.dumps({"n": n, "pad": padding}).encode() for n in range(3_000)]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    mirrors = [RedisMirror(redis_db, NAME, audit_path=path) for _ in range(4)]

    def drain(mirror: RedisMirror) -> None:
        while int(client.get(KEYS.audit_synced_offset) or 0) < path.stat().st_size:
            mirror.sync_audit(path)

    threads = [threading.Thread(target=drain, args=(mirror,)) for mirror in mirrors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert audit_stream(client) == lines


def test_without_an_audit_file_entries_go_straight_to_the_stream(
    redis_db: str, client: redis.Redis
) -> None:
    mirror = RedisMirror(redis_db, NAME)
    mirror.append_audit({"principal": "os_user:root", "action": "bot.start"})
    assert [json.loads(entry) for entry in audit_stream(client)] == [
        {"principal": "os_user:root", "action": "bot.start"}
    ]


def test_a_dead_redis_is_tried_once_then_left_alone_during_the_cool_off(tmp_path: Path) -> None:
    clock = FakeClock()
    audit = tmp_path / "audit.jsonl"
    write_audit_lines(audit, 0, 3)
    mirror = RedisMirror(f"redis://127.0.0.1:{free_port()}/0", NAME, audit_path=audit, clock=clock)
    mirror.publish_ledger(ledger(1))
    assert (mirror.attempts, mirror.failures) == (1, 1)
    assert mirror.fetch_ledger() is None
    mirror.append_event({"kind": "tick"})
    mirror.append_audit({"n": 3})
    assert mirror.sync_audit(audit) == 0
    assert mirror.health() == {"backend": "redis", "healthy": False, "synced_revision": None}
    assert mirror.attempts == 1
    clock.advance(5.1)
    mirror.append_event({"kind": "tick"})
    assert (mirror.attempts, mirror.failures) == (2, 2)
    clock.advance(5.1)  # the cool-off doubled while Redis stays down
    mirror.append_event({"kind": "tick"})
    assert mirror.attempts == 2
    clock.advance(5.0)
    mirror.append_event({"kind": "tick"})
    assert mirror.attempts == 3


def test_a_hung_redis_costs_one_connection_per_cool_off(silent_listener: SilentListener) -> None:
    clock = FakeClock()
    mirror = RedisMirror(
        f"redis://127.0.0.1:{silent_listener.port}/0",
        NAME,
        connect_timeout_s=0.2,
        op_timeout_s=0.2,
        clock=clock,
    )
    assert mirror.health()["healthy"] is False
    wait_until(lambda: len(silent_listener.accepted) == 1, 10, "the first connection")
    mirror.publish_ledger(ledger(1))
    mirror.append_event({"kind": "tick"})
    assert mirror.fetch_ledger() is None
    assert mirror.attempts == 1
    clock.advance(5.1)
    assert mirror.health()["healthy"] is False
    wait_until(lambda: len(silent_listener.accepted) == 2, 10, "a second connection")
    assert mirror.attempts == 2


def test_ledger_and_audit_catch_up_after_redis_restarts(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    clock = FakeClock()
    audit = tmp_path / "audit.jsonl"
    mirror = RedisMirror(own_redis.url, NAME, audit_path=audit, clock=clock)
    before = write_audit_lines(audit, 0, 3)
    mirror.append_audit({"n": 2})
    mirror.publish_ledger(ledger(1))

    own_redis.stop()
    during = write_audit_lines(audit, 3, 6)
    mirror.append_audit({"n": 5})
    mirror.publish_ledger(ledger(2))
    mirror.publish_ledger(ledger(3, state="stopped"))
    assert mirror.health()["healthy"] is False

    own_redis.start()
    clock.advance(60)
    after = write_audit_lines(audit, 6, 7)
    mirror.append_audit({"n": 6})

    check = redis.Redis.from_url(own_redis.url)
    try:
        assert audit_stream(check) == before + during + after
        assert json.loads(check.get(KEYS.ledger) or b"{}") == ledger(3, state="stopped")
    finally:
        check.close()
    assert mirror.health() == {"backend": "redis", "healthy": True, "synced_revision": 3}


def test_an_empty_redis_after_a_restart_receives_the_whole_audit_again(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    lines = write_audit_lines(audit, 0, 4)
    mirror = RedisMirror(own_redis.url, NAME, audit_path=audit)
    assert mirror.sync_audit(audit) == 4
    wiper = redis.Redis.from_url(own_redis.url)
    try:
        wiper.flushdb()
        assert mirror.sync_audit(audit) == 4
        assert audit_stream(wiper) == lines
    finally:
        wiper.close()


def test_the_password_never_reaches_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="blueprint.mirror")
    mirror = RedisMirror(f"redis://user:s3cr3t-pw@127.0.0.1:{free_port()}/0", NAME)
    mirror.publish_ledger(ledger(1))
    assert mirror.failures == 1
    assert "unavailable" in caplog.text
    for text in (caplog.text, repr(mirror), mirror.location, json.dumps(mirror.health())):
        assert "s3cr3t-pw" not in text


def test_a_password_protected_redis_is_mirrored_and_a_wrong_password_is_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="blueprint.mirror")
    server = OwnRedis(tmp_path, password="right-horse-battery")
    server.start()
    try:
        RedisMirror(server.url, NAME).publish_ledger(ledger(4))
        assert RedisMirror(server.url, NAME).health()["synced_revision"] == 4
        wrong = RedisMirror(server.url.replace("right", "wrong"), NAME)
        assert wrong.fetch_ledger() is None
        assert wrong.failures == 1
    finally:
        server.stop()
    assert "unavailable" in caplog.text
    assert "horse" not in caplog.text


@pytest.mark.parametrize(
    "url", ["redis://:pa/ss-w0rd@host:6379/0", "http://127.0.0.1:6379", "redis://h:port/0"]
)
def test_a_malformed_url_is_a_config_error_that_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RedisMirror(url, NAME)
    assert "REDIS_URL" in raised.value.message
    assert "pa" not in raised.value.message.replace("password", "")


def test_open_mirror_is_off_without_a_url_and_redis_with_one(redis_db: str) -> None:
    assert isinstance(open_mirror(None, NAME), NullMirror)
    assert isinstance(open_mirror("", NAME), NullMirror)
    mirror = open_mirror(redis_db, NAME)
    assert isinstance(mirror, RedisMirror)
    assert mirror.backend == "redis"
