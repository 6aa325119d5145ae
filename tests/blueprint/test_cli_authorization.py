"""A token is a credential: one that fails is refused, never taken for the OS user.

Every verb × every role is proven in tests/lunara/test_permission_matrix.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest


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
