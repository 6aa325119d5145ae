"""Root's `lunara` trusts only files the caller or root could have written.

The second-user scenarios: another user's manifest, home or `.env` in a shared
directory; a directory above them that others can change; a socket another user
planted. Symlinks planted where the home's files are written are never followed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from blueprint.metrics import write_metrics
from blueprint.statusclient import query_status
from blueprint.trust import UntrustedPath, check_trusted_file, open_private, replace_private
from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest
from tests.security.conftest import SYSTEM_PYTHON, OtherUser

# A manifest whose program would show that it ran: the attack is a program root runs.
PWNED_PROGRAM = {
    "command": [sys.executable, "-c", "import pathlib; pathlib.Path('PWNED').touch()"],
    "stop_timeout_s": 3,
}


def installation(base: Path) -> Cli:
    home = base / "home"
    home.mkdir(mode=0o700)
    return Cli(home, write_manifest(base / "manifest.json", manifest_document()))


def test_another_users_manifest_is_refused_and_its_program_never_runs(
    other_user: OtherUser, shared_dir: Path
) -> None:
    workspace = shared_dir / "workspace"
    workspace.mkdir(mode=0o755)  # root's, so only the manifest is someone else's
    cli = installation(workspace)
    forged = write_manifest(workspace / "forged.json", manifest_document(program=PWNED_PROGRAM))
    forged.chmod(0o644)
    other_user.own(forged)
    result = Cli(cli.home, forged).run("start", "--wait", "5")
    assert result.returncode == 6, result.stderr
    assert f"is owned by {other_user.name}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace / "PWNED").exists()
    assert not (cli.home / "ledger.json").exists()


def test_a_manifest_in_a_directory_another_user_owns_is_refused(
    other_user: OtherUser, shared_dir: Path
) -> None:
    theirs = shared_dir / "theirs"
    theirs.mkdir(mode=0o755)
    other_user.own(theirs)  # they may swap the (root-owned) file for their own at any time
    manifest = write_manifest(theirs / "manifest.json", manifest_document())
    home = shared_dir / "home"
    home.mkdir(mode=0o700)
    result = Cli(home, manifest).run("status")
    assert result.returncode == 6, result.stderr
    assert f"the directory {theirs} is owned by {other_user.name}" in result.stderr


def test_another_users_home_is_refused(other_user: OtherUser, shared_dir: Path) -> None:
    workspace = shared_dir / "workspace"
    workspace.mkdir(mode=0o755)
    cli = installation(workspace)
    other_user.own(cli.home)  # e.g. their ./.lunara, with their ledger and control.sock
    result = cli.run("status")
    assert result.returncode == 6, result.stderr
    assert f"home {cli.home} is owned by {other_user.name}" in result.stderr
    assert not (cli.home / "audit.jsonl").exists()  # nothing was written into it


def test_another_users_dot_env_is_refused(other_user: OtherUser, shared_dir: Path) -> None:
    workspace = shared_dir / "workspace"
    workspace.mkdir(mode=0o755)
    cli = installation(workspace)
    dot_env = workspace / ".env"  # the CLI runs with the workspace as working directory
    dot_env.write_text("REDIS_URL=redis://attacker.example:6379/0\n")
    dot_env.chmod(0o644)
    other_user.own(dot_env)
    result = cli.run("status")
    assert result.returncode == 6, result.stderr
    assert f"{dot_env} is owned by {other_user.name}" in result.stderr


def test_a_socket_another_user_planted_never_receives_the_token(
    other_user: OtherUser, shared_dir: Path
) -> None:
    """Defence in depth behind the home check: a socket file that is not ours, or one
    whose listening process is not ours even though the file is, gets no request."""
    planted = shared_dir / "control.sock"
    received = shared_dir / "received"
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 the second user may run")
    server = other_user.popen(
        [
            SYSTEM_PYTHON,
            "-c",
            "import socket, sys, pathlib\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); data = c.recv(65536)\n"
            "    if data:  # a client that hung up at once sent nothing\n"
            "        pathlib.Path(sys.argv[2]).write_bytes(data)\n"
            '        c.sendall(b\'{"exit_code": 0, "report": {"state": "running"}}\\n\')\n'
            "    c.close()\n",
            str(planted),
            str(received),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        manifest = shared_dir / "manifest.json"
        assert query_status(planted, manifest, "ci-secret-token") is None  # file not ours
        os.chown(planted, 0, 0)  # the file is root's now, but the listener is still theirs
        assert query_status(planted, manifest, "ci-secret-token") is None
        assert not received.exists()
    finally:
        server.kill()
        server.communicate()  # reaps it and closes its pipe


def test_a_group_writable_directory_above_the_manifest_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)  # the group could replace the manifest with its own
    home = tmp_path / "home"
    home.mkdir()
    manifest = write_manifest(shared / "manifest.json", manifest_document())
    result = Cli(home, manifest).run("status")
    assert result.returncode == 6, result.stderr
    assert f"the directory {shared} is writable by its group or by others" in result.stderr


def test_a_sticky_world_writable_directory_above_is_accepted(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot replace what they do not own
    manifest = write_manifest(sticky / "manifest.json", manifest_document())
    check_trusted_file(manifest, "manifest")
    sticky.chmod(0o777)
    with pytest.raises(UntrustedPath, match="writable by its group or by others"):
        check_trusted_file(manifest, "manifest")


def test_a_logs_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    cli = installation(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cli.home / "logs").symlink_to(elsewhere)
    result = cli.run("status")
    assert result.returncode == 6, result.stderr
    assert "is a symlink" in result.stderr


@pytest.mark.parametrize("name", ["metrics.json", "crash-report.json", "telegram-state.json"])
def test_a_symlink_planted_at_a_temporary_file_is_replaced_not_followed(
    tmp_path: Path, name: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / f"{name}.tmp").symlink_to(victim)
    replace_private(tmp_path / name, b"{}")
    assert victim.read_text() == "precious\n"
    assert json.loads((tmp_path / name).read_text()) == {}
    assert not (tmp_path / name).is_symlink()


def test_metrics_are_written_through_the_no_follow_writer(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "metrics.json.tmp").symlink_to(victim)
    write_metrics(tmp_path / "metrics.json", {"orders_placed_total": 3})
    assert victim.read_text() == "precious\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"orders_placed_total": 3.0}


def test_every_replaced_file_of_the_home_goes_through_the_no_follow_writer(
    tmp_path: Path,
) -> None:
    """The ledger, the heartbeat, the dependency report and the exit message each leave a
    symlink planted at their temporary name untouched, and are written in its place."""
    from blueprint.dependencies import write_dependencies
    from blueprint.exit_message import leave_exit_message
    from blueprint.heartbeat import write_heartbeat
    from blueprint.ledger import Ledger
    from blueprint.mirror import NullMirror
    from blueprint.paths import HomePaths

    paths = HomePaths(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    written: dict[str, Callable[[], object]] = {
        "ledger.json": lambda: Ledger(paths, "lunara", NullMirror()).update(lambda _: None),
        "heartbeat": lambda: write_heartbeat(paths.heartbeat, "up"),
        "dependencies.json": lambda: write_dependencies(paths.dependencies, {}),
        "exit-message": lambda: leave_exit_message(paths, "bad settings"),
    }
    for name, write in written.items():
        (tmp_path / f"{name}.tmp").symlink_to(victim)
        write()
        assert victim.read_text() == "precious\n", name
        assert not (tmp_path / f"{name}.tmp").exists(), name
        assert (tmp_path / name).is_file(), name
        assert not (tmp_path / name).is_symlink(), name
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name


def test_a_symlink_at_a_log_or_lock_is_never_written_through(tmp_path: Path) -> None:
    from blueprint.logfiles import open_append

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "bot-output.log"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="symbolic links"):  # ELOOP, from O_NOFOLLOW
        open_append(link)
    with pytest.raises(OSError, match="symbolic links"):
        open_private(link, os.O_RDWR | os.O_CREAT)
    assert victim.read_text() == "precious\n"


def test_our_own_socket_and_watchdog_are_asked(tmp_path: Path) -> None:
    """The positive side of the socket check: a listener of ours gets the request."""
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    seen: list[bytes] = []

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            seen.append(connection.recv(65536))
            connection.sendall(b'{"exit_code": 0, "report": {"state": "running"}}\n')

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        reply = query_status(path, tmp_path / "manifest.json", None)
    finally:
        thread.join(10)
        listener.close()
    assert reply == {"exit_code": 0, "report": {"state": "running"}}
    assert seen
    assert json.loads(seen[0])["action"] == "status"


def test_a_home_another_user_planted_in_a_shared_directory_never_gets_the_token(
    other_user: OtherUser, shared_dir: Path
) -> None:
    """Root runs `lunara status` in a shared directory holding another user's ./.lunara,
    with a socket and a listener of theirs: by default nothing is sent to them; named
    with --home, they are asked as another user's deployment, without the token."""
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 the second user may run")
    home = shared_dir / ".lunara"
    home.mkdir(mode=0o700)
    other_user.own(home)
    received = shared_dir / "received"
    received.touch()
    other_user.own(received)
    server = other_user.popen(
        [
            SYSTEM_PYTHON,
            "-c",
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)\n"
            "print('ready', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); data = c.recv(65536)\n"
            "    if data:\n"
            "        open(sys.argv[2], 'ab').write(data)\n"
            '        c.sendall(b\'{"exit_code": 0, "report": {"state": "running"}}\\n\')\n'
            "    c.close()\n",
            str(home / "control.sock"),
            str(received),
        ],
        stdout=subprocess.PIPE,
    )
    manifest = write_manifest(shared_dir / "manifest.json", manifest_document())
    env = Cli(home, manifest).env(token="ci-secret-token-0123")
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        by_default = subprocess.run(
            [sys.executable, "-m", "blueprint", "--manifest", str(manifest), "status"],
            env=env, cwd=shared_dir, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert by_default.returncode == 6, by_default.stderr
        assert received.read_bytes() == b""
        named = subprocess.run(
            [sys.executable, "-m", "blueprint", "--home", str(home), "status", "--json"],
            env=env, cwd=shared_dir, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert b"ci-secret-token" not in received.read_bytes()
        assert json.loads(received.read_bytes())["token"] is None
        assert "ci-secret-token" not in named.stdout + named.stderr
    finally:
        server.kill()
        server.communicate()  # reaps it and closes its pipe
