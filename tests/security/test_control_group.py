"""Operators in the manifest's control group use the deployment with their own roles.

The deployment (here root's) gives the socket to `control.group` with mode 0660, like
supervisord's `chown`/`chmod`; a member connects as themselves (SO_PEERCRED) and the
watchdog decides with its manifest: the role of their `os_user:` principal, no more.
They cannot read the home, so the watchdog shows the logs and the audit and stops
itself for them.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import ROOT, Cli, manifest_document, wait_until, write_manifest
from tests.security.conftest import SYSTEM_PYTHON, OtherUser

SITE_PACKAGES = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def as_member(other_user: OtherUser, gid: int, home: Path, *args: str) -> tuple[int, str, str]:
    assert SYSTEM_PYTHON is not None
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}:{SITE_PACKAGES / 'site-packages'}",
        "NO_COLOR": "1",
    }
    result = other_user.run(
        [SYSTEM_PYTHON, "-m", "blueprint", "--home", str(home), *args],
        groups=[gid],
        env=env,
        cwd="/",
        capture_output=True,
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_a_control_group_member_acts_with_the_role_the_manifest_gives_them(
    other_user: OtherUser, control_group: tuple[str, int], shared_dir: Path
) -> None:
    if SYSTEM_PYTHON is None or sys.version_info[:2] != (3, 11):
        pytest.skip("needs a system python3 of our version that the second user may run")
    group, gid = control_group
    document = manifest_document(control={"group": group, "mode": "0660"})
    document["principals"][f"os_user:{other_user.name}"] = "ci"  # status, stop; no logs
    workspace = shared_dir / "deployment"
    workspace.mkdir(mode=0o755)
    home = workspace / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(workspace / "manifest.json", document))
    try:
        assert cli.run("start", "--wait", "30").returncode == 0
        socket_info = os.stat(home / "control.sock")
        assert (socket_info.st_gid, stat.S_IMODE(socket_info.st_mode)) == (gid, 0o660)
        assert stat.S_IMODE(os.stat(home).st_mode) == 0o710  # reach the socket, list nothing

        code, out, err = as_member(other_user, gid, home, "status", "--json")
        assert code == 0, err
        assert json.loads(out)["principal"] == f"os_user:{other_user.name}"

        for verb in ("logs", "audit"):
            code, out, err = as_member(other_user, gid, home, verb)
            assert code == 4, (verb, out, err)
            assert f"os_user:{other_user.name} may not bot.{verb}" in err

        # Not in the group: the socket is out of reach, and nothing is answered.
        outsider = other_user.run(
            [SYSTEM_PYTHON, "-c", "import socket, sys; socket.socket(socket.AF_UNIX)"
             ".connect(sys.argv[1])", str(home / "control.sock")],
            capture_output=True,
        )  # fmt: skip
        assert outsider.returncode != 0

        code, out, err = as_member(other_user, gid, home, "stop", "--timeout", "5")
        assert code == 0, err
        wait_until(lambda: cli.status()["state"] == "stopped", what="the stop")
        decided = [e for e in cli.audit_entries() if e["action"] == "stop"]
        assert decided[-1]["principal"] == f"os_user:{other_user.name}"

        # As an operator (the manifest at the next start), logs and audit are shown.
        document["principals"][f"os_user:{other_user.name}"] = "operator"
        write_manifest(cli.manifest, document)
        assert cli.run("start", "--wait", "30").returncode == 0
        code, out, err = as_member(other_user, gid, home, "logs", "--source", "watchdog")
        assert code == 0, err
        assert "watchdog" in out
        code, out, err = as_member(other_user, gid, home, "audit", "--json")
        assert code == 0, err
        assert any(entry["action"] == "logs" for entry in json.loads(out))
    finally:
        cli.run("stop", "--timeout", "5")
