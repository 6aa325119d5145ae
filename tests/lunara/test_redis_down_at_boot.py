"""The real bot under the real watchdog, started while the Redis it is configured with
is down: it runs on SQLite alone instead of crash-looping, and says so once."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from tests.blueprint.cli_harness import Cli, manifest_document, wait_until, write_manifest

ENTRY = (sys.executable, "-m", "lunara.cli")
PROGRAM = {
    "command": ["python", "-m", "lunara"],
    "stop_timeout_s": 10,
    "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 1, "max_restarts": 3, "window_s": 60},
    "memory_limit_mib": 450,
    "heartbeat_timeout_s": 30,
}


def test_the_bot_starts_and_keeps_ticking_on_sqlite_while_redis_is_down(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(PROGRAM)))
    env = {
        "LUNARA_HOME": str(home),
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "LUNARA_TICK_SECONDS": "0.2",
    }
    try:
        started = cli.run("start", "--wait", "60", entry=ENTRY, extra_env=env)
        assert started.returncode == 0, started.stderr
        metrics = home / "metrics.json"

        def ticked() -> bool:
            if not metrics.exists():
                return False
            return "tick_duration_seconds" in json.loads(metrics.read_text() or "{}")

        wait_until(ticked, 30, "a trading tick")
        status = json.loads(cli.run("status", "--json", entry=ENTRY, extra_env=env).stdout)
        assert status["state"] == "running" and status["restarts"] == 0
        log = (home / "logs" / "bot.log").read_text()
        assert log.count("Redis unavailable") == 1
        assert "Traceback" not in log
    finally:
        cli.run("stop", "--timeout", "20", entry=ENTRY, extra_env=env)
