"""The bot's entry point under the real watchdog and CLI: a `.env` it cannot read is a
configuration error (exit 6) naming the file and the fix, never a traceback nor a
crash loop; the CLI's own commands that read it say the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest

WITHOUT_FILE_OVERRIDES = ("dac_override", "dac_read_search")


def make_unreadable(env_file: Path) -> list[str]:
    """Make `env_file` unreadable to the commands run under the returned prefix.

    Mode 000 denies reading to anyone but a process allowed to bypass file permissions:
    root is, through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. As root the commands run
    under setpriv without those two capabilities (their whole process tree included), so
    the file is as unreadable to them as a 0600 file of another user is to `lunara`.
    """
    env_file.chmod(0)
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip(
            "as root, an unreadable file needs setpriv (util-linux) to drop the capabilities "
            "that bypass file permissions"
        )
    dropped = ",".join(f"-{capability}" for capability in WITHOUT_FILE_OVERRIDES)
    return [setpriv, f"--inh-caps={dropped}", f"--bounding-set={dropped}"]


def test_an_unreadable_env_file_is_exit_6_naming_the_file_for_the_bot_and_the_cli(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    document = manifest_document(
        program={
            "command": ["python", "-m", "lunara"],
            "stop_timeout_s": 3,
            "restart": {"backoff_initial_s": 0.2, "max_restarts": 5, "window_s": 60},
            "memory_limit_mib": 400,
            "heartbeat_timeout_s": 30,
        }
    )
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", document))
    env_file = Path(os.path.realpath(tmp_path)) / ".env"  # the working directory's .env
    env_file.write_text("LUNARA_MODE=paper\n")
    prefix = make_unreadable(env_file)
    probe = subprocess.run([*prefix, "cat", str(env_file)], capture_output=True, timeout=30)
    assert probe.returncode != 0, "the .env is still readable: the test would prove nothing"
    entry = (*prefix, sys.executable, "-m", "lunara.cli")
    try:
        started = cli.run("start", "--wait", "60", entry=entry)
        assert started.returncode == 6, started.stdout + started.stderr
        lines = started.stderr.splitlines()
        assert len(lines) == 1, started.stderr
        assert lines[0].startswith(
            f"lunara: invalid configuration: cannot read {env_file}: permission denied for user "
        ), lines[0]
        assert "chown " in lines[0]
        assert f"chmod 600 {env_file}" in lines[0]
        assert "EnvironmentFile=" in lines[0]
        assert "--env-file" in lines[0]
        # The CLI reads the same .env first (one reader, one precedence): it refuses
        # before anything is started, so nothing is left to restart or to clean up.
        status = cli.status()
        assert status["state"] == "stopped"
        assert status["restarts"] == 0
        assert not (home / "logs" / "bot-output.log").exists()

        shown = cli.run("config", "show", entry=entry)
        assert shown.returncode == 6, shown.stdout + shown.stderr
        assert shown.stderr == started.stderr
        bot = subprocess.run(  # the bot on its own reads it the same way
            [*prefix, sys.executable, "-m", "lunara"],
            cwd=env_file.parent,
            env=cli.env(None, {"LUNARA_HOME": str(home)}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bot.returncode == 6, bot.stderr
        assert bot.stderr == started.stderr
    finally:
        cli.run("stop", "--timeout", "5")
