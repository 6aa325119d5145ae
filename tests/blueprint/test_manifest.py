"""Manifest loading, validation and the deny-by-default RBAC decisions."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blueprint.errors import ConfigError, ExitCode
from blueprint.locations import resolve_manifest
from blueprint.manifest import (
    DEFAULT_MANIFEST_PATH,
    ControlSocket,
    Grant,
    Manifest,
    ManifestError,
    Permission,
    PrincipalKind,
    ProgramSpec,
    RestartPolicy,
    is_principal,
    load_manifest,
    parse_manifest_text,
    permission_matches,
    role_allows,
    validate_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
CI_TOKEN = "ci-token-for-tests-only"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def valid_document() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "lunara",
        "program": {
            "command": ["python", "-m", "lunara"],
            "stop_timeout_s": 10,
            "restart": {
                "backoff_initial_s": 1,
                "backoff_max_s": 60,
                "max_restarts": 5,
                "window_s": 300,
            },
            "memory_limit_mib": 450,
            "heartbeat_timeout_s": 60,
        },
        "roles": {
            "owner": ["*"],
            "operator": ["bot.start", "bot.stop", "bot.restart", "bot.status", "bot.logs"],
            "ci": ["bot.start", "bot.stop", "bot.restart", "bot.status"],
            "admin": ["tg.admin.*", "tg.trade.*", "tg.info.*"],
            "trader": ["tg.trade.*", "tg.info.*"],
        },
        "principals": {
            "os_user:root": "owner",
            "os_user:deploy": {"role": "operator"},
            "token:ci": {"role": "ci", "sha256": sha256(CI_TOKEN)},
            "telegram:123456789": "admin",
        },
        "defaults": {"telegram": "trader"},
    }


def write(path: Path, document: Any, mode: int = 0o644) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    path.chmod(mode)
    return path


def problems_of(document: Any) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        validate_manifest(document)
    return caught.value.problems


_SEGMENT = r'(?:[A-Za-z0-9_:@.$*-]+|"(?:[^"\\]|\\.)*")'
_FIELD_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*(?:\[\d+\])?: \S")


def names_a_field(problem: str) -> bool:
    """Whether a problem reads "field.path: what is wrong", on one line."""
    return "\n" not in problem and _FIELD_PATH.match(problem) is not None


# --- loading -------------------------------------------------------------------------------


def test_a_valid_manifest_loads_with_every_field(tmp_path: Path) -> None:
    path = write(tmp_path / "manifest.json", valid_document())
    manifest = load_manifest(path)
    assert manifest.version == 1
    assert manifest.name == "lunara"
    assert manifest.source == path
    assert manifest.program == ProgramSpec(
        command=("python", "-m", "lunara"),
        stop_timeout_s=10.0,
        restart=RestartPolicy(1.0, 60.0, 5, 300.0, 60.0),
        memory_limit_mib=450.0,
        heartbeat_timeout_s=60.0,
    )
    assert manifest.roles["admin"] == ("tg.admin.*", "tg.trade.*", "tg.info.*")
    assert manifest.principals["os_user:root"] == Grant("owner")
    assert manifest.principals["os_user:deploy"] == Grant("operator")
    assert manifest.principals["token:ci"] == Grant("ci", sha256(CI_TOKEN))
    assert manifest.defaults == {"telegram": "trader"}


def test_optional_program_fields_take_their_defaults() -> None:
    document = valid_document()
    document["program"] = {"command": ["bot"]}
    del document["defaults"]
    manifest = validate_manifest(document)
    assert manifest.program == ProgramSpec(command=("bot",))
    assert manifest.program.restart.healthy_after_s == 60.0
    assert manifest.defaults == {}


def test_the_projects_own_manifest_is_valid_and_holds_no_token(tmp_path: Path) -> None:
    copied = write(tmp_path / "manifest.json", (ROOT / "manifest.json").read_text())
    manifest = load_manifest(copied)
    assert manifest.role_of("os_user:root") == "owner"
    assert set(manifest.roles) == {"owner", "operator", "ci", "admin", "trader"}
    assert manifest.defaults == {"telegram": "trader"}
    assert not any(grant.sha256 for grant in manifest.principals.values())


def test_manifest_error_is_a_config_error_with_exit_6() -> None:
    error = ManifestError.invalid(None, ["version: must be 1"])
    assert isinstance(error, ConfigError)
    assert error.exit_code == ExitCode.INVALID_CONFIG
    assert "version: must be 1" in error.message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(version=2), "version: must be 1"),
        (lambda d: d.update(version=True), "version: must be 1"),
        (lambda d: d.update(name="Lunara Bot"), "name: must be"),
        (lambda d: d.update(name="x" * 41), "name: must be"),
        (lambda d: d.update(extra=1), "extra: unknown field"),
        (lambda d: d.pop("roles"), "roles: missing"),
        (lambda d: d["program"].update(command=[]), "program.command: must be a non-empty list"),
        (lambda d: d["program"].update(command="python"), "program.command: must be"),
        (lambda d: d["program"].update(command=["python", 3]), "program.command: must be"),
        (lambda d: d["program"].pop("command"), "program.command: missing"),
        (lambda d: d["program"].update(stop_timeout_s=0), "program.stop_timeout_s: must be"),
        (
            lambda d: d["program"].update(memory_limit_mib="450"),
            "program.memory_limit_mib: must be",
        ),
        (
            lambda d: d["program"].update(heartbeat_timeout_s=-1),
            "program.heartbeat_timeout_s: must",
        ),
        (lambda d: d["program"].update(stop_timout_s=1), "program.stop_timout_s: unknown field"),
        (lambda d: d["program"].update(restart=[]), "program.restart: must be an object"),
        (
            lambda d: d["program"]["restart"].update(max_restarts=-1),
            "program.restart.max_restarts: must be an integer >= 1",
        ),
        (
            lambda d: d["program"]["restart"].update(max_restarts=2.5),
            "program.restart.max_restarts: must be an integer >= 1",
        ),
        (
            lambda d: d["program"]["restart"].update(backoff_initial_s=120),
            "program.restart.backoff_initial_s: must be <= backoff_max_s",
        ),
        (lambda d: d["program"]["restart"].update(window_s=0), "program.restart.window_s: must"),
        (
            lambda d: d["program"]["restart"].update(healthy_after_s=False),
            "program.restart.healthy_after_s: must",
        ),
        (lambda d: d.update(roles=["owner"]), "roles: must be an object"),
        (lambda d: d["roles"].update(Owner=["*"]), "roles.Owner: role names must be"),
        (lambda d: d["roles"].update(owner="*"), "roles.owner: must be a list"),
        (
            lambda d: d["roles"].update(owner=["bot.*.start"]),
            "roles.owner[0]: must be a permission",
        ),
        (lambda d: d["roles"].update(owner=["bot."]), "roles.owner[0]: must be a permission"),
        (
            lambda d: d["principals"].update({"telegram:@bob": "trader"}),
            "principals.telegram:@bob: telegram principals must be numeric ids",
        ),
        (
            lambda d: d["principals"].update({"root": "owner"}),
            "principals.root: principals must be",
        ),
        (
            lambda d: d["principals"].update({"os_user:root": "god"}),
            'principals.os_user:root: role "god"',
        ),
        (
            lambda d: d["principals"].update({"os_user:root": 1}),
            "principals.os_user:root: the role must",
        ),
        (
            lambda d: d["principals"].update({"os_user:root": {"role": "owner", "x": 1}}),
            "principals.os_user:root.x: unknown field",
        ),
        (
            lambda d: d["principals"].update({"token:ci": "ci"}),
            "principals.token:ci: token principals",
        ),
        (
            lambda d: d["principals"]["token:ci"].update(sha256="ABC"),
            "principals.token:ci.sha256: must be 64 lowercase hex",
        ),
        (
            lambda d: d["principals"]["token:ci"].update(role="nobody"),
            'principals.token:ci.role: role "nobody" is not defined',
        ),
        (lambda d: d["defaults"].update(telegram="nobody"), 'defaults.telegram: role "nobody"'),
        (lambda d: d["defaults"].update(os_user="owner"), "defaults.os_user: only these principal"),
        (lambda d: d.update(defaults=["trader"]), "defaults: must be an object"),
    ],
)
def test_each_invalid_field_is_named(
    mutate: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    document = valid_document()
    mutate(document)
    problems = problems_of(document)
    assert any(problem.startswith(expected) for problem in problems), problems
    assert all(names_a_field(problem) for problem in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    document = valid_document()
    document["version"] = 3
    document["program"]["restart"]["max_restarts"] = 0
    document["principals"]["telegram:@bob"] = "trader"
    with pytest.raises(ManifestError) as caught:
        validate_manifest(document)
    assert len(caught.value.problems) == 3
    for field in ("version", "program.restart.max_restarts", "principals.telegram:@bob"):
        assert f"{field}: " in caught.value.message


def test_a_sha256_value_is_never_echoed_in_the_error() -> None:
    document = valid_document()
    document["principals"]["token:ci"]["sha256"] = CI_TOKEN  # a raw token pasted by mistake
    with pytest.raises(ManifestError) as caught:
        validate_manifest(document)
    assert CI_TOKEN not in caught.value.message


def test_invalid_json_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "manifest.json", '{\n  "version": 1,\n  "name": "x",,\n}')
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert len(caught.value.problems) == 1
    assert "line 3, column" in caught.value.problems[0]
    assert str(path) in caught.value.message


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest_text('{"principals": {"os_user:a": "owner", "os_user:a": "ci"}}')
    assert caught.value.problems == ['json: duplicate key "os_user:a" (each key may appear once)']


def test_a_missing_file_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "manifest.json"
    with pytest.raises(ManifestError) as caught:
        load_manifest(missing)
    assert str(missing) in caught.value.message
    assert "not found" in caught.value.message


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"name": "\xff"}')
    path.chmod(0o600)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.problems[0].startswith("file: not UTF-8")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620, 0o602])
def test_a_group_or_world_writable_manifest_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "manifest.json", valid_document(), mode)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.exit_code == ExitCode.INVALID_CONFIG
    assert "writable" in caught.value.message
    assert f"chmod go-w {path}" in caught.value.message


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400, 0o640])
def test_a_manifest_only_its_owner_may_write_is_accepted(tmp_path: Path, mode: int) -> None:
    assert load_manifest(write(tmp_path / "manifest.json", valid_document(), mode)).name == "lunara"


def test_the_manifest_path_is_explicit_then_environment_then_default() -> None:
    environ = {"LUNARA_MANIFEST": "/etc/lunara/manifest.json"}
    assert resolve_manifest("/srv/m.json", environ) == Path("/srv/m.json")
    assert resolve_manifest(None, environ) == Path("/etc/lunara/manifest.json")
    assert resolve_manifest(None, {}) == DEFAULT_MANIFEST_PATH == Path("manifest.json")


# --- fuzzing -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def field_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(field_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths.extend(field_paths(child, (*prefix, index)))
    return paths


FIELD_PATHS = field_paths(valid_document())


def assert_manifest_or_named_error(run: Callable[[], Manifest]) -> None:
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        manifest = run()
    except ManifestError as error:
        assert error.problems  # noqa: PT017
        assert all(names_a_field(problem) for problem in error.problems), error.problems  # noqa: PT017
    else:
        assert isinstance(manifest, Manifest)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(FIELD_PATHS), value=json_values)
def test_any_value_in_any_field_gives_a_manifest_or_a_named_error(
    path: tuple[Any, ...], value: Any
) -> None:
    document = copy.deepcopy(valid_document())
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    text = json.dumps(document)  # also through the JSON parser, NaN and all
    assert_manifest_or_named_error(lambda: parse_manifest_text(text))


@settings(max_examples=200)
@given(
    key=st.text(max_size=20),
    value=json_values,
    where=st.sampled_from(["", "program", "roles", "principals", "defaults"]),
)
def test_any_added_key_gives_a_manifest_or_a_named_error(key: str, value: Any, where: str) -> None:
    document = valid_document()
    (document[where] if where else document)[key] = value
    assert_manifest_or_named_error(lambda: validate_manifest(document))


@settings(max_examples=200)
@given(document=json_values)
def test_junk_documents_give_a_named_error(document: Any) -> None:
    assert_manifest_or_named_error(lambda: parse_manifest_text(json.dumps(document)))


@settings(max_examples=200)
@given(text=st.text(max_size=60))
def test_junk_text_gives_a_named_error(text: str) -> None:
    assert_manifest_or_named_error(lambda: parse_manifest_text(text))


def test_pathological_json_gives_a_named_error() -> None:
    for text in ("[" * 100_000, "1" * 5000, '{"version": 1e999}'):
        assert_manifest_or_named_error(partial(parse_manifest_text, text))


# --- permission matching -------------------------------------------------------------------

segments = st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True)
names = st.lists(segments, min_size=1, max_size=4).map(".".join)


@given(permission=names)
def test_star_alone_matches_every_permission(permission: str) -> None:
    assert permission_matches("*", permission)


@given(prefix=names, rest=names)
def test_a_trailing_wildcard_matches_everything_below_its_prefix(prefix: str, rest: str) -> None:
    assert permission_matches(f"{prefix}.*", f"{prefix}.{rest}")


@given(prefix=names)
def test_a_trailing_wildcard_does_not_match_its_prefix_itself(prefix: str) -> None:
    assert not permission_matches(f"{prefix}.*", prefix)


@given(prefix=names, other=names)
def test_a_trailing_wildcard_matches_only_below_its_prefix(prefix: str, other: str) -> None:
    expected = other.startswith(prefix + ".")
    assert permission_matches(f"{prefix}.*", other) == expected


@given(pattern=names, permission=names)
def test_a_pattern_without_wildcard_matches_exactly(pattern: str, permission: str) -> None:
    assert permission_matches(pattern, permission) == (pattern == permission)
    assert permission_matches(pattern, pattern)


def test_wildcard_examples() -> None:
    assert permission_matches("tg.trade.*", "tg.trade.open")
    assert permission_matches("tg.trade.*", "tg.trade.stop.move")
    assert not permission_matches("tg.trade.*", "tg.trade")
    assert not permission_matches("tg.trade.*", "tg.trade.")
    assert not permission_matches("tg.trade.*", "tg.trader.open")
    assert not permission_matches("bot.start", "bot.starts")


@pytest.mark.parametrize("permission", ["", "BOT.START", "bot..start", "bot.*", "*", " bot.start"])
def test_a_malformed_permission_is_refused_even_to_star(permission: str) -> None:
    assert not role_allows(("*",), permission)


# --- decisions -----------------------------------------------------------------------------


@pytest.fixture
def manifest() -> Manifest:
    return validate_manifest(valid_document())


def test_principals_get_exactly_their_roles_permissions(manifest: Manifest) -> None:
    assert manifest.allows("os_user:root", "bot.anything")
    assert manifest.allows("os_user:deploy", Permission.STOP)
    assert not manifest.allows("os_user:deploy", Permission.AUDIT)
    assert manifest.allows("token:ci", Permission.RESTART)
    assert not manifest.allows("token:ci", Permission.LOGS)
    assert manifest.allows("telegram:123456789", "tg.admin.ban")


def test_an_unknown_principal_is_refused(manifest: Manifest) -> None:
    assert manifest.role_of("os_user:mallory") is None
    assert not manifest.allows("os_user:mallory", Permission.STATUS)
    assert not manifest.allows("token:other", Permission.STATUS)


@pytest.mark.parametrize(
    "principal",
    ["telegram:@bob", "telegram:0", "telegram:-5", "root", "", "x:1", "telegram", "telegram:"],
)
def test_a_malformed_principal_gets_no_role_not_even_a_default(
    manifest: Manifest, principal: str
) -> None:
    assert manifest.role_of(principal) is None
    assert not manifest.allows(principal, "tg.info.price")


def test_an_unknown_permission_is_refused(manifest: Manifest) -> None:
    assert not manifest.allows("os_user:deploy", "bot.self_destruct")
    assert not manifest.allows("telegram:42", "tg.admin.ban")


@pytest.mark.parametrize(
    "patterns",
    [["*"], ["tg.*"], ["tg.admin.*"], ["tg.info.*", "tg.admin.refund"], ["tg.admin.later"]],
)
def test_a_default_telegram_role_that_grants_admin_commands_is_a_manifest_error(
    patterns: list[str],
) -> None:
    document = valid_document()
    document["roles"]["everyone"] = patterns
    document["defaults"] = {"telegram": "everyone"}
    problems = problems_of(document)
    assert any(
        problem.startswith('defaults.telegram: role "everyone" grants admin commands')
        for problem in problems
    ), problems


def test_a_default_telegram_role_without_admin_commands_is_accepted() -> None:
    document = valid_document()
    document["roles"]["everyone"] = ["tg.info.*", "tg.trade.*", "tg.administer"]
    document["defaults"] = {"telegram": "everyone"}
    manifest = validate_manifest(document)
    assert manifest.allows("telegram:42", Permission.TG_BUY)
    assert not manifest.allows("telegram:42", Permission.TG_BROADCAST)


def test_an_unknown_role_is_refused() -> None:
    # Loading never lets this happen; a hand-built manifest must still deny.
    manifest = Manifest(
        version=1,
        name="x",
        program=ProgramSpec(command=("bot",)),
        roles={"owner": ("*",)},
        principals={"os_user:root": Grant("ghost")},
        defaults={"telegram": "ghost"},
    )
    assert not manifest.allows("os_user:root", Permission.STATUS)
    assert not manifest.allows("telegram:7", "tg.info.price")


kinds = st.sampled_from([kind.value for kind in PrincipalKind])
well_formed_rest = {
    PrincipalKind.OS_USER: st.from_regex(r"[a-z_][a-z0-9_-]{0,30}", fullmatch=True),
    PrincipalKind.TOKEN: segments,
    PrincipalKind.TELEGRAM: st.integers(1, 10**19).map(str),
}


@given(text=st.text(st.characters(blacklist_characters=":"), max_size=20))
def test_text_without_a_colon_is_no_principal(text: str) -> None:
    assert not is_principal(text)


@given(kind=st.text(st.characters(blacklist_characters=":"), max_size=12), rest=names)
def test_a_principal_of_no_known_kind_is_none(kind: str, rest: str) -> None:
    if kind not in set(PrincipalKind):
        assert not is_principal(f"{kind}:{rest}")


@given(data=st.data(), kind=st.sampled_from(list(PrincipalKind)))
def test_a_known_kind_with_a_well_formed_name_is_a_principal(
    data: st.DataObject, kind: PrincipalKind
) -> None:
    rest = data.draw(well_formed_rest[kind])
    assert is_principal(f"{kind}:{rest}")
    assert not is_principal(f"{kind}:{rest}:{rest}")


def test_a_hand_built_grant_for_a_principal_of_no_known_kind_grants_nothing() -> None:
    # Loading refuses such a principal; a manifest built in code must still deny it.
    manifest = Manifest(
        version=1,
        name="x",
        program=ProgramSpec(command=("bot",)),
        roles={"owner": ("*",)},
        principals={"group:wheel": Grant("owner"), "os_user:root": Grant("owner")},
    )
    assert manifest.role_of("group:wheel") is None
    assert not manifest.allows("group:wheel", Permission.STOP)
    assert manifest.allows("os_user:root", Permission.STOP)


def test_unlisted_telegram_users_get_the_default_role(manifest: Manifest) -> None:
    assert manifest.role_of("telegram:42") == "trader"
    assert manifest.allows("telegram:42", "tg.trade.open")
    assert not manifest.allows("telegram:42", "tg.admin.ban")


def test_without_a_default_unlisted_telegram_users_are_refused() -> None:
    document = valid_document()
    del document["defaults"]
    manifest = validate_manifest(document)
    assert manifest.role_of("telegram:42") is None
    assert not manifest.allows("telegram:42", "tg.info.price")
    assert manifest.allows("telegram:123456789", "tg.info.price")


def test_a_matching_token_names_its_principal(manifest: Manifest) -> None:
    assert manifest.principal_for_token(CI_TOKEN) == "token:ci"


@pytest.mark.parametrize("token", ["", "ci", CI_TOKEN + " ", CI_TOKEN.upper(), sha256(CI_TOKEN)])
def test_a_token_that_does_not_match_names_no_principal(manifest: Manifest, token: str) -> None:
    assert manifest.principal_for_token(token) is None


def test_a_token_with_undecodable_bytes_names_no_principal(manifest: Manifest) -> None:
    assert manifest.principal_for_token("\udcff-from-a-raw-environment") is None


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ({"group": "ops", "mode": "0666"}, 'control.mode: must be "0600"'),
        ({"mode": "0660"}, 'control.mode: "0660" needs a control.group'),
        ({"group": "not a group"}, "control.group: must be a group name"),
        ({"owner": "ops"}, "control.owner: unknown field"),
    ],
)
def test_an_invalid_control_socket_is_named(control: dict[str, Any], expected: str) -> None:
    document = valid_document()
    document["control"] = control
    problems = problems_of(document)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_the_control_socket_is_the_owners_alone_unless_a_group_is_named() -> None:
    assert validate_manifest(valid_document()).control == ControlSocket(None, 0o600)
    document = valid_document()
    document["control"] = {"group": "ops"}
    assert validate_manifest(document).control == ControlSocket("ops", 0o660)
