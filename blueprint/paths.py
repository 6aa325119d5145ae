"""Where Lunara keeps its state on disk: one place that knows the layout of LUNARA_HOME."""

from __future__ import annotations

import os
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
    def database(self) -> Path:
        return self.root / "lunara.db"

    def ensure(self) -> None:
        """Create the home and its logs folder, private to the owner."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
