"""Shared helpers for the benchmarks: scratch homes, manifests and timing."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUNARA = [sys.executable, "-m", "blueprint"]


def write_manifest(directory: Path, program: dict[str, Any] | None = None) -> Path:
    """A manifest that makes the current OS user the owner."""
    import getpass

    manifest = {
        "version": 1,
        "name": "lunara-bench",
        "program": program
        or {
            "command": [sys.executable, "-m", "lunara"],
            "stop_timeout_s": 10,
            "restart": {
                "backoff_initial_s": 1,
                "backoff_max_s": 60,
                "max_restarts": 50,
                "window_s": 300,
            },
            "memory_limit_mib": 450,
            "heartbeat_timeout_s": 60,
        },
        "roles": {"owner": ["*"]},
        "principals": {f"os_user:{getpass.getuser()}": "owner"},
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    path.chmod(0o644)
    return path


def bench_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNARA_") and k != "REDIS_URL"}
    env["LUNARA_HOME"] = str(home)
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    return env


def lunara(
    args: Sequence[str], home: Path, manifest: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LUNARA, "--home", str(home), "--manifest", str(manifest), *args],
        env=bench_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        check=check,
    )


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000.0


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def start_fake(
    module: str, workdir: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m tests.fakes.<module> --port 0`; its first output line is its URL.

    The caller owns the returned process (and stops it); stderr goes to
    `workdir/<module>.log`.
    """
    log = (workdir / f"{module}.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", f"tests.fakes.{module}", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert child.stdout is not None
    url = child.stdout.readline().decode().strip()
    if not url.startswith("http://127.0.0.1:"):
        child.kill()
        child.wait()
        raise SystemExit(f"{module} did not start (see {workdir / (module + '.log')})")
    return child, url
