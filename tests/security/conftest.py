"""A second, unprivileged OS user for the trust-boundary tests.

The holes these tests guard are local: another user on the same host plants a
manifest, a home, a `.env`, a socket or a process for root's `lunara` to trust. Proving
them needs a real second user, so when the tests run as root (CI does) a throwaway one is
created with `useradd` and removed afterwards; otherwise those tests are skipped with the
reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
"""An interpreter the second user may run (ours may sit under root's private home)."""


@dataclass(frozen=True)
class OtherUser:
    """A throwaway OS user that is not us and not root."""

    name: str
    uid: int
    gid: int

    def run(
        self, command: Sequence[str], groups: Sequence[int] = (), **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` as this user with only `groups` besides its own, like `setpriv`."""
        return subprocess.run(
            list(command),
            user=self.uid,
            group=self.gid,
            extra_groups=list(groups),
            text=True,
            **kwargs,
        )

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            list(command), user=self.uid, group=self.gid, extra_groups=[], text=True, **kwargs
        )

    def own(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a second OS user with useradd (CI runs as root)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("needs useradd and userdel to create a second OS user")
    name = f"lunsec{os.getpid() % 1_000_000}"
    created = subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        capture_output=True,
        text=True,
    )
    if created.returncode != 0:
        pytest.skip(f"useradd failed: {created.stderr.strip()}")
    entry = pwd.getpwnam(name)
    try:
        yield OtherUser(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def control_group(other_user: OtherUser) -> Iterator[tuple[str, int]]:
    """A throwaway group (name, gid) for the manifest's `control.group`."""
    import grp

    name = f"lunsecg{os.getpid() % 1_000_000}"
    created = subprocess.run(["groupadd", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"groupadd failed: {created.stderr.strip()}")
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory both users reach, sticky and world-writable like /tmp (a shared CI
    workspace, a PaaS build directory)."""
    path = Path(tempfile.mkdtemp(prefix="lunara-shared-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
