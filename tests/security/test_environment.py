"""The watchdog and the bot run with the deployment's configuration, never the caller's
credential nor the rest of the caller's environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from blueprint.watchdog import BOT_MALLOC_ARENAS
from tests.blueprint.cli_harness import (
    HEARTBEAT_BOT,
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

ENV_DUMPING_BOT = (
    "import json, os, pathlib\n"
    "pathlib.Path(os.environ['LUNARA_HOME'], 'bot-env.json')"
    ".write_text(json.dumps(dict(os.environ)))\n" + HEARTBEAT_BOT
)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {name.decode(): value.decode() for name, value in pairs}


def env_dumping_installation(tmp_path: Path, passed: list[str]) -> Cli:
    """An installation whose bot writes its environment to `bot-env.json` in its home;
    the manifest passes the variables `passed` on."""
    home = tmp_path / "home"
    home.mkdir()
    program = {
        "command": [sys.executable, "-c", ENV_DUMPING_BOT],
        "stop_timeout_s": 3,
        "environment": passed,
    }
    return Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(program)))


def test_the_bot_and_watchdog_get_the_deployments_configuration_not_the_callers(
    tmp_path: Path,
) -> None:
    cli = env_dumping_installation(tmp_path, ["ALLOWED_BY_MANIFEST"])
    home = cli.home
    dot_env = tmp_path / ".env"  # the CLI runs in tmp_path
    dot_env.write_text("LUNARA_TICK_SECONDS=7\nNOT_A_PROJECT_VARIABLE=from-dot-env\n")
    caller = {
        "PYTHONPATH": "/somewhere/the/caller/chose",
        "CI_JOB_TOKEN": "runner-secret-123456",
        "ALLOWED_BY_MANIFEST": "passed",
        "LUNARA_SYMBOLS": "BTCUSDT",
        "LC_ALL": "C.UTF-8",
    }
    try:
        started = cli.run("start", "--wait", "30", token=TOKENS["owner"], extra_env=caller)
        assert started.returncode == 0, started.stderr
        dump = home / "bot-env.json"
        wait_until(dump.exists, what="the bot's environment dump")
        bot_env = json.loads(dump.read_text())
        watchdog_env = environ_of(cli.status()["supervisor_pid"])
        for env in (bot_env, watchdog_env):
            assert "LUNARA_TOKEN" not in env
            assert TOKENS["owner"] not in json.dumps(env)
            assert "PYTHONPATH" not in env
            assert "CI_JOB_TOKEN" not in env
            assert "NOT_A_PROJECT_VARIABLE" not in env
            assert env["ALLOWED_BY_MANIFEST"] == "passed"
            assert env["LUNARA_SYMBOLS"] == "BTCUSDT"  # a project variable: configuration
            assert env["LUNARA_TICK_SECONDS"] == "7"  # from .env
            assert env["LC_ALL"] == "C.UTF-8"
            assert "PATH" in env
        assert bot_env["LUNARA_HOME"] == str(home.resolve())
    finally:
        cli.run("stop", "--timeout", "5")


def test_a_manifest_may_not_pass_the_token_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    program = {"command": ["python", "-m", "lunara"], "environment": ["LUNARA_TOKEN"]}
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(program)))
    result = cli.run("manifest", "check")
    assert result.returncode == 6
    assert "program.environment: LUNARA_TOKEN is the caller's credential" in result.stderr


@pytest.mark.parametrize(
    ("passed", "expected"),
    [((), BOT_MALLOC_ARENAS), (("MALLOC_ARENA_MAX",), "4")],
    ids=["the-watchdog-s-default", "the-deployment-s-own"],
)
def test_the_bot_runs_with_few_malloc_arenas_unless_the_deployment_passes_its_own(
    tmp_path: Path, passed: tuple[str, ...], expected: str
) -> None:
    cli = env_dumping_installation(tmp_path, list(passed))
    home = cli.home
    try:
        started = cli.run("start", "--wait", "30", extra_env={"MALLOC_ARENA_MAX": "4"})
        assert started.returncode == 0, started.stderr
        dump = home / "bot-env.json"
        wait_until(dump.exists, what="the bot's environment dump")
        assert json.loads(dump.read_text())["MALLOC_ARENA_MAX"] == expected
    finally:
        cli.run("stop", "--timeout", "5")
