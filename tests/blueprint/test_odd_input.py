"""Odd input to the control plane gets a clear one-line error, never a hang or a
traceback: a manifest that is a FIFO, a NUL byte in the program's command, durations
that are not finite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from blueprint.errors import ExitCode
from blueprint.manifest import ManifestError, load_manifest
from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))


def test_a_fifo_as_manifest_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ManifestError) as caught:
        load_manifest(fifo)  # before the fix: blocks in open() until someone writes
    assert caught.value.problems == ["file: not a regular file"]


@pytest.mark.parametrize("verb", [("status",), ("manifest", "check"), ("start",)])
def test_the_cli_refuses_a_fifo_manifest_in_one_line(cli: Cli, verb: tuple[str, ...]) -> None:
    fifo = cli.home.parent / "fifo.json"
    os.mkfifo(fifo, 0o600)
    # The subprocess timeout only turns a hang into a failure; nothing here is timed.
    result = Cli(cli.home, fifo).run(*verb, timeout=60)
    assert result.returncode == ExitCode.INVALID_CONFIG, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"lunara: manifest {fifo} is not a regular file"
    ], result.stderr
    assert not (cli.home / "ledger.json").exists()


def test_a_nul_byte_in_the_program_command_is_a_validation_error(cli: Cli) -> None:
    document = manifest_document()
    document["program"]["command"] = [sys.executable, "-c", "print(1)\0rm -rf /"]
    path = write_manifest(cli.manifest, document)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert any(
        p.startswith("program.command: must not contain a NUL") for p in caught.value.problems
    )
    result = cli.run("start")
    assert result.returncode == ExitCode.INVALID_CONFIG
    assert "program.command: must not contain a NUL byte" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cli.home / "ledger.json").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("stop", "--timeout", "inf"),
        ("stop", "--timeout", "nan"),
        ("start", "--wait", "inf"),
        ("restart", "--wait", "-inf"),
    ],
)
def test_a_duration_that_is_not_finite_is_a_usage_error(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli.run(*args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert "must be a finite number of seconds" in result.stderr or "range" in result.stderr
    assert not (cli.home / "ledger.json").exists()
