"""The role-based manifest: who may do what, and which program the watchdog runs.

What runs is as security-sensitive as who may run it, so both live in one file that
only its owner may write. Loading validates everything up front and reports every
problem at once ("field.path: what is wrong"), so an operator fixes a manifest in one
pass instead of one error per run.

Authorization is deny by default and pure: `Manifest.allows` looks only at the data
loaded here. An unknown principal, an unknown role or a permission no pattern grants
is refused.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from blueprint.errors import ConfigError
from blueprint.jsonvalues import is_int, is_number, kind_of
from blueprint.locations import DEFAULT_MANIFEST
from blueprint.locations import MANIFEST_ENV as MANIFEST_ENV
from blueprint.units import MIB

DEFAULT_MANIFEST_PATH = Path(DEFAULT_MANIFEST)
SUPPORTED_VERSION = 1
MAX_MANIFEST_BYTES = MIB

WILDCARD = "*"
_NAME = re.compile(r"[a-z0-9_-]{1,40}")
_PERMISSION = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PATTERN = re.compile(r"\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?")
_LOGIN = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\$?")
_TELEGRAM_ID = re.compile(r"[1-9][0-9]{0,19}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:@.$*-]+")
_Built = TypeVar("_Built")


class Permission(StrEnum):
    """Every permission the code asks for: the one source of their names.

    A check names a member, never a string, so a misspelt permission is a type error
    and the permission matrix test (tests/lunara/test_permission_matrix.py) can hold
    each CLI verb and each Telegram command to the permission it must need.
    """

    START = "bot.start"
    STOP = "bot.stop"
    RESTART = "bot.restart"
    STATUS = "bot.status"
    LOGS = "bot.logs"
    AUDIT = "bot.audit"
    RUN = "bot.run"
    CONFIG = "bot.config"
    KEYS = "bot.keys"
    BACKUP = "bot.backup"
    RESTORE = "bot.restore"
    ANALYZE = "bot.analyze"
    BACKTEST = "bot.backtest"
    DATA = "bot.data"

    TG_START = "tg.info.start"
    TG_HELP = "tg.info.help"
    TG_STATUS = "tg.info.status"
    TG_PLANS = "tg.info.plans"
    TG_PAYSUPPORT = "tg.info.paysupport"
    TG_TERMS = "tg.info.terms"
    TG_BALANCE = "tg.trade.balance"
    TG_POSITIONS = "tg.trade.positions"
    TG_BUY = "tg.trade.buy"
    TG_SELL = "tg.trade.sell"
    TG_ANALYZE = "tg.trade.analyze"
    TG_SETTINGS = "tg.trade.settings"
    TG_SETKEYS = "tg.trade.setkeys"
    TG_SUBSCRIBE = "tg.trade.subscribe"
    TG_USERS = "tg.admin.users"
    TG_USER = "tg.admin.user"
    TG_BROADCAST = "tg.admin.broadcast"
    TG_PAUSE = "tg.admin.pause"
    TG_RESUME = "tg.admin.resume"
    TG_BOTSTATUS = "tg.admin.botstatus"
    TG_REFUND = "tg.admin.refund"


TELEGRAM_ADMIN_PATTERN = "tg.admin.*"
"""What a default Telegram role may never grant: every stranger who messages the bot
gets the default role, so it must not make them an admin."""


class PrincipalKind(StrEnum):
    """The prefix of a principal string, before the first colon."""

    OS_USER = "os_user"
    TOKEN = "token"
    TELEGRAM = "telegram"


# Only Telegram users may get a role without being named: anyone can message the bot,
# while a default for OS users or tokens would hand the control plane to strangers.
DEFAULTABLE_KINDS = frozenset({PrincipalKind.TELEGRAM})


class ManifestError(ConfigError):
    """The manifest cannot be used; `problems` lists each one as "field.path: problem"."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def invalid(cls, source: Path | None, problems: Sequence[str]) -> ManifestError:
        where = f"manifest {source}" if source is not None else "manifest"
        listing = "\n".join(f"  - {problem}" for problem in problems)
        return cls(f"{where} is invalid:\n{listing}", problems)


@dataclass(frozen=True)
class RestartPolicy:
    """How the watchdog restarts a bot that stopped unexpectedly (see blueprint.backoff)."""

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_restarts: int = 5
    window_s: float = 300.0
    healthy_after_s: float = 60.0


@dataclass(frozen=True)
class ProgramSpec:
    """The supervised program and the limits the watchdog holds it to."""

    command: tuple[str, ...]
    stop_timeout_s: float = 10.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    memory_limit_mib: float = 450.0
    heartbeat_timeout_s: float = 60.0
    environment: tuple[str, ...] = ()
    """Variables passed on from the environment of whoever starts the watchdog, beyond
    the project's own and the system's (see blueprint.envfile.deployment_environment)."""


@dataclass(frozen=True)
class ControlSocket:
    """Who may connect to the watchdog's control socket, like supervisord's `chown` and
    `chmod`: the owner alone by default; with a group, its members too (each then acts
    with the role the manifest gives their `os_user:` principal)."""

    group: str | None = None
    mode: int = 0o600


@dataclass(frozen=True)
class Grant:
    """A principal's entry: its role and, for tokens, the SHA-256 of the raw token."""

    role: str
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. Decisions are pure functions of these fields."""

    version: int
    name: str
    program: ProgramSpec
    roles: Mapping[str, tuple[str, ...]]
    principals: Mapping[str, Grant]
    defaults: Mapping[str, str] = field(default_factory=dict)
    control: ControlSocket = field(default_factory=ControlSocket)
    source: Path | None = None
    sha256: str | None = None
    """The SHA-256 of the file's text, so a running watchdog can say which manifest it
    authorizes with (the file may change after it started)."""

    def role_of(self, principal: str) -> str | None:
        """The principal's role: its own entry first, then the default for its kind."""
        if not is_principal(principal):
            return None
        grant = self.principals.get(principal)
        if grant is not None:
            return grant.role
        kind = principal.split(":", 1)[0]
        if kind in DEFAULTABLE_KINDS:
            return self.defaults.get(kind)
        return None

    def allows(self, principal: str, permission: str) -> bool:
        """Deny by default: only a known principal whose known role grants it may."""
        role = self.role_of(principal)
        if role is None or role not in self.roles:
            return False
        return role_allows(self.roles[role], permission)

    def principal_for_token(self, raw_token: str) -> str | None:
        """The token principal whose hash matches `raw_token`, compared in constant time."""
        if not raw_token:
            return None
        import hashlib  # only token callers pay for OpenSSL
        import hmac

        digest = hashlib.sha256(raw_token.encode("utf-8", "surrogateescape")).hexdigest()
        found: str | None = None
        # Every candidate is compared, so the time taken does not say which one matched.
        for principal, grant in self.principals.items():
            if grant.sha256 is None:
                continue
            if hmac.compare_digest(digest, grant.sha256) and found is None:
                found = principal
        return found


def permission_matches(pattern: str, permission: str) -> bool:
    """`*` matches everything; `a.b.*` matches `a.b.x` and `a.b.x.y` but not `a.b`."""
    if pattern == WILDCARD:
        return True
    if pattern.endswith("." + WILDCARD):
        prefix = pattern[:-1]
        return permission.startswith(prefix) and len(permission) > len(prefix)
    return pattern == permission


def role_allows(patterns: Sequence[str], permission: str) -> bool:
    """Whether any pattern grants `permission`; malformed permission names never pass."""
    if not is_permission_name(permission):
        return False
    return any(permission_matches(pattern, permission) for pattern in patterns)


def is_permission_name(text: str) -> bool:
    return _PERMISSION.fullmatch(text) is not None


def is_permission_pattern(text: str) -> bool:
    return _PATTERN.fullmatch(text) is not None


def is_principal(text: str) -> bool:
    """Whether `text` is a well-formed principal of a known kind."""
    kind, colon, rest = text.partition(":")
    if not colon:
        return False
    if kind == PrincipalKind.OS_USER:
        return _LOGIN.fullmatch(rest) is not None
    if kind == PrincipalKind.TOKEN:
        return _NAME.fullmatch(rest) is not None
    if kind == PrincipalKind.TELEGRAM:
        return _TELEGRAM_ID.fullmatch(rest) is not None
    return False


def load_manifest(path: Path) -> Manifest:
    """Read, check and validate a manifest file; raise ManifestError naming every problem."""
    import dataclasses
    import hashlib

    text = _read_private_file(path)
    manifest = parse_manifest_text(text, source=path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return dataclasses.replace(manifest, sha256=digest)


def parse_manifest_text(text: str, source: Path | None = None) -> Manifest:
    """Parse JSON text and validate it; invalid JSON is one problem with line and column."""
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as duplicate:
        raise ManifestError.invalid(
            source, [f"json: duplicate key {json.dumps(duplicate.key)} (each key may appear once)"]
        ) from None
    except json.JSONDecodeError as error:
        problem = f"json: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        raise ManifestError.invalid(source, [problem]) from None
    except (ValueError, RecursionError) as error:
        # Numbers too long to convert, or nesting too deep to parse.
        raise ManifestError.invalid(source, [f"json: cannot be parsed: {error}"]) from None
    return validate_manifest(document, source)


def validate_manifest(document: object, source: Path | None = None) -> Manifest:
    """Validate a decoded JSON document; collect every problem before raising."""
    problems = _Problems()
    manifest = _validate_document(document, problems, source)
    if problems.items or manifest is None:
        raise ManifestError.invalid(source, problems.items or ["manifest: invalid"])
    return manifest


# --- reading -------------------------------------------------------------------------------


def _read_private_file(path: Path) -> str:
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever; the
        # file type is checked before anything is read, then reads block as usual.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ManifestError(
            f"manifest not found: {path} (pass --manifest PATH, set {MANIFEST_ENV}, "
            f"or create {DEFAULT_MANIFEST_PATH} in the working directory)",
            [f"file: {path} does not exist"],
        ) from None
    except OSError as error:
        raise ManifestError(
            f"cannot read manifest {path}: {error.strerror}",
            [f"file: cannot be read: {error.strerror}"],
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses directories
        os.close(fd)
        raise ManifestError(f"manifest {path} is not a regular file", ["file: not a regular file"])
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ManifestError(
                f"manifest {path} is writable by its group or by others, so they could "
                f"grant themselves any permission or change the program that runs; "
                f"refusing to use it. Fix: chmod go-w {path}",
                ["file: group- or world-writable"],
            )
        _check_trusted(path, info)
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError.invalid(path, [f"file: larger than {MAX_MANIFEST_BYTES} bytes"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError.invalid(
            path, [f"file: not UTF-8 text (bad byte at offset {error.start})"]
        ) from None


def _check_trusted(path: Path, info: os.stat_result) -> None:
    """Refuse a manifest another user owns, or one in a directory others may change
    (they could swap the file for their own): it names the program root would run."""
    from blueprint.trust import UntrustedPath, check_owner_and_mode, check_parents

    try:
        check_owner_and_mode(info, path, "manifest")
        check_parents(path, "manifest")
    except UntrustedPath as error:
        raise ManifestError(error.message, ["file: not owned by you or root"]) from None


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


# --- validation ----------------------------------------------------------------------------

_TOP_LEVEL = ("version", "name", "program", "roles", "principals", "defaults", "control")
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SOCKET_MODES = {"0600": 0o600, "0660": 0o660}
_REQUIRED_TOP_LEVEL = ("version", "name", "program", "roles", "principals")
_PROGRAM_FIELDS = (
    "command",
    "stop_timeout_s",
    "restart",
    "memory_limit_mib",
    "heartbeat_timeout_s",
    "environment",
)
_RESTART_FIELDS = (
    "backoff_initial_s",
    "backoff_max_s",
    "max_restarts",
    "window_s",
    "healthy_after_s",
)


def _segment(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def _path(*segments: str) -> str:
    return ".".join(_segment(segment) for segment in segments)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, problem: str) -> None:
        self.items.append(f"{path}: {problem}")

    def unknown_keys(self, mapping: Mapping[str, Any], allowed: Sequence[str], *where: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.add(_path(*where, key), f"unknown field (allowed: {', '.join(allowed)})")


def _unless_missing(build: Callable[..., _Built], **parts: object) -> _Built | None:
    """`build(**parts)`, or None when a part is None.

    A validator returns None for a part once it has recorded that part's problem, so
    whatever holds the part is left unbuilt too, and the problems are all that is said.
    """
    if any(part is None for part in parts.values()):
        return None
    return build(**parts)


def _positive_number(
    mapping: Mapping[str, Any], key: str, default: float, problems: _Problems, *where: str
) -> float | None:
    if key not in mapping:
        return default
    value = mapping[key]
    if not is_number(value):
        problems.add(_path(*where, key), f"must be a number > 0, not {kind_of(value)}")
        return None
    if not math.isfinite(value) or value <= 0:
        problems.add(_path(*where, key), "must be a finite number > 0")
        return None
    return float(value)


def _validate_document(
    document: object, problems: _Problems, source: Path | None
) -> Manifest | None:
    if not isinstance(document, dict):
        problems.add("manifest", f"must be a JSON object, not {kind_of(document)}")
        return None
    problems.unknown_keys(document, _TOP_LEVEL)
    for key in _REQUIRED_TOP_LEVEL:
        if key not in document:
            problems.add(key, "missing")

    version = document.get("version")
    if "version" in document and (not is_int(version) or version != SUPPORTED_VERSION):
        problems.add("version", f"must be {SUPPORTED_VERSION}")

    name = document.get("name")
    if "name" in document and (not isinstance(name, str) or _NAME.fullmatch(name) is None):
        problems.add("name", "must be 1-40 characters of a-z, 0-9, _ or -")

    program = (
        _validate_program(document.get("program"), problems) if "program" in document else None
    )
    roles = _validate_roles(document.get("roles"), problems) if "roles" in document else None
    # References are checked against the role names even when a role's body is invalid,
    # but not at all when there is no roles object: that would only repeat one mistake.
    raw_roles = document.get("roles")
    role_names = frozenset(raw_roles) if isinstance(raw_roles, dict) else None
    principals = (
        _validate_principals(document.get("principals"), role_names, problems)
        if "principals" in document
        else None
    )
    defaults = _validate_defaults(document.get("defaults", {}), raw_roles, problems)
    control = _validate_control(document.get("control", {}), problems)

    if problems.items:
        return None
    return _unless_missing(
        partial(Manifest, source=source),  # no source is no problem: a manifest from text
        version=SUPPORTED_VERSION,
        name=name,
        program=program,
        roles=roles,
        principals=principals,
        defaults=defaults,
        control=control,
    )


def _validate_control(value: object, problems: _Problems) -> ControlSocket | None:
    if not isinstance(value, dict):
        problems.add("control", f"must be an object, not {kind_of(value)}")
        return None
    problems.unknown_keys(value, ("group", "mode"), "control")
    group = value.get("group")
    if group is not None and (not isinstance(group, str) or _GROUP.fullmatch(group) is None):
        problems.add("control.group", "must be a group name")
        return None
    raw_mode = value.get("mode", "0660" if group is not None else "0600")
    mode = _SOCKET_MODES.get(raw_mode) if isinstance(raw_mode, str) else None
    if mode is None:
        problems.add("control.mode", 'must be "0600" (the owner) or "0660" (and the group)')
        return None
    if mode == 0o660 and group is None:
        problems.add("control.mode", '"0660" needs a control.group')
        return None
    if set(value) - {"group", "mode"}:
        return None
    return ControlSocket(group=group, mode=mode)


def _validate_program(value: object, problems: _Problems) -> ProgramSpec | None:
    if not isinstance(value, dict):
        problems.add("program", f"must be an object, not {kind_of(value)}")
        return None
    problems.unknown_keys(value, _PROGRAM_FIELDS, "program")
    command: tuple[str, ...] | None = None
    raw_command = value.get("command")
    if "command" not in value:
        problems.add("program.command", "missing")
    elif (
        isinstance(raw_command, list)
        and raw_command
        and all(isinstance(part, str) and part for part in raw_command)
    ):
        if any("\0" in part for part in raw_command):
            # No argv can carry a NUL byte: it would pass here and fail at every spawn.
            problems.add("program.command", "must not contain a NUL byte (\\u0000)")
        else:
            command = tuple(raw_command)
    else:
        problems.add("program.command", "must be a non-empty list of non-empty strings")

    defaults = ProgramSpec(command=())
    stop_timeout = _positive_number(
        value, "stop_timeout_s", defaults.stop_timeout_s, problems, "program"
    )
    memory = _positive_number(
        value, "memory_limit_mib", defaults.memory_limit_mib, problems, "program"
    )
    heartbeat = _positive_number(
        value, "heartbeat_timeout_s", defaults.heartbeat_timeout_s, problems, "program"
    )
    restart = _validate_restart(value.get("restart", {}), problems)
    environment = _validate_environment(value.get("environment", []), problems)

    return _unless_missing(
        ProgramSpec,
        command=command,
        stop_timeout_s=stop_timeout,
        restart=restart,
        memory_limit_mib=memory,
        heartbeat_timeout_s=heartbeat,
        environment=environment,
    )


def _validate_environment(value: object, problems: _Problems) -> tuple[str, ...] | None:
    from blueprint.envfile import TOKEN_VARIABLE, is_variable_name

    where = "program.environment"
    if not isinstance(value, list) or not all(
        isinstance(name, str) and is_variable_name(name) for name in value
    ):
        problems.add(where, "must be a list of environment variable names")
        return None
    if TOKEN_VARIABLE in value:
        problems.add(
            where, f"{TOKEN_VARIABLE} is the caller's credential; it never reaches the bot"
        )
        return None
    return tuple(value)


def _validate_restart(value: object, problems: _Problems) -> RestartPolicy | None:
    where = ("program", "restart")
    if not isinstance(value, dict):
        problems.add(_path(*where), f"must be an object, not {kind_of(value)}")
        return None
    problems.unknown_keys(value, _RESTART_FIELDS, *where)
    defaults = RestartPolicy()
    initial = _positive_number(
        value, "backoff_initial_s", defaults.backoff_initial_s, problems, *where
    )
    maximum = _positive_number(value, "backoff_max_s", defaults.backoff_max_s, problems, *where)
    window = _positive_number(value, "window_s", defaults.window_s, problems, *where)
    healthy = _positive_number(value, "healthy_after_s", defaults.healthy_after_s, problems, *where)

    max_restarts: int | None = defaults.max_restarts
    if "max_restarts" in value:
        raw = value["max_restarts"]
        if not is_int(raw) or raw < 1:
            problems.add(_path(*where, "max_restarts"), "must be an integer >= 1")
            max_restarts = None
        else:
            max_restarts = raw

    if initial is not None and maximum is not None and initial > maximum:
        problems.add(_path(*where, "backoff_initial_s"), f"must be <= backoff_max_s ({maximum:g})")
        return None
    return _unless_missing(
        RestartPolicy,
        backoff_initial_s=initial,
        backoff_max_s=maximum,
        max_restarts=max_restarts,
        window_s=window,
        healthy_after_s=healthy,
    )


def _validate_roles(value: object, problems: _Problems) -> dict[str, tuple[str, ...]] | None:
    if not isinstance(value, dict):
        problems.add(
            "roles", f"must be an object of role name to permission list, not {kind_of(value)}"
        )
        return None
    roles: dict[str, tuple[str, ...]] = {}
    ok = True
    for role, patterns in value.items():
        where = _path("roles", role)
        if _NAME.fullmatch(role) is None:
            problems.add(where, "role names must be 1-40 characters of a-z, 0-9, _ or -")
            ok = False
        if not isinstance(patterns, list):
            problems.add(where, f"must be a list of permission patterns, not {kind_of(patterns)}")
            ok = False
            continue
        for index, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not is_permission_pattern(pattern):
                problems.add(
                    f"{where}[{index}]",
                    "must be a permission like bot.start, a pattern like tg.trade.* "
                    "(* only as the last segment), or * alone",
                )
                ok = False
        roles[role] = tuple(pattern for pattern in patterns if isinstance(pattern, str))
    return roles if ok else None


def _check_role(
    role: object, roles: frozenset[str] | None, problems: _Problems, where: str
) -> str | None:
    if not isinstance(role, str) or not role:
        problems.add(where, f"the role must be a role name, not {kind_of(role)}")
        return None
    if roles is not None and role not in roles:
        problems.add(where, f"role {json.dumps(role)} is not defined in roles")
        return None
    return role


def _validate_principals(
    value: object, roles: frozenset[str] | None, problems: _Problems
) -> dict[str, Grant] | None:
    if not isinstance(value, dict):
        problems.add("principals", f"must be an object of principal to role, not {kind_of(value)}")
        return None
    principals: dict[str, Grant] = {}
    ok = True
    for principal, entry in value.items():
        grant = _validate_principal(principal, entry, roles, problems)
        if grant is None:
            ok = False
        else:
            principals[principal] = grant
    return principals if ok else None


def _validate_principal(
    principal: str, entry: object, roles: frozenset[str] | None, problems: _Problems
) -> Grant | None:
    where = _path("principals", principal)
    kind, colon, _ = principal.partition(":")
    if not colon or kind not in set(PrincipalKind):
        problems.add(
            where, "principals must be os_user:<login>, token:<name> or telegram:<numeric id>"
        )
        return None
    if not is_principal(principal):
        if kind == PrincipalKind.TELEGRAM:
            problems.add(where, "telegram principals must be numeric ids")
        elif kind == PrincipalKind.TOKEN:
            problems.add(where, "token names must be 1-40 characters of a-z, 0-9, _ or -")
        else:
            problems.add(where, "not a valid login name")
        return None

    if kind == PrincipalKind.TOKEN:
        return _validate_token_grant(principal, entry, roles, problems)

    if isinstance(entry, dict):
        problems.unknown_keys(entry, ("role",), "principals", principal)
        role = _check_role(
            entry.get("role"), roles, problems, _path("principals", principal, "role")
        )
        if role is None or set(entry) - {"role"}:
            return None
        return Grant(role=role)
    role = _check_role(entry, roles, problems, where)
    return Grant(role=role) if role is not None else None


def _validate_token_grant(
    principal: str, entry: object, roles: frozenset[str] | None, problems: _Problems
) -> Grant | None:
    """A token principal's entry: its role and the SHA-256 of the token, never the token."""
    where = _path("principals", principal)
    if not isinstance(entry, dict):
        problems.add(
            where,
            'token principals must be an object {"role": ..., "sha256": ...} '
            "(the SHA-256 of the token; raw tokens are never stored)",
        )
        return None
    problems.unknown_keys(entry, ("role", "sha256"), "principals", principal)
    role = _check_role(entry.get("role"), roles, problems, _path("principals", principal, "role"))
    digest = entry.get("sha256")
    if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
        # The value is never echoed: it might be a raw token pasted by mistake.
        problems.add(
            _path("principals", principal, "sha256"), "must be 64 lowercase hex characters"
        )
        return None
    if role is None or set(entry) - {"role", "sha256"}:
        return None
    return Grant(role=role, sha256=digest)


def grants_telegram_admin(patterns: Sequence[str]) -> bool:
    """Whether a role's patterns grant any admin command (`*`, `tg.*`, `tg.admin.*`, or
    one `tg.admin.` permission)."""
    admin = [permission for permission in Permission if permission.startswith("tg.admin.")]
    return any(
        pattern.startswith("tg.admin.")
        or any(permission_matches(pattern, permission) for permission in admin)
        for pattern in patterns
    )


def _validate_defaults(
    value: object, raw_roles: object, problems: _Problems
) -> dict[str, str] | None:
    if not isinstance(value, dict):
        problems.add(
            "defaults", f"must be an object of principal kind to role, not {kind_of(value)}"
        )
        return None
    roles = frozenset(raw_roles) if isinstance(raw_roles, dict) else None
    defaults: dict[str, str] = {}
    ok = True
    for kind, role in value.items():
        where = _path("defaults", kind)
        if kind not in DEFAULTABLE_KINDS:
            allowed = ", ".join(sorted(DEFAULTABLE_KINDS))
            problems.add(where, f"only these principal kinds may have a default role: {allowed}")
            ok = False
            continue
        checked = _check_role(role, roles, problems, where)
        if checked is None:
            ok = False
            continue
        patterns = raw_roles.get(checked) if isinstance(raw_roles, dict) else None
        if isinstance(patterns, list) and grants_telegram_admin(
            [pattern for pattern in patterns if isinstance(pattern, str)]
        ):
            # Anyone who messages the bot gets the default role: it would make every
            # stranger an admin (broadcast, refund, pause trading for everyone).
            problems.add(
                where,
                f"role {json.dumps(checked)} grants admin commands ({TELEGRAM_ADMIN_PATTERN} "
                "or *); the default role is every stranger's, so give it to named "
                "telegram:<id> principals instead",
            )
            ok = False
            continue
        defaults[kind] = checked
    return defaults if ok else None
