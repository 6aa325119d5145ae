"""The image's recipe, executed without a Docker engine.

Mirrors the Dockerfile's runtime steps: a fresh venv installed from the lock with
hashes, the project installed non-editable, an unprivileged user owning only the state
volume, `lunara run` as the entry point, and SIGTERM (what `docker stop` sends) ending
it cleanly with no bot left behind.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_USER = "nobody"
SYSTEM_PYTHONS = ("/usr/local/bin/python3.11", "/usr/bin/python3.11")
INSTALL_TIMEOUT_S = 600.0
RUNNING_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


def _runtime_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to run the entry point as an unprivileged user, as the image does")
    try:
        return pwd.getpwnam(RUNTIME_USER)
    except KeyError:
        pytest.skip(f"no unprivileged user {RUNTIME_USER!r} on this machine")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A world-traversable scratch dir (pytest's tmp_path is root-only)."""
    directory = Path(tempfile.mkdtemp(prefix="lunara-recipe-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _interpreter_for(account: pwd.struct_passwd) -> str:
    """A Python 3.11 the runtime user may execute (a per-user pyenv under /root is not)."""
    candidates = [getattr(sys, "_base_executable", sys.executable), *SYSTEM_PYTHONS]
    for candidate in candidates:
        if not Path(candidate).exists():
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys, venv; assert sys.version_info[:2] == (3, 11)"],
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=[],
                cwd="/",
                capture_output=True,
                timeout=30,
            )
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python 3.11 with venv that {account.pw_name!r} may execute")


def _install(base: str, venv: Path) -> None:
    """The Dockerfile's install: the lock with hashes, then the project without deps."""
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    # The image's base (python:3.11-slim) ships pip 24+, as scripts/ensure-venv.sh requires;
    # Debian's pip 23.0 refuses the lock's extras (`google-auth[requests]`) in hash mode.
    subprocess.run([*pip, "--upgrade", "pip>=24"], check=True, timeout=INSTALL_TIMEOUT_S)
    lock = ROOT / "requirements" / "prod.lock"
    subprocess.run(
        [*pip, "--require-hashes", "-r", str(lock)], check=True, timeout=INSTALL_TIMEOUT_S
    )
    subprocess.run([*pip, "--no-deps", str(ROOT)], check=True, timeout=INSTALL_TIMEOUT_S)


def _image_manifest(destination: Path, user: str) -> None:
    """The image's manifest, with the runtime user as a principal (the image uses `lunara`)."""
    document = json.loads((ROOT / "manifest.json").read_text())
    assert document["principals"]["os_user:lunara"] == "owner"
    document["principals"][f"os_user:{user}"] = "owner"
    destination.write_text(json.dumps(document))
    destination.chmod(0o644)


def _status(
    lunara: Path, env: dict[str, str], account: pwd.struct_passwd
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(lunara), "status", "--json"],
        env=env,
        cwd=env["LUNARA_HOME"],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_image_entry_point_runs_as_an_unprivileged_user_and_stops_cleanly_on_sigterm(
    scratch: Path,
) -> None:
    account = _runtime_user()
    venv = scratch / "venv"
    _install(_interpreter_for(account), venv)
    lunara = venv / "bin" / "lunara"
    assert lunara.exists()

    manifest = scratch / "manifest.json"
    _image_manifest(manifest, account.pw_name)
    volume = scratch / "data"
    volume.mkdir(mode=0o700)
    os.chown(volume, account.pw_uid, account.pw_gid)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(volume),
        "LUNARA_HOME": str(volume),
        "LUNARA_MANIFEST": str(manifest),
        "PYTHONUNBUFFERED": "1",
    }

    entry = subprocess.Popen(
        [str(lunara), "run"],
        env=env,
        cwd=volume,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = ""

    def healthy_bot() -> int | None:
        nonlocal last
        assert entry.poll() is None, f"the entry point exited; last status: {last}"
        result = _status(lunara, env, account)
        last = result.stdout + result.stderr
        return int(json.loads(result.stdout)["pid"]) if result.returncode == 0 else None

    try:
        bot_pid = wait_until(
            healthy_bot, RUNNING_DEADLINE_S, lambda: f"running and healthy; last status: {last}",
            poll_s=0.5,
        )  # fmt: skip
        assert psutil.Process(bot_pid).uids().real == account.pw_uid
        assert psutil.Process(entry.pid).uids().real == account.pw_uid

        entry.send_signal(signal.SIGTERM)
        output, _ = entry.communicate(timeout=STOP_DEADLINE_S)
        assert entry.returncode == 0, output
    finally:
        if entry.poll() is None:
            entry.kill()
            entry.wait(timeout=10)

    def bot_exited() -> bool:
        try:
            return psutil.Process(bot_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(bot_exited, STOP_DEADLINE_S, "the bot to exit", poll_s=0.1)
    assert _status(lunara, env, account).returncode == 3
    assert [path.name for path in volume.iterdir()]  # state lives on the volume
