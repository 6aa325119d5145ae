"""The Redis mirror of the ledger and the audit log.

Why a mirror: ledger.json lives on the machine's disk, which a PaaS may wipe on redeploy
and an operator may damage. With REDIS_URL set, every ledger write and audit entry is
copied to Redis under `lunara:<name>:`, so a lost ledger can be rebuilt and other
machines can watch the bot.

Keys:

- `lunara:<name>:ledger` — the whole ledger document as JSON. A Lua compare-and-set
  replaces it only when the new revision is higher (one round trip), so writers racing
  or arriving late can never roll it back.
- `lunara:<name>:events` — stream of ledger events, capped near 1,000 entries.
- `lunara:<name>:audit` — stream of audit.jsonl lines, capped near 10,000 entries.
- `lunara:<name>:audit:synced_offset` — how many bytes of audit.jsonl the stream holds.

Redis is optional and must never hurt a command: every call has short connect and
operation timeouts, never retries, and never raises. After a failure the mirror stays
quiet for a cool-off (5 s, doubling up to 60 s while Redis stays down) instead of paying
the timeout on every call, so a command spends at most about one timeout on a dead Redis.

Catching up when Redis returns:

- The ledger: every publish carries the whole document, and the highest revision wins.
  A document that could not be published is kept and sent before the next call that
  reaches Redis, so the mirror catches up without waiting for the next ledger write.
- The audit: audit.jsonl is the source of truth. Given the file (`audit_path`),
  `append_audit` does not send the entry it is handed; it ships every complete line past
  the synced offset — normally just the new line, after an outage the backlog — and moves
  the offset in the same Lua script that adds them (compare-and-set on the offset), so
  each line reaches the stream once even when several processes sync at the same time.
  This relies on AuditLog appending the line to the file before calling `append_audit`.
  A file shorter than the synced offset has been replaced, and is shipped from its start.
  If Redis loses its data, the offset starts again at zero and the backlog is re-sent
  (the stream's cap keeps the newest entries).
- Ledger events lost while Redis was down are not re-sent: the ledger document keeps
  the last 100 of them and is itself caught up.

The Redis URL's password is never logged, stored or shown: only the redacted location.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from blueprint.errors import ConfigError
from blueprint.jsonvalues import is_int
from blueprint.units import MIB

if TYPE_CHECKING:
    import redis


T = TypeVar("T")

KEY_PREFIX = "lunara"
EVENTS_MAX_LENGTH = 1_000
AUDIT_MAX_LENGTH = 10_000
COOL_OFF_S = 5.0
COOL_OFF_MAX_S = 60.0
# A backlog (after Redis lost its data: the whole file) is read and sent a batch per
# round trip. Small batches keep the memory the resend takes small: in the bot, 256 KiB
# batches left its RSS about 1 MiB higher for good (bench/audit_resync.py).
AUDIT_BATCH_BYTES = 32 * 1024
AUDIT_BYTES_PER_CALL = 5 * MIB  # one sync's share of a backlog; the rest comes next call
AUDIT_BATCHES_PER_CALL = AUDIT_BYTES_PER_CALL // AUDIT_BATCH_BYTES

# Replace the mirrored ledger only with a higher revision; reply with the revision kept.
LEDGER_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    local stored = tonumber(decoded['revision'])
    if stored and stored >= tonumber(ARGV[2]) then
      return stored
    end
    local holder = redis.call('HMGET', KEYS[2], 'host', 'home')
    if stored and holder[1] and holder[1] == decoded['host'] and holder[2] == decoded['home']
        and (holder[1] ~= ARGV[3] or holder[2] ~= ARGV[4]) then
      return stored
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[2])
"""

# (KEYS[2]: the instance lease. The entry of the home whose bot holds it is never
# overwritten by another home's: a standby, or a home refused for its name.)

# Add audit lines and move the synced offset, only if nobody moved it since we read it.
AUDIT_APPEND_FROM_OFFSET = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current ~= tonumber(ARGV[1]) then
  return current
end
for index = 4, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'entry', ARGV[index])
end
redis.call('SET', KEYS[1], ARGV[2])
return tonumber(ARGV[2])
"""


class Mirror(Protocol):
    """Where ledger writes and audit entries are copied. Never raises, never blocks long."""

    backend: str  # "redis" or "off"

    def publish_ledger(self, document: dict[str, Any]) -> None: ...

    def fetch_ledger(self) -> dict[str, Any] | None: ...

    def append_event(self, event: dict[str, Any]) -> None: ...

    def append_audit(self, entry: dict[str, Any]) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def waiting_instance(self) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class NullMirror:
    """The mirror when REDIS_URL is not set: every call is a no-op."""

    backend = "off"

    def publish_ledger(self, document: dict[str, Any]) -> None:
        return None

    def fetch_ledger(self) -> dict[str, Any] | None:
        return None

    def append_event(self, event: dict[str, Any]) -> None:
        return None

    def append_audit(self, entry: dict[str, Any]) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"backend": "off", "healthy": True, "synced_revision": None}

    def waiting_instance(self) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class MirrorKeys:
    """The Redis keys of one bot name, in one place."""

    ledger: str
    events: str
    audit: str
    audit_synced_offset: str
    instance: str
    """The instance lease (`lunara.instance`): which home's bot is the live one."""
    standby: str
    """The last bot to wait for that lease, with a short TTL: host, home, pid."""

    @classmethod
    def for_name(cls, name: str) -> MirrorKeys:
        base = f"{KEY_PREFIX}:{name}"
        return cls(
            ledger=f"{base}:ledger",
            events=f"{base}:events",
            audit=f"{base}:audit",
            audit_synced_offset=f"{base}:audit:synced_offset",
            instance=f"{base}:instance",
            standby=f"{base}:instance:standby",
        )


def redact_url(url: str) -> str:
    """Where a Redis URL points, without credentials, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "(an unparseable Redis URL)"
    database = parts.path.lstrip("/") or "0"
    return f"{parts.scheme}://{host}:{port}/{database}"


class _Unavailable(Exception):
    """Redis did not answer, or we are cooling off after it did not."""


class RedisMirror:
    """The mirror in Redis: short timeouts, no retries, a cool-off after a failure."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        name: str,
        connect_timeout_s: float = 0.3,
        op_timeout_s: float = 0.5,
        *,
        audit_path: Path | None = None,
        cool_off_s: float = COOL_OFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.keys = MirrorKeys.for_name(name)
        self.location = redact_url(url)
        self.audit_path = audit_path
        self.cool_off_s = cool_off_s
        self.attempts = 0  # round trips tried; a dead Redis during cool-off adds none
        self.failures = 0
        self.synced_revision: int | None = None
        self._clock = clock
        self._resume_at = 0.0
        self._current_cool_off_s = cool_off_s
        self._pending_ledger: dict[str, Any] | None = None
        self._redis_errors: tuple[type[Exception], ...] = (redis.RedisError, OSError, ValueError)
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=op_timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except (ValueError, TypeError):
            # The parser's message may quote part of the URL, password included.
            raise ConfigError(
                "REDIS_URL is not a valid Redis URL "
                "(expected redis://[user:password@]host:port/db, rediss://... or unix://...)"
            ) from None

    def __repr__(self) -> str:
        return f"RedisMirror({self.location!r}, {self.keys.ledger!r})"

    def publish_ledger(self, document: dict[str, Any]) -> None:
        """Copy a ledger revision; a failed copy is retried before the next call."""
        self._pending_ledger = document
        try:
            self._flush_ledger()
        except _Unavailable:
            return

    def fetch_ledger(self) -> dict[str, Any] | None:
        """The mirrored ledger document, unvalidated (the ledger validates it)."""
        try:
            raw = self._call(lambda client: client.get(self.keys.ledger))
        except _Unavailable:
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def append_event(self, event: dict[str, Any]) -> None:
        payload = json.dumps(event, default=str)
        try:
            self._call(
                lambda client: client.xadd(
                    self.keys.events,
                    {"event": payload},
                    maxlen=EVENTS_MAX_LENGTH,
                    approximate=True,
                )
            )
        except _Unavailable:
            return

    def append_audit(self, entry: dict[str, Any]) -> None:
        """Mirror an audit entry: from the file when we know it, so nothing is lost."""
        if self.audit_path is not None:
            self.sync_audit(self.audit_path)
            return
        payload = json.dumps(entry, default=str)
        try:
            self._call(
                lambda client: client.xadd(
                    self.keys.audit, {"entry": payload}, maxlen=AUDIT_MAX_LENGTH, approximate=True
                )
            )
        except _Unavailable:
            return

    def sync_audit(self, path: Path) -> int:
        """Ship the lines of `path` the stream does not hold yet; return how many were sent."""
        sent = 0
        try:
            raw_offset = self._call(lambda client: client.get(self.keys.audit_synced_offset))
            offset = _parse_offset(raw_offset)
            for _ in range(AUDIT_BATCHES_PER_CALL):
                batch = _read_complete_lines(path, offset)
                if batch is None:
                    return sent
                end, lines = batch
                kept = int(self._call(_append_audit_lines(self.keys, offset, end, lines)))
                if kept == end:
                    sent += len(lines)
                offset = kept
        except _Unavailable:
            return sent
        return sent

    def health(self) -> dict[str, Any]:
        try:
            raw = self._call(lambda client: client.get(self.keys.ledger))
        except _Unavailable:
            return {"backend": self.backend, "healthy": False, "synced_revision": None}
        self.synced_revision = _revision_of(raw)
        return {"backend": self.backend, "healthy": True, "synced_revision": self.synced_revision}

    def waiting_instance(self) -> dict[str, Any] | None:
        """A bot of this name waiting for the instance lease (in another home), if any."""
        try:
            raw = self._call(lambda client: client.hgetall(self.keys.standby))
        except _Unavailable:
            return None
        if not isinstance(raw, dict) or not raw:
            return None
        fields = {
            (key.decode() if isinstance(key, bytes) else str(key)): (
                value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            )
            for key, value in raw.items()
        }
        pid = fields.get("pid", "")
        return {
            "host": fields.get("host", "?"),
            "home": fields.get("home", "?"),
            "pid": int(pid) if pid.isdigit() else None,
        }

    def close(self) -> None:
        """Release the client's connections (a long-running owner, such as the bot)."""
        self._client.close()

    def _flush_ledger(self) -> None:
        document = self._pending_ledger
        if document is None:
            return
        revision = document.get("revision")
        if not is_int(revision):
            self._pending_ledger = None  # not a ledger revision: nothing worth mirroring
            return
        payload = json.dumps(document, default=str)
        host, home = str(document.get("host")), str(document.get("home"))
        kept = self._call(
            lambda client: client.eval(
                LEDGER_COMPARE_AND_SET,
                2,
                self.keys.ledger,
                self.keys.instance,
                payload,
                revision,
                host,
                home,
            ),
            catch_up=False,
        )
        self.synced_revision = int(kept)
        if self._pending_ledger is document:
            self._pending_ledger = None

    def _call(self, operation: Callable[[redis.Redis], T], *, catch_up: bool = True) -> T:
        """One round trip, or `_Unavailable` at once while cooling off after a failure."""
        if self._clock() < self._resume_at:
            raise _Unavailable
        if catch_up and self._pending_ledger is not None:
            self._flush_ledger()
        self.attempts += 1
        try:
            result = operation(self._client)
        except self._redis_errors as error:
            self.failures += 1
            self._resume_at = self._clock() + self._current_cool_off_s
            import logging

            logging.getLogger(__name__).info(
                "Redis mirror at %s unavailable (%s: %s); not trying again for %g s",
                self.location,
                type(error).__name__,
                error,
                self._current_cool_off_s,
            )
            self._current_cool_off_s = min(self._current_cool_off_s * 2, COOL_OFF_MAX_S)
            raise _Unavailable from None
        self._current_cool_off_s = self.cool_off_s
        return result


def _parse_offset(raw: object) -> int:
    try:
        value = int(raw) if isinstance(raw, bytes | str | int) else 0
    except ValueError:
        return 0
    return max(value, 0)


def _revision_of(raw: object) -> int | None:
    if not isinstance(raw, bytes | str):
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    revision = data.get("revision") if isinstance(data, dict) else None
    return revision if is_int(revision) else None


def _read_complete_lines(path: Path, offset: int) -> tuple[int, list[bytes]] | None:
    """Whole lines of `path` from `offset` (from 0 if the file is now shorter), or None."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            start = offset if offset <= size else 0
            handle.seek(start)
            chunk = handle.readlines(AUDIT_BATCH_BYTES)
    except OSError:
        return None
    if chunk and not chunk[-1].endswith(b"\n"):
        chunk.pop()  # a line still being written: next time
    if not chunk:
        return None
    end = start + sum(len(line) for line in chunk)
    lines = [line.rstrip(b"\r\n") for line in chunk]
    return end, [line for line in lines if line.strip()]


def _append_audit_lines(
    keys: MirrorKeys, expected_offset: int, new_offset: int, lines: list[bytes]
) -> Callable[[redis.Redis], Any]:
    def operation(client: redis.Redis) -> Any:
        return client.eval(
            AUDIT_APPEND_FROM_OFFSET,
            2,
            keys.audit_synced_offset,
            keys.audit,
            expected_offset,
            new_offset,
            AUDIT_MAX_LENGTH,
            *lines,
        )

    return operation


def open_mirror(redis_url: str | None, name: str, audit_path: Path | None = None) -> Mirror:
    """The mirror for this configuration: Redis when REDIS_URL is set, otherwise none."""
    if not redis_url:
        return NullMirror()
    return RedisMirror(redis_url, name, audit_path=audit_path)
