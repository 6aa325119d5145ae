"""Scratch supervised installations for the supervisor's tests: home, manifest, controller.

Tests run the real watchdog and real bots (the programs next to this file); every helper
here waits on a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from blueprint.control import Controller
from blueprint.ledger import Ledger, LedgerDocument
from blueprint.manifest import load_manifest
from blueprint.mirror import NullMirror
from blueprint.paths import HomePaths
from tests.waiting import wait_until as wait_until  # the tests import it from here too

PROGRAMS = Path(__file__).resolve().parent
PRINCIPAL = "os_user:tester"
T = TypeVar("T")


def program(name: str, *arguments: str) -> list[str]:
    """The command that runs one of the test bots."""
    return [sys.executable, str(PROGRAMS / f"{name}.py"), *arguments]


def tight_program(command: list[str], **overrides: Any) -> dict[str, Any]:
    """A program section with short limits, so behaviours show within seconds."""
    restart = {
        "backoff_initial_s": 0.2,
        "backoff_max_s": 0.4,
        "max_restarts": 50,
        "window_s": 60,
        "healthy_after_s": 30,
    }
    restart.update(overrides.pop("restart", {}))
    section: dict[str, Any] = {
        "command": command,
        "stop_timeout_s": 2,
        "restart": restart,
        "memory_limit_mib": 400,
        "heartbeat_timeout_s": 5,
    }
    section.update(overrides)
    return section


def write_manifest(path: Path, program_section: dict[str, Any]) -> Path:
    document = {
        "version": 1,
        "name": "lunara-test",
        "program": program_section,
        "roles": {"owner": ["*"]},
        "principals": {PRINCIPAL: "owner"},
        "defaults": {},
    }
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


@dataclass
class Installation:
    """One home under one manifest, with its controller."""

    paths: HomePaths
    manifest_path: Path
    controller: Controller
    ledger: Ledger
    extra_pids: list[psutil.Process] = field(default_factory=list)

    def document(self) -> LedgerDocument:
        return self.ledger.read().document

    def bot(self) -> psutil.Process | None:
        from blueprint.process import find_process

        return find_process(self.document().bot)

    def watchdog(self) -> psutil.Process | None:
        from blueprint.process import find_process

        return find_process(self.document().watchdog)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.document().events if event["kind"] == kind]

    def bot_log(self) -> str:
        """What the test bots print: their stdout/stderr as captured by the watchdog."""
        path = self.paths.bot_output
        return path.read_text(errors="replace") if path.exists() else ""

    def watchdog_log(self) -> str:
        path = self.paths.watchdog_log
        return path.read_text(errors="replace") if path.exists() else ""

    def tear_down(self) -> None:
        """Stop whatever is left; then make sure nothing recorded here survives."""
        leftovers = [p for p in (self.watchdog(), self.bot()) if p is not None]
        with contextlib.suppress(Exception):
            self.controller.stop(PRINCIPAL, 2.0)
        for process in leftovers:
            kill_everything([process])


def installation(tmp_path: Path, program_section: dict[str, Any]) -> Installation:
    paths = HomePaths.resolve(tmp_path / "home")
    paths.ensure()
    manifest_path = write_manifest(tmp_path / "manifest.json", program_section)
    manifest = load_manifest(manifest_path)
    mirror = NullMirror()
    ledger = Ledger(paths, manifest.name, mirror)
    controller = Controller(paths, manifest, manifest_path, ledger, mirror)
    return Installation(paths, manifest_path, controller, ledger)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_everything(processes: Iterable[psutil.Process]) -> None:
    """Last-resort cleanup of test processes and their descendants."""
    victims: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            victims.extend([process, *process.children(recursive=True)])
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=5)


def read_tree(path: Path, expected: int, timeout_s: float = 15.0) -> list[psutil.Process]:
    """The processes a stubborn bot registered, once all `expected` of them did."""

    def registered() -> list[tuple[int, float]] | None:
        if not path.exists():
            return None
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        return [(int(pid), float(ct)) for pid, ct in rows] if len(rows) >= expected else None

    members = wait_until(registered, timeout_s, f"{expected} processes in {path}")
    processes = []
    for pid, create_time in members:
        process = psutil.Process(pid)
        assert abs(process.create_time() - create_time) < 1.5
        processes.append(process)
    return processes


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LUNARA_HOME"] = str(home)
    return env
