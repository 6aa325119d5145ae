"""Where Lunara keeps its state on disk: one place that knows the layout of LUNARA_HOME.

Everything in the home is private to its owner (files 0600, directories 0700): it holds
the database with the traders' encrypted keys, the logs and the audit trail. The
processes that write there run under ``PRIVATE_UMASK``, so what they create is private
whatever umask they were started with, and the watchdog puts right what an older
release or a hand copy left readable, once per start.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from blueprint.locations import DEFAULT_HOME as DEFAULT_HOME
from blueprint.locations import control_socket, resolve_home


@dataclass(frozen=True)
class HomePaths:
    """The files under LUNARA_HOME. Pure path arithmetic: nothing is created here."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> HomePaths:
        return cls(resolve_home(home))

    @property
    def control_socket(self) -> Path:
        """The watchdog answers `status` here (see blueprint.statusd)."""
        return control_socket(self.root)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.json"

    @property
    def ledger_lock(self) -> Path:
        return self.root / "ledger.json.lock"

    @property
    def start_lock(self) -> Path:
        return self.root / "start.lock"

    @property
    def watchdog_lock(self) -> Path:
        return self.root / "watchdog.lock"

    @property
    def bound_manifest(self) -> Path:
        """Which manifest this home belongs to (see blueprint.authority)."""
        return self.root / "manifest.bound"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bot_log(self) -> Path:
        return self.logs / "bot.log"

    @property
    def bot_output(self) -> Path:
        """The bot's raw stdout/stderr as captured by the watchdog (crashes, native errors)."""
        return self.logs / "bot-output.log"

    @property
    def watchdog_log(self) -> Path:
        return self.logs / "watchdog.log"

    @property
    def heartbeat(self) -> Path:
        return self.root / "heartbeat"

    @property
    def dependencies(self) -> Path:
        """What the bot last found of Telegram, Redis, the exchange and Gemini."""
        return self.root / "dependencies.json"

    @property
    def database(self) -> Path:
        return self.root / "lunara.db"

    @property
    def data(self) -> Path:
        """Candles for backtests, kept by `lunara data download`."""
        return self.root / "data"

    def ensure(self) -> None:
        """Create the home and its logs folder, private to the owner whatever mode the
        operator gave the home itself."""
        from blueprint.trust import check_owner_and_mode, check_parents

        check_parents(self.root, "home")
        for directory in (self.root, self.logs):
            directory.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
            keep = self._root_keeps() if directory == self.root else 0
            _make_private(directory, DIRECTORY_MODE, keep)
            # lstat: a logs folder that is a symlink (to another user's folder) is refused.
            check_owner_and_mode(os.lstat(directory), directory, "home")

    def make_private(self) -> int:
        """Give every file under the home 0600 and every directory 0700 (symlinks are
        neither followed nor changed; what another user owns is left alone). Returns how
        many entries were changed."""
        changed = 0
        for folder, directories, files in os.walk(self.root):
            base = Path(folder)
            for name in directories:
                changed += _make_private(base / name, DIRECTORY_MODE)
            for name in files:
                changed += _make_private(base / name, FILE_MODE)
        return changed + _make_private(self.root, DIRECTORY_MODE, self._root_keeps())

    def _root_keeps(self) -> int:
        """Group search on the home while a group may use its control socket (the
        watchdog gives both to a manifest's `control.group`); nothing otherwise."""
        try:
            home = os.lstat(self.root)
            socket = os.lstat(self.control_socket)
        except OSError:
            return 0
        shared = stat.S_ISSOCK(socket.st_mode) and stat.S_IMODE(socket.st_mode) & 0o060
        return HOME_GROUP_TRAVERSE if shared and socket.st_gid == home.st_gid else 0


FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
PRIVATE_UMASK = 0o077
HOME_GROUP_TRAVERSE = 0o010
"""The home itself may keep group search (x): with a manifest `control.group`, the
group reaches the control socket by name; it can neither list nor read the home."""


def use_private_umask() -> None:
    """Files and directories this process creates from now on are its owner's alone."""
    os.umask(PRIVATE_UMASK)


def _make_private(path: Path, mode: int, keep: int = 0) -> int:
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return 0
    if stat.S_IMODE(info.st_mode) & 0o077 & ~keep == 0:
        return 0
    try:
        os.chmod(path, stat.S_IMODE(info.st_mode) & (mode | keep), follow_symlinks=False)
    except (OSError, NotImplementedError):
        return 0
    return 1
