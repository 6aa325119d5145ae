"""Every CLI command × every role: only allowed commands act; denials exit 4 and are audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import TOKENS, Cli, manifest_document, write_manifest

# command → (CLI arguments, permission it needs)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "status": (("status", "--json"), "bot.status"),
    "logs": (("logs", "--lines", "1"), "bot.logs"),
    "audit": (("audit", "--json"), "bot.audit"),
    "start": (("start", "--wait", "30", "--json"), "bot.start"),
    "restart": (("restart", "--wait", "30", "--json"), "bot.restart"),
    "stop": (("stop", "--json"), "bot.stop"),
    "run": (("run",), "bot.run"),
}

ROLE_PERMISSIONS = {
    "owner": {"*"},
    "operator": {"bot.start", "bot.stop", "bot.restart", "bot.status", "bot.logs", "bot.audit"},
    "ci": {"bot.start", "bot.stop", "bot.restart", "bot.status"},
    "stranger": set(),  # no principal entry, no default for OS users
}


def allowed(role: str, permission: str) -> bool:
    granted = ROLE_PERMISSIONS[role]
    return "*" in granted or permission in granted


@pytest.mark.slow
@pytest.mark.parametrize("role", sorted(ROLE_PERMISSIONS))
def test_each_role_can_run_exactly_its_commands(tmp_path: Path, role: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    token = TOKENS.get(role)  # the stranger presents no token and is os_user:<login>, unknown
    try:
        for name, (args, permission) in COMMANDS.items():
            if name == "run" and allowed(role, permission):
                continue  # a foreground supervisor; its allowed path is tested in the control tests
            before = len(cli.audit_entries())
            result = cli.run(*args, token=token)
            new_entries = cli.audit_entries()[before:]
            if allowed(role, permission):
                assert result.returncode != 4, f"{role} was refused {name}: {result.stderr}"
                assert any(e["decision"] == "allowed" for e in new_entries), new_entries
            else:
                assert result.returncode == 4, f"{role} ran {name}: {result.stdout} {result.stderr}"
                assert "may not" in result.stderr
                denied = [e for e in new_entries if e["decision"] == "denied"]
                assert denied and denied[0]["action"] == name
                assert denied[0]["principal"] == (
                    f"token:{role}" if token else denied[0]["principal"]
                )
        # A refused start must not have started anything.
        if not allowed(role, "bot.start"):
            owner_view = json.loads(cli.run("status", "--json").stdout)
            assert owner_view["state"] == "stopped"
    finally:
        cli.run("stop", "--timeout", "5")


def test_a_token_that_matches_no_principal_is_refused_as_an_unknown_token(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    result = cli.run("status", token="not-a-known-token")
    assert result.returncode == 4
    assert "matches no token principal" in result.stderr
    assert "os_user:" not in result.stderr  # never judged as the OS user
