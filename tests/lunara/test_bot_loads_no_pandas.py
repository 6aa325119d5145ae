"""The supervised bot never loads pandas or pyarrow (only the CLI's data and backtest
commands do), so its memory budget stays as it is: read from the running bot's own memory
map, where every shared object a process has loaded appears."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import (
    REAL_BOT_ENTRY,
    REAL_BOT_PROGRAM,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

ENTRY = REAL_BOT_ENTRY
PROGRAM = REAL_BOT_PROGRAM
HEAVY = ("/pandas/", "/pyarrow/")


def loaded_heavy_objects(pid: int) -> set[str]:
    """The pandas and pyarrow files mapped into the process `pid`."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    paths = {line.split(None, 5)[5] for line in maps.splitlines() if len(line.split(None, 5)) == 6}
    return {path for path in paths if any(part in path for part in HEAVY)}


def test_the_memory_map_shows_pandas_in_a_process_that_imported_it() -> None:
    """The check below can fail: a process that imports pandas has it in its map."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import pandas, sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        assert loaded_heavy_objects(process.pid)
    finally:
        process.communicate(timeout=30)


@pytest.mark.slow
def test_the_running_bot_has_not_loaded_pandas_or_pyarrow(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    env = {"LUNARA_HOME": str(home), "LUNARA_TICK_SECONDS": "0.2"}
    try:
        started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
        assert started.returncode == 0, started.stderr
        metrics = home / "metrics.json"

        def ticked() -> bool:  # a trading tick has run: the analyzers and stops are loaded
            return metrics.exists() and "tick_duration_seconds" in json.loads(
                metrics.read_text() or "{}"
            )

        wait_until(ticked, 30, "a trading tick")
        status = json.loads(cli.run("status", "--json", entry=ENTRY, extra_env=env).stdout)
        assert status["state"] == "running"
        assert loaded_heavy_objects(int(status["pid"])) == set()
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
