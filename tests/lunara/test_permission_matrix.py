"""Every CLI verb × every role of a test manifest and an unknown principal.

The verbs are read from the CLI's own command table (the Typer app with the bot's
commands added), so a verb added without an entry in `EXPECTED` fails here. `EXPECTED`
is written by hand, independently of the code, in `Permission` members: a verb that
checks the wrong permission (`keys rotate` against `bot.status`, `restore` against
`bot.backup`) is caught twice, by the permission its audit entry names and by a role
that is allowed or refused what it should not be.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main

from blueprint.manifest import Permission
from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    TOKENS,
    Cli,
    manifest_document,
    write_manifest,
)

EXPECTED: dict[str, Permission | None] = {
    "start": Permission.START,
    "status": Permission.STATUS,
    "logs": Permission.LOGS,
    "audit": Permission.AUDIT,
    "run": Permission.RUN,
    "restart": Permission.RESTART,
    "config show": Permission.CONFIG,
    "keys rotate": Permission.KEYS,
    "backup": Permission.BACKUP,
    "restore": Permission.RESTORE,
    "analyze": Permission.ANALYZE,
    "backtest": Permission.BACKTEST,
    "data download": Permission.DATA,
    "manifest check": None,  # reads only the file it is given; needs no permission
    "stop": Permission.STOP,  # last: the others run against a running deployment
}
"""Verb → the permission it must need, in the order the matrix runs them."""
STANDBY_WAIT_S = 8.0

ROLES: dict[str, set[Permission] | None] = {
    "owner": None,  # "*": everything
    "operator": {
        Permission.START,
        Permission.STOP,
        Permission.RESTART,
        Permission.STATUS,
        Permission.LOGS,
        Permission.AUDIT,
    },
    "ci": {Permission.START, Permission.STOP, Permission.RESTART, Permission.STATUS},
    "unknown": set(),  # no token: os_user:<login>, which the manifest does not name
}


def arguments(verb: str, scratch: Path) -> tuple[str, ...]:
    """Arguments Typer accepts, so that the verb reaches its authorization (and, when
    allowed, fails or finishes quickly without the network)."""
    return {
        "start": ("start",),
        "status": ("status", "--json"),
        "logs": ("logs", "--lines", "1"),
        "audit": ("audit", "--json"),
        "run": ("run",),  # allowed: waits as the running watchdog's standby
        "restart": ("restart",),
        "config show": ("config", "show", "--json"),
        "keys rotate": ("keys", "rotate"),
        "backup": ("backup", str(scratch / "backup.db")),
        "restore": ("restore", str(scratch / "no-such-backup.db")),
        "analyze": ("analyze", "BTCUSDT", "--json"),
        "backtest": ("backtest", "--data", str(scratch / "no-such-candles.csv")),
        "data download": ("data", "download", "BTCUSDT", "--base-url", "http://127.0.0.1:9"),
        "manifest check": ("manifest", "check"),
        "stop": ("stop", "--timeout", "5"),
    }[verb]


def cli_verbs() -> list[str]:
    """Every leaf command of the `lunara` CLI, as typed ("keys rotate")."""
    import lunara.commands  # noqa: F401  (loading it adds the bot's commands to blueprint's app)
    from blueprint.commands import app

    def walk(command: click.Command, prefix: tuple[str, ...]) -> Iterator[str]:
        if isinstance(command, click.Group):
            for name, child in command.commands.items():
                yield from walk(child, (*prefix, name))
        else:
            yield " ".join(prefix)

    return sorted(walk(typer.main.get_command(app), ()))


def allowed(role: str, permission: Permission | None) -> bool:
    granted = ROLES[role]
    return granted is None or permission in granted


def test_every_cli_verb_has_an_expected_permission() -> None:
    assert cli_verbs() == sorted(EXPECTED)


def test_every_permission_of_the_cli_is_one_a_verb_needs() -> None:
    cli_permissions = {p for p in Permission if p.startswith("bot.")}
    assert cli_permissions == {p for p in EXPECTED.values() if p is not None}


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.slow
def test_each_role_is_allowed_exactly_its_verbs(tmp_path: Path, role: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    token = TOKENS.get(role)
    try:
        started = cli.run("start", "--wait", "30")
        assert started.returncode == 0, started.stderr
        for verb, permission in EXPECTED.items():
            before = len(cli.audit_entries())
            if verb == "run" and allowed(role, permission):
                # Allowed, `run` beside the running watchdog waits as its standby for as
                # long as that one lives: it is given a while, then killed.
                with pytest.raises(subprocess.TimeoutExpired):
                    cli.run(*arguments(verb, tmp_path), token=token, entry=REAL_BOT_ENTRY,
                            timeout=STANDBY_WAIT_S)  # fmt: skip
                entries = [e for e in cli.audit_entries()[before:] if e["action"] == verb]
                assert [(e["permission"], e["decision"]) for e in entries][:1] == [
                    (permission, "allowed")
                ]
                continue
            result = cli.run(*arguments(verb, tmp_path), token=token, entry=REAL_BOT_ENTRY)
            assert "Traceback" not in result.stderr, (verb, result.stderr)
            entries = [e for e in cli.audit_entries()[before:] if e["action"] == verb]
            if permission is None:
                assert result.returncode == 0, (verb, result.stderr)
                assert entries == []
                continue
            decisions = [e for e in entries if e["permission"] is not None]
            assert decisions, (verb, result.stderr)
            assert decisions[0]["permission"] == permission, (verb, decisions[0])
            if allowed(role, permission):
                assert result.returncode != 4, f"{role} was refused {verb}: {result.stderr}"
                assert decisions[0]["decision"] == "allowed", (verb, decisions[0])
            else:
                assert result.returncode == 4, f"{role} ran {verb}: {result.stdout}{result.stderr}"
                assert f"may not {permission}" in result.stderr
                assert decisions[0]["decision"] == "denied"
                assert [e["decision"] for e in entries] == ["denied"]  # nothing acted
        expected_state = "stopped" if allowed(role, Permission.STOP) else "running"
        assert cli.status()["state"] == expected_state
    finally:
        cli.run("stop", "--timeout", "5")
