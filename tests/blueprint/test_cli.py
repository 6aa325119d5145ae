"""The `lunara` CLI through its real interface: a subprocess, real files, real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import (
    ROOT,
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)

COMMANDS = ["start", "stop", "restart", "status", "logs", "run", "audit", "manifest"]

STATUS_FIELDS = {
    "state",
    "pid",
    "supervisor_pid",
    "started_at",
    "uptime_s",
    "restarts",
    "last_exit",
    "rss_mib",
    "heartbeat_age_s",
    "mirror",
    "ledger_revision",
    "principal",
    "healthy",
    "notes",
    "dependencies",
}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    manifest = write_manifest(tmp_path / "manifest.json", manifest_document())
    installation = Cli(home, manifest)
    yield installation
    installation.run("stop", "--timeout", "5")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli: Cli, command: str) -> None:
    result = cli.run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_unknown_flag_is_a_usage_error_with_exit_2(cli: Cli) -> None:
    result = cli.run("status", "--no-such-flag")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_unknown_command_is_a_usage_error_with_exit_2(cli: Cli) -> None:
    assert cli.run("launch").returncode == 2


def test_status_of_a_never_started_bot_is_stopped_with_exit_3(cli: Cli) -> None:
    result = cli.run("status", "--json")
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    assert set(document) >= STATUS_FIELDS
    assert document["state"] == "stopped"
    assert document["pid"] is None
    assert document["principal"] == "token:owner"
    assert document["dependencies"] is None  # no bot, nobody to say what it reaches


def test_quiet_status_prints_nothing(cli: Cli) -> None:
    result = cli.run("status", "--quiet")
    assert result.returncode == 3
    assert result.stdout == ""


def test_plain_status_when_not_a_terminal(cli: Cli) -> None:
    result = cli.run("status")
    assert result.returncode == 3
    assert "state" in result.stdout and "stopped" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes


def test_start_wait_then_status_then_stop_lifecycle(cli: Cli) -> None:
    started = cli.run("start", "--wait", "30", "--json")
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    assert document["changed"] is True
    assert document["status"]["state"] == "running"

    again = cli.run("start", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["changed"] is False

    status = cli.status()
    assert status["state"] == "running"
    assert isinstance(status["pid"], int) and isinstance(status["supervisor_pid"], int)
    assert status["heartbeat_age_s"] is not None

    stopped = cli.run("stop", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["changed"] is True
    assert cli.run("status", "--quiet").returncode == 3
    assert cli.run("stop").returncode == 0  # idempotent


def test_start_wait_times_out_with_exit_7_when_the_bot_never_beats(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    silent = manifest_document(
        program={
            "command": [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
            "stop_timeout_s": 2,
            "restart": {
                "backoff_initial_s": 0.2,
                "backoff_max_s": 1,
                "max_restarts": 5,
                "window_s": 60,
            },
            "memory_limit_mib": 400,
            "heartbeat_timeout_s": 30,
        }
    )
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", silent))
    try:
        result = cli.run("start", "--wait", "1.5")
        assert result.returncode == 7, result.stdout + result.stderr
    finally:
        cli.run("stop", "--timeout", "3")


def test_invalid_manifest_exits_6_and_names_the_field(tmp_path: Path) -> None:
    document = manifest_document()
    document["program"]["restart"]["max_restarts"] = -1
    cli = Cli(tmp_path / "home", write_manifest(tmp_path / "manifest.json", document))
    (tmp_path / "home").mkdir()
    result = cli.run("status")
    assert result.returncode == 6
    assert "max_restarts" in result.stderr
    assert "Traceback" not in result.stderr


def test_manifest_check_validates_without_acting(tmp_path: Path, cli: Cli) -> None:
    ok = cli.run("manifest", "check", str(cli.manifest))
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 2}')
    broken.chmod(0o644)
    bad = cli.run("manifest", "check", str(broken))
    assert bad.returncode == 6
    assert "version" in bad.stderr
    assert not (cli.home / "ledger.json").exists()


def test_world_writable_manifest_is_refused_with_exit_6(cli: Cli) -> None:
    cli.manifest.chmod(0o666)
    result = cli.run("status")
    assert result.returncode == 6
    assert "writable" in result.stderr


def test_a_default_telegram_role_granting_admin_commands_exits_6(tmp_path: Path) -> None:
    document = manifest_document(defaults={"telegram": "admin"})
    cli = Cli(tmp_path / "home", write_manifest(tmp_path / "manifest.json", document))
    (tmp_path / "home").mkdir()
    for args in (("manifest", "check"), ("status",), ("start",)):
        result = cli.run(*args)
        assert result.returncode == 6, (args, result.stderr)
        assert 'defaults.telegram: role "admin" grants admin commands' in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "ledger.json").exists()  # nothing was started


def test_trigger_py_behaves_exactly_like_lunara(cli: Cli) -> None:
    via_module = cli.run("status", "--json")
    via_trigger = cli.run("status", "--json", entry=(sys.executable, str(ROOT / "trigger.py")))
    assert via_trigger.returncode == via_module.returncode == 3
    assert json.loads(via_trigger.stdout) == json.loads(via_module.stdout)
    usage = cli.run("bogus", entry=(sys.executable, str(ROOT / "trigger.py")))
    assert usage.returncode == 2


def test_cli_import_path_loads_no_heavy_dependencies(cli: Cli) -> None:
    probe = (
        "import sys\n"
        "from blueprint.cli import main\n"
        "try:\n"
        f"    main(['--home', {str(cli.home)!r}, '--manifest', {str(cli.manifest)!r}, 'status', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ['pandas', 'telegram', 'binance', 'google.genai', 'redis', 'numpy', 'matplotlib']\n"
        "print('HEAVY=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=cli.env(TOKENS["owner"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY="


def test_logs_shows_the_bot_log(cli: Cli) -> None:
    (cli.home / "logs").mkdir(exist_ok=True)
    (cli.home / "logs" / "bot.log").write_text("".join(f"line {i}\n" for i in range(100)))
    result = cli.run("logs", "--lines", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["line 97", "line 98", "line 99"]


def test_logs_follow_continues_across_rotation(cli: Cli) -> None:
    logs = cli.home / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / "bot.log"
    log.write_text("before\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blueprint",
            "--home",
            str(cli.home),
            "--manifest",
            str(cli.manifest),
            "logs",
            "--follow",
            "--lines",
            "5",
        ],
        env=cli.env(TOKENS["owner"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "before"
        with log.open("a") as handle:
            handle.write("appended\n")
        assert process.stdout.readline().strip() == "appended"
        log.rename(logs / "bot.log.1")
        log.write_text("after rotation\n")
        assert process.stdout.readline().strip() == "after rotation"
    finally:
        process.kill()
        process.communicate()


def test_audit_records_principal_decision_and_outcome(cli: Cli) -> None:
    cli.run("status")
    result = cli.run("audit", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    status_entries = [entry for entry in entries if entry["action"] == "status"]
    assert status_entries, entries
    assert all(entry["principal"] == "token:owner" for entry in status_entries)
    assert {entry["decision"] for entry in status_entries} == {"allowed"}
    assert any(entry.get("outcome") == "stopped" for entry in status_entries)


def test_no_token_in_the_audit_log_or_ledger(cli: Cli) -> None:
    assert cli.run("start", "--wait", "30").returncode == 0
    cli.run("stop")
    for path in cli.home.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for token in TOKENS.values():
                assert token not in text, f"token found in {path}"


def test_status_exit_codes_follow_the_bot(cli: Cli) -> None:
    assert cli.run("start", "--wait", "30").returncode == 0
    assert cli.run("status", "--quiet").returncode == 0
    assert cli.run("stop").returncode == 0
    wait_until(lambda: cli.run("status", "--quiet").returncode == 3, 10, "status to say stopped")


def test_fast_status_path_answers_exactly_like_the_typer_command(cli: Cli) -> None:
    assert cli.run("start", "--wait", "30").returncode == 0
    fast = cli.run("status", "--json")
    probe = (
        "import sys\n"
        "from blueprint.commands import app\n"
        f"app(args=['--home', {str(cli.home)!r}, '--manifest', {str(cli.manifest)!r}, "
        "'status', '--json'], prog_name='lunara')\n"
    )
    through_typer = subprocess.run(
        [sys.executable, "-c", probe],
        env=cli.env(TOKENS["owner"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fast.returncode == through_typer.returncode == 0, through_typer.stderr
    volatile = {"uptime_s", "heartbeat_age_s", "rss_mib", "ledger_revision"}
    first, second = json.loads(fast.stdout), json.loads(through_typer.stdout)
    assert {k: v for k, v in first.items() if k not in volatile} == {
        k: v for k, v in second.items() if k not in volatile
    }


def test_status_does_not_import_typer(cli: Cli) -> None:
    probe = (
        "import sys\n"
        "from blueprint.cli import main\n"
        "try:\n"
        f"    main(['--home', {str(cli.home)!r}, '--manifest', {str(cli.manifest)!r}, 'status'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TYPER=' + str('typer' in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=cli.env(TOKENS["owner"]), capture_output=True, text=True
    )
    assert result.stdout.splitlines()[-1] == "TYPER=False", result.stderr


def test_a_running_watchdog_answers_status_over_its_private_socket(cli: Cli) -> None:
    from blueprint.statusclient import query_status

    assert cli.run("start", "--wait", "30").returncode == 0
    socket_path = cli.home / "control.sock"
    assert socket_path.exists()
    assert socket_path.stat().st_mode & 0o077 == 0  # only the home's owner may connect
    reply = query_status(socket_path, cli.manifest.resolve(), TOKENS["operator"])
    assert reply is not None and reply["exit_code"] == 0
    assert reply["report"]["principal"] == "token:operator"
    assert reply["report"]["state"] == "running"
    audited = [e for e in cli.audit_entries() if e["principal"] == "token:operator"]
    assert {e["decision"] for e in audited} == {"allowed"}
    assert any(e.get("outcome") == "running" for e in audited)


def test_the_watchdog_refuses_status_to_an_unknown_principal_with_exit_4(cli: Cli) -> None:
    assert cli.run("start", "--wait", "30").returncode == 0
    refused = cli.run("status", token=None)  # os_user:<login> has no role in this manifest
    assert refused.returncode == 4
    assert "may not bot.status" in refused.stderr
    assert any(e["decision"] == "denied" for e in cli.audit_entries())


def test_status_falls_back_to_local_when_the_watchdog_was_killed(cli: Cli) -> None:
    import os
    import signal

    assert cli.run("start", "--wait", "30").returncode == 0
    watchdog_pid = cli.status()["supervisor_pid"]
    os.kill(watchdog_pid, signal.SIGKILL)
    wait_until(lambda: cli.run("status", "--quiet").returncode == 5, 10, "orphaned status")
    document = json.loads(cli.run("status", "--json").stdout)
    assert document["state"] == "orphaned"
    assert cli.run("stop").returncode == 0


def test_a_ledger_corrupted_under_a_running_watchdog_is_rebuilt_and_logged(cli: Cli) -> None:
    assert cli.run("start", "--wait", "30").returncode == 0
    bot_pid = cli.status()["pid"]
    (cli.home / "ledger.json").write_text("garbage{")
    wait_until(
        lambda: "was corrupt" in (cli.home / "logs" / "watchdog.log").read_text(),
        10,
        "the watchdog to log the recovery",
    )
    status = cli.status()
    assert status["state"] == "running" and status["pid"] == bot_pid
    assert cli.run("stop").returncode == 0


def test_a_token_that_matches_no_principal_is_refused_and_never_acts_as_the_os_user(
    tmp_path: Path,
) -> None:
    """The OS user running the CLI is an owner here; a mistyped CI token must still be
    refused (exit 4, audited as an unknown token), locally and by the running watchdog."""
    import getpass

    document = manifest_document()
    document["principals"][f"os_user:{getpass.getuser()}"] = "owner"
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", document))
    try:
        for command in (("status",), ("start", "--wait", "30"), ("audit",)):
            refused = cli.run(*command, token="not-a-token")
            assert refused.returncode == 4, refused.stderr
            assert "LUNARA_TOKEN matches no token principal" in refused.stderr
            assert "Traceback" not in refused.stderr
        assert cli.run("status", token=None).returncode == 3  # nothing was started
        assert cli.run("start", "--wait", "30", token=None).returncode == 0
        refused = cli.run("status", token="not-a-token")  # answered by the watchdog
        assert refused.returncode == 4, refused.stderr
        unknown = [e for e in cli.audit_entries() if e["principal"] == "token:?"]
        assert len(unknown) == 4
        assert {(e["decision"], e["outcome"]) for e in unknown} == {("denied", "unknown token")}
        assert all("not-a-token" not in json.dumps(e) for e in cli.audit_entries())
    finally:
        cli.run("stop", "--timeout", "5", token=None)
