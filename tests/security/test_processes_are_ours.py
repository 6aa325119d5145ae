"""A process is ours only if it runs as our user and holds our `watchdog.lock`.

`stop` signals the pids of the ledger. When the ledger is missing, it is rebuilt from
the Redis mirror and the process table: neither may name a process for it to signal,
nor make `start` believe the bot already runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from blueprint.ledger import BotState, LedgerDocument, ProcessRecord
from blueprint.mirror import RedisMirror
from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest
from tests.security.conftest import SYSTEM_PYTHON, OtherUser


def installation(base: Path) -> Cli:
    home = base / "home"
    home.mkdir(mode=0o700)
    return Cli(home, write_manifest(base / "manifest.json", manifest_document()))


def test_pids_in_a_redis_ledger_are_never_signalled(redis_db: str, tmp_path: Path) -> None:
    cli = installation(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        process = psutil.Process(bystander.pid)
        forged = LedgerDocument(
            "lunara-test",
            revision=50,
            state=BotState.RUNNING,
            watchdog=ProcessRecord(process.pid, process.create_time()),
            bot=ProcessRecord(process.pid, process.create_time()),
        )
        RedisMirror(redis_db, "lunara-test").publish_ledger(forged.to_dict())
        assert not (cli.home / "ledger.json").exists()
        stopped = cli.run("stop", "--timeout", "3", "--json", extra_env={"REDIS_URL": redis_db})
        assert stopped.returncode == 0, stopped.stderr
        assert bystander.poll() is None, "stop signalled a pid it read from Redis"
        status = cli.run("status", "--json", extra_env={"REDIS_URL": redis_db})
        assert '"pid": null' in status.stdout, status.stdout
    finally:
        bystander.kill()
        bystander.wait()


def test_another_users_watchdog_look_alike_neither_blocks_start_nor_is_stopped(
    other_user: OtherUser, tmp_path: Path
) -> None:
    if SYSTEM_PYTHON is None:
        import pytest

        pytest.skip("no system python3 the second user may run")
    cli = installation(tmp_path)
    home = str(cli.home.resolve())
    # Any user can give a process this command line; only ours holds the home's lock.
    look_alike = other_user.popen(
        [SYSTEM_PYTHON, "-c", "import time; time.sleep(600)", "-m", "blueprint.watchdog",
         "--home", home],
    )  # fmt: skip
    try:
        started = cli.run("start", "--wait", "30", "--json")
        assert started.returncode == 0, started.stderr
        assert cli.status()["supervisor_pid"] not in (None, look_alike.pid)
        stopped = cli.run("stop", "--timeout", "5")
        assert stopped.returncode == 0, stopped.stderr
        assert look_alike.poll() is None, "stop signalled another user's process"
        (cli.home / "ledger.json").unlink()  # a lost ledger is rebuilt from the table
        assert cli.status()["state"] == "stopped"
    finally:
        look_alike.kill()
        look_alike.wait()
        cli.run("stop", "--timeout", "5")
