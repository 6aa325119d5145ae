"""The running watchdog is the authority; a stopped deployment answers to the manifest
its home is bound to. A manifest given on the command line never widens either."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from tests.blueprint.cli_harness import TOKENS, Cli, manifest_document, write_manifest

PWNED_PROGRAM = {
    "command": [sys.executable, "-c", "import pathlib; pathlib.Path('PWNED').touch()"],
    "stop_timeout_s": 3,
}


def everything_for_ci(program: dict[str, object] | None = None) -> dict[str, object]:
    document = manifest_document(program)
    document["roles"]["ci"] = ["*"]
    return document


def deployment(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))


def test_a_forged_manifest_does_not_widen_what_the_running_watchdog_allows(
    tmp_path: Path,
) -> None:
    cli = deployment(tmp_path)
    forged = Cli(cli.home, write_manifest(tmp_path / "forged.json", everything_for_ci()))
    try:
        assert cli.run("start", "--wait", "30").returncode == 0
        for verb in (("logs", "--lines", "1"), ("audit", "--json")):
            before = len(cli.audit_entries())
            result = forged.run(*verb, token=TOKENS["ci"])
            assert result.returncode == 4, (verb, result.stdout, result.stderr)
            assert "token:ci may not" in result.stderr
            decided = [e for e in cli.audit_entries()[before:] if e["action"] == verb[0]]
            assert [e["decision"] for e in decided] == ["denied"]
        # status is answered over the socket with the watchdog's manifest too.
        allowed = forged.run("status", "--json", token=TOKENS["ci"])
        assert allowed.returncode == 0, allowed.stderr
        assert json.loads(allowed.stdout)["principal"] == "token:ci"
    finally:
        cli.run("stop", "--timeout", "5")


def test_the_watchdog_keeps_the_manifest_it_was_started_with(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    original = cli.manifest.read_bytes()
    try:
        assert cli.run("start", "--wait", "30").returncode == 0
        bound = json.loads((cli.home / "manifest.bound").read_text())
        assert bound == {
            "path": str(cli.manifest.resolve()),
            "sha256": hashlib.sha256(original).hexdigest(),
        }
        write_manifest(cli.manifest, everything_for_ci())  # edited while it runs
        refused = cli.run("logs", "--lines", "1", token=TOKENS["ci"])
        assert refused.returncode == 4, refused.stderr
        # A restart starts a watchdog with the file as it is now.
        assert cli.run("restart", "--wait", "30").returncode == 0
        allowed = cli.run("logs", "--lines", "1", token=TOKENS["ci"])
        assert allowed.returncode == 0, allowed.stderr
    finally:
        cli.run("stop", "--timeout", "5")


def test_a_stopped_deployment_answers_to_the_manifest_its_home_is_bound_to(
    tmp_path: Path,
) -> None:
    cli = deployment(tmp_path)
    assert cli.run("start", "--wait", "30").returncode == 0
    assert cli.run("stop", "--timeout", "5").returncode == 0
    forged = Cli(
        cli.home, write_manifest(tmp_path / "forged.json", everything_for_ci(PWNED_PROGRAM))
    )
    for token in (TOKENS["ci"], TOKENS["owner"]):
        result = forged.run("start", "--wait", "5", token=token)
        assert result.returncode == 6, result.stderr
        assert f"belongs to the manifest {cli.manifest.resolve()}" in result.stderr
    assert not (tmp_path / "PWNED").exists()
    # ci may not read the logs under the bound manifest, whatever the forged one says.
    assert forged.run("logs", token=TOKENS["ci"]).returncode == 6
    assert cli.run("logs", token=TOKENS["ci"]).returncode == 4
    # Its owner rebinds the home by deleting the binding while it is stopped.
    (cli.home / "manifest.bound").unlink()
    assert forged.run("status", token=TOKENS["ci"]).returncode == 3
