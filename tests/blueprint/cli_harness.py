"""Running the real `lunara` CLI in a subprocess against a scratch home and manifest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.waiting import wait_until as wait_until  # the tests import it from here too

ROOT = Path(__file__).resolve().parents[2]

# A bot that does nothing but beat: enough for the control plane's tests.
HEARTBEAT_BOT = (
    "import asyncio, os, pathlib\n"
    "from blueprint.heartbeat import heartbeat_loop\n"
    "async def main():\n"
    "    stop = asyncio.Event()\n"
    "    import signal\n"
    "    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)\n"
    "    await heartbeat_loop(pathlib.Path(os.environ['LUNARA_HOME']) / 'heartbeat', stop, 0.2)\n"
    "asyncio.run(main())\n"
)

TOKENS = {
    "owner": "owner-token-0123456789",
    "operator": "operator-token-0123456789",
    "ci": "ci-token-0123456789",
}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


REAL_BOT_ENTRY = (sys.executable, "-m", "lunara.cli")
"""The CLI with the bot's own commands, for tests that run the real bot."""
REAL_BOT_PROGRAM = {
    "command": ["python", "-m", "lunara"],
    "stop_timeout_s": 10,
    "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 1, "max_restarts": 3, "window_s": 60},
    "memory_limit_mib": 450,
    "heartbeat_timeout_s": 30,
}
"""The manifest program that supervises the real bot (`python -m lunara`)."""


def manifest_document(program: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": 1,
        "name": "lunara-test",
        "program": dict(
            program
            or {
                "command": [sys.executable, "-c", HEARTBEAT_BOT],
                "stop_timeout_s": 3,
                "restart": {
                    "backoff_initial_s": 0.2,
                    "backoff_max_s": 1,
                    "max_restarts": 20,
                    "window_s": 60,
                },
                "memory_limit_mib": 400,
                "heartbeat_timeout_s": 10,
            }
        ),
        "roles": {
            "owner": ["*"],
            "operator": [
                "bot.start",
                "bot.stop",
                "bot.restart",
                "bot.status",
                "bot.logs",
                "bot.audit",
            ],
            "ci": ["bot.start", "bot.stop", "bot.restart", "bot.status"],
            "admin": ["tg.admin.*", "tg.trade.*", "tg.info.*"],
            "trader": ["tg.trade.*", "tg.info.*"],
        },
        "principals": {
            f"token:{role}": {"role": role, "sha256": sha256(token)}
            for role, token in TOKENS.items()
        },
        "defaults": {"telegram": "trader"},
    }
    document.update(overrides)
    return document


@dataclass
class Cli:
    """A scratch installation: home, manifest and the environment to call the CLI with."""

    home: Path
    manifest: Path

    def env(
        self, token: str | None = None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("LUNARA_") and key != "REDIS_URL"
        }
        env["NO_COLOR"] = "1"
        env["PYTHONPATH"] = str(ROOT)
        if token is not None:
            env["LUNARA_TOKEN"] = token
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        *args: str,
        token: str | None = TOKENS["owner"],
        extra_env: Mapping[str, str] | None = None,
        entry: Sequence[str] = (sys.executable, "-m", "blueprint"),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*entry, "--home", str(self.home), "--manifest", str(self.manifest), *args],
            env=self.env(token, extra_env),
            cwd=self.home.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def status(self, token: str | None = TOKENS["owner"]) -> dict[str, Any]:
        result = self.run("status", "--json", token=token)
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def audit_entries(self) -> list[dict[str, Any]]:
        path = self.home / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_manifest(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2))
    path.chmod(0o644)
    return path
