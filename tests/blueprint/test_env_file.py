"""One `.env`, one precedence, for the CLI, the watchdog and the bot: the environment,
then `.env` in the working directory, then the defaults. Through the real CLI, started
from a directory holding a `.env`, without `--home` or `--manifest`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blueprint.envfile import load_into_environment
from blueprint.errors import ExitCode
from tests.blueprint.cli_harness import (
    ROOT,
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)


class Directory:
    """A working directory with a manifest and a `.env`, and the CLI run from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cwd = root / "work"
        self.cwd.mkdir()
        self.home = root / "state"
        self.home.mkdir(mode=0o700)
        self.manifest = write_manifest(root / "elsewhere.json", manifest_document())

    def write_env(self, **variables: str) -> None:
        text = "".join(f"{name}={value}\n" for name, value in variables.items())
        (self.cwd / ".env").write_text(text)

    def run(self, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
        env = Cli(self.home, self.manifest).env(None, environment)
        return subprocess.run(
            [sys.executable, "-m", "blueprint", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    return Directory(tmp_path)


def test_the_cli_and_what_it_starts_use_the_home_manifest_and_token_of_dot_env(
    directory: Directory,
) -> None:
    directory.write_env(
        LUNARA_HOME=str(directory.home),
        LUNARA_MANIFEST=str(directory.manifest),
        LUNARA_TOKEN=TOKENS["owner"],
    )
    try:
        started = directory.run("start", "--wait", "30")
        assert started.returncode == 0, started.stderr
        status = json.loads(directory.run("status", "--json").stdout)
        assert status["state"] == "running"
        assert status["principal"] == "token:owner"
        wait_until(lambda: (directory.home / "heartbeat").exists(), 20, "the bot's heartbeat")
        assert (directory.home / "ledger.json").exists()
        assert not (directory.cwd / ".lunara").exists()  # nothing went to the default home
    finally:
        directory.run("stop", "--timeout", "10")


def test_the_environment_wins_over_dot_env(directory: Directory, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    directory.write_env(LUNARA_HOME=str(directory.home), LUNARA_MANIFEST=str(directory.manifest))
    shown = directory.run("status", "--json", LUNARA_HOME=str(other), LUNARA_TOKEN=TOKENS["ci"])
    assert shown.returncode == 3, shown.stderr
    assert json.loads(shown.stdout)["principal"] == "token:ci"
    assert (other / "audit.jsonl").exists()
    assert not (directory.home / "audit.jsonl").exists()


def test_a_blank_home_means_the_default_not_the_working_directory(directory: Directory) -> None:
    shown = directory.run(
        "status",
        "--json",
        LUNARA_HOME="",
        LUNARA_MANIFEST=str(directory.manifest),
        LUNARA_TOKEN=TOKENS["owner"],
    )
    assert shown.returncode == 3, shown.stderr
    assert (directory.cwd / ".lunara" / "audit.jsonl").exists()
    assert not (directory.cwd / "audit.jsonl").exists()


def test_a_home_given_with_home_must_exist(directory: Directory) -> None:
    missing = directory.root / "no-such-home"
    for command in (("status",), ("start", "--wait", "5")):
        refused = directory.run(
            "--home", str(missing), "--manifest", str(directory.manifest), *command,
            LUNARA_TOKEN=TOKENS["owner"],
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "does not exist" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert not missing.exists()


NOT_REGULAR_FILES = {
    "fifo": "a named pipe (FIFO), not a regular file",
    "directory": "Is a directory",
    "device": "a character device, not a regular file",
}
"""What the refusal calls each kind of path that is not a regular file."""


def make_not_regular(path: Path, kind: str) -> str:
    """Put a FIFO, a directory or a device (/dev/null, behind a symlink) at `path`; what
    the refusal calls it."""
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(os.devnull)
    return NOT_REGULAR_FILES[kind]


@pytest.mark.parametrize("kind", sorted(NOT_REGULAR_FILES))
@pytest.mark.parametrize("verb", [("status",), ("start", "--wait", "10")])
def test_a_dot_env_that_is_not_a_regular_file_is_refused_in_one_line(
    directory: Directory, kind: str, verb: tuple[str, ...]
) -> None:
    """A FIFO used to hang the CLI in open() until someone wrote to it; a device (here
    /dev/null behind a symlink) was read as if it were a file."""
    env_file = directory.cwd / ".env"
    said = make_not_regular(env_file, kind)
    # The subprocess timeout only turns a hang into a failure; nothing here is timed.
    refused = directory.run(
        "--home", str(directory.home), "--manifest", str(directory.manifest), *verb,
        LUNARA_TOKEN=TOKENS["owner"],
    )  # fmt: skip
    assert refused.returncode == ExitCode.INVALID_CONFIG, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        f"lunara: invalid configuration: cannot read {env_file} ({said}): it must be a file "
        "of VARIABLE=value lines, or absent"
    ], refused.stderr
    assert not (directory.home / "ledger.json").exists()


def test_dot_env_sets_only_the_projects_variables_and_never_overrides(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "LUNARA_MODE=paper\nREDIS_URL=redis://127.0.0.1:1/0\nPYTHONPATH=/evil\n"
        "LD_PRELOAD=/evil.so\nLUNARA_HOME=/from-dot-env\nLUNARA_TICK_SECONDS=\n"
    )
    environ = {"LUNARA_HOME": "/from-environment", "LUNARA_MODE": ""}
    taken = load_into_environment(env_file, environ)
    assert sorted(taken) == ["LUNARA_MODE", "REDIS_URL"]
    assert environ == {
        "LUNARA_HOME": "/from-environment",  # the environment wins
        "LUNARA_MODE": "paper",  # blank in the environment counts as unset
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }


def test_the_shipped_example_sets_no_path(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    load_into_environment(ROOT / ".env.example", environ)
    assert "LUNARA_HOME" not in environ
    assert "LUNARA_MANIFEST" not in environ
