"""Deployment files agree with the configuration: render.yaml declares every variable."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "TELEGRAM_BOT_TOKEN",
    "LUNARA_ENCRYPTION_KEY",
    "GEMINI_API_KEY",
    "LUNARA_TOKEN",
    "REDIS_URL",
}


def documented_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_render_worker_declares_every_variable_and_keeps_secrets_out() -> None:
    text = (ROOT / "render.yaml").read_text()
    assert "type: worker" in text  # no port scan
    declared = set(re.findall(r"- key: ([A-Z0-9_]+)", text))
    # PORT is set by the platform itself (web services only), never declared.
    assert declared == documented_variables() - {"PORT"}
    for secret in SECRETS:
        block = text.split(f"- key: {secret}\n", 1)[1].split("\n", 1)[0]
        assert "sync: false" in block, secret


def test_dockerfile_runs_as_non_root_without_exposed_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER lunara$", text, flags=re.MULTILINE)
    assert not re.search(r"^EXPOSE", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["lunara", "run"]' in text
    assert 'lunara", "status", "--quiet"' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", ".lunara", "tests"):
        assert entry in ignored


def _unit(name: str) -> list[tuple[str, str]]:
    """The `key=value` settings of a systemd unit, in order."""
    lines = (ROOT / "deploy" / name).read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if "=" in line and not line.startswith("#")]
    return [(key, value) for key, value in pairs]


def test_the_backup_timer_runs_a_pruned_backup_as_the_bot_user_on_the_bot_home() -> None:
    bot, backup = _unit("lunara.service"), _unit("lunara-backup.service")
    timer = dict(_unit("lunara-backup.timer"))
    shared = ("User", "Group", "WorkingDirectory", "EnvironmentFile", "Environment",
              "ReadWritePaths")  # fmt: skip
    assert [p for p in backup if p[0] in shared] == [p for p in bot if p[0] in shared]
    settings = dict(backup)
    assert settings["Type"] == "oneshot"
    command = settings["ExecStart"].split()
    assert command[:3] == ["/opt/lunara/.venv/bin/lunara", "backup", "--keep"]
    assert int(command[3]) >= 1
    assert command[4].startswith(settings["ReadWritePaths"] + "/")  # writable under ProtectSystem
    assert timer["OnCalendar"]
    assert timer["Persistent"] == "true"
    assert timer["WantedBy"] == "timers.target"


def test_make_run_starts_a_clone_made_under_umask_002(tmp_path: Path) -> None:
    """Ubuntu's umask 002 leaves the shipped manifest group-writable, which the CLI
    refuses; `make run` makes it go-w before it starts the bot. The real Makefile runs,
    with a stand-in `lunara` that records the manifest's mode when it is called."""
    import shutil
    import stat
    import subprocess

    for name in ("Makefile", "pyproject.toml", "manifest.json"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "requirements" / "prod.lock", tmp_path / "requirements" / "prod.lock")
    manifest = tmp_path / "manifest.json"
    manifest.chmod(0o664)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    seen = tmp_path / "seen"
    stand_in = bin_dir / "lunara"
    stand_in.write_text(f'#!/bin/sh\nstat -c "%a $1" manifest.json >> {seen}\n')
    stand_in.chmod(0o755)
    (tmp_path / ".venv" / ".installed-prod").touch()  # newer than the lock: no install
    result = subprocess.run(
        ["make", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert seen.read_text().splitlines() == ["644 start", "644 status"]
    assert stat.S_IMODE(manifest.stat().st_mode) & 0o022 == 0


def test_systemd_reads_the_settings_where_the_bot_does_not_and_never_retries_exit_6() -> None:
    """A root-only .env in the unit's working directory is read by the bot as `lunara`
    too, and stops it; systemd's EnvironmentFile= must live elsewhere. And exit 6 (an
    invalid configuration) is not something a restart can fix."""
    bot = dict(_unit("lunara.service"))
    environment_file = Path(bot["EnvironmentFile"].removeprefix("-"))
    working_directory = Path(bot["WorkingDirectory"])
    assert environment_file.is_absolute()
    assert working_directory not in environment_file.parents
    assert "6" in bot["RestartPreventExitStatus"].split()


def test_the_wheel_carries_every_data_file_of_the_packages(tmp_path: Path) -> None:
    """The image installs a wheel, not the source tree: a file read at run time (the stop
    store's Lua scripts) must be package data, or the installed bot cannot start."""
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("blueprint", "lunara"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", ".", "-w", str(tmp_path / "wheel")],
        cwd=source, check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    data_files = {
        path.relative_to(source).as_posix()
        for name in ("blueprint", "lunara")
        for path in (source / name).rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    assert "lunara/trading/stops/advance.lua" in data_files
    assert data_files <= packed
