"""Who the CLI and Telegram callers are, as principals the manifest knows."""

from __future__ import annotations

import hashlib
import os
import pwd
from typing import Any

import pytest

from blueprint.identity import (
    UnknownToken,
    cli_principal,
    os_user_principal,
    principal_for,
    telegram_principal,
)
from blueprint.manifest import Manifest, validate_manifest

CI_TOKEN = "ci-token-for-tests-only"


@pytest.fixture
def manifest() -> Manifest:
    document: dict[str, Any] = {
        "version": 1,
        "name": "lunara",
        "program": {"command": ["bot"]},
        "roles": {"owner": ["*"], "ci": ["bot.status"], "trader": ["tg.trade.*"]},
        "principals": {
            "os_user:root": "owner",
            "token:ci": {"role": "ci", "sha256": hashlib.sha256(CI_TOKEN.encode()).hexdigest()},
        },
        "defaults": {"telegram": "trader"},
    }
    return validate_manifest(document)


def current_login() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def test_a_matching_token_makes_the_caller_the_token_principal(manifest: Manifest) -> None:
    assert cli_principal(manifest, {"LUNARA_TOKEN": CI_TOKEN}) == "token:ci"


def test_a_token_that_matches_no_principal_is_refused_not_taken_for_the_os_user(
    manifest: Manifest,
) -> None:
    with pytest.raises(UnknownToken, match="matches no token principal"):
        cli_principal(manifest, {"LUNARA_TOKEN": "wrong"})


@pytest.mark.parametrize("environ", [{}, {"LUNARA_TOKEN": ""}])
def test_without_a_token_the_caller_is_the_effective_os_user(
    manifest: Manifest, environ: dict[str, str]
) -> None:
    assert cli_principal(manifest, environ) == f"os_user:{current_login()}"


def test_the_os_user_is_named_by_login() -> None:
    assert os_user_principal(0) == "os_user:root"
    assert os_user_principal() == f"os_user:{current_login()}"


def uid_without_a_passwd_entry() -> int:
    known = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(54_321, 65_000) if uid not in known)


def test_a_uid_without_a_passwd_entry_is_named_by_number() -> None:
    orphan = uid_without_a_passwd_entry()
    assert os_user_principal(orphan) == f"os_user:{orphan}"


def test_without_a_token_the_caller_is_the_os_user_of_the_uid_given(manifest: Manifest) -> None:
    # The watchdog's control socket names its peer's uid; the peer is not the watchdog.
    peer = uid_without_a_passwd_entry()
    assert principal_for(manifest, None, peer) == f"os_user:{peer}"
    assert principal_for(manifest, "", peer) == f"os_user:{peer}"
    assert principal_for(manifest, CI_TOKEN, peer) == "token:ci"


def test_telegram_users_are_named_by_numeric_id(manifest: Manifest) -> None:
    principal = telegram_principal(987654321)
    assert principal == "telegram:987654321"
    assert manifest.role_of(principal) == "trader"
    assert telegram_principal(1) == "telegram:1"


@pytest.mark.parametrize("user_id", [0, -7, True, False, "42", 4.0, None])
def test_a_non_positive_or_non_integer_telegram_id_is_rejected(user_id: Any) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        telegram_principal(user_id)
