"""The optional health endpoint, over real HTTP, served by a real watchdog."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import Cli, manifest_document, wait_until, write_manifest

SECRET = "7312345678:AAH3kq9ZxV0b1c2d3e4f5g6h7i8j9k0lMnOpQ"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_healthz_follows_the_bot_and_metrics_are_prometheus_text(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    program = {
        "command": manifest_document()["program"]["command"],
        "stop_timeout_s": 3,
        # A long backoff keeps the bot down long enough to see 503.
        "restart": {
            "backoff_initial_s": 30,
            "backoff_max_s": 30,
            "max_restarts": 5,
            "window_s": 60,
        },
        "memory_limit_mib": 400,
        "heartbeat_timeout_s": 10,
    }
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document(program=program)))
    port = free_port()
    env = {
        "LUNARA_HEALTH_PORT": str(port),
        "LUNARA_HEALTH_HOST": "127.0.0.1",
        "TELEGRAM_BOT_TOKEN": SECRET,
    }
    try:
        assert cli.run("start", "--wait", "30", extra_env=env).returncode == 0
        status, body = get(port, "/healthz")
        assert status == 200, body
        document = json.loads(body)
        assert document["state"] == "running"
        assert document["restarts"] == 0
        metrics_status, metrics = get(port, "/metrics")
        assert metrics_status == 200
        for name in (
            "lunara_up 1",
            "lunara_restarts_total 0",
            "lunara_bot_rss_bytes",
            "lunara_heartbeat_age_seconds",
        ):
            assert name in metrics, name
        assert all(
            line.startswith(("# HELP", "# TYPE", "lunara_")) for line in metrics.splitlines()
        )
        assert SECRET not in body
        assert SECRET not in metrics

        os.kill(cli.status()["pid"], signal.SIGKILL)  # the watchdog waits 30 s to restart
        # 503 as soon as the bot is gone; then the watchdog records the backoff and the
        # endpoint keeps answering while the bot waits to be restarted.
        wait_until(lambda: get(port, "/healthz")[0] == 503, 15, "healthz to report the dead bot")

        def in_backoff() -> bool:
            code, text = get(port, "/healthz")
            return code == 503 and json.loads(text)["state"] == "backoff"

        wait_until(in_backoff, 15, "healthz to report the backoff")
        down_status, down_body = get(port, "/healthz")
        assert down_status == 503
        assert SECRET not in down_body
        assert SECRET not in get(port, "/metrics")[1]
        assert get(port, "/nope")[0] == 404
    finally:
        cli.run("stop", "--timeout", "5")


def test_no_port_is_opened_unless_asked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    try:
        assert cli.run("start", "--wait", "30").returncode == 0
        watchdog = cli.status()["supervisor_pid"]
        import psutil

        listening = [
            c for c in psutil.Process(watchdog).net_connections(kind="inet") if c.status == "LISTEN"
        ]
        assert listening == []
        assert "health endpoint" not in (home / "logs" / "watchdog.log").read_text()
    finally:
        cli.run("stop", "--timeout", "5")


@pytest.mark.parametrize("command", [("start",), ("start", "--wait", "30"), ("run",)])
@pytest.mark.parametrize(
    ("variable", "value"), [("LUNARA_HEALTH_PORT", "abc"), ("PORT", "99999"), ("PORT", "²")]
)
def test_a_health_port_that_is_not_a_port_is_a_configuration_error(
    tmp_path: Path, command: tuple[str, ...], variable: str, value: str
) -> None:
    """Once logged and ignored: the watchdog ran without its endpoint, healthy by its own
    account, while the platform probing the port restarted it."""
    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    try:
        result = cli.run(*command, extra_env={variable: value}, timeout=30)
        assert result.returncode == 6, result.stdout + result.stderr
        assert result.stderr == (
            f"lunara: invalid configuration: {variable}: must be a port number from 1 to "
            f"65535 (got {value!r})\n"
        )
        assert cli.run("status", "--quiet").returncode == 3  # nothing was left running
    finally:
        cli.run("stop", "--timeout", "5")


def test_render_metrics_includes_the_bots_counters() -> None:
    from blueprint.health import render_metrics
    from blueprint.status import StatusReport

    report = StatusReport(
        state="running", pid=1, supervisor_pid=2, started_at=None, uptime_s=1.0, restarts=3,
        last_exit=None, rss_mib=10.0, heartbeat_age_s=0.5,
        mirror={"backend": "off", "healthy": True, "synced_revision": None},
        ledger_revision=1, principal=None, healthy=True, notes=[],
    )  # fmt: skip
    text = render_metrics(report, {"orders_placed_total": 7.0, "tick_duration_seconds": 0.01})
    assert "lunara_orders_placed_total 7\n" in text  # counts and bytes are whole numbers
    assert "lunara_tick_duration_seconds 0.01" in text
    assert "lunara_restarts_total 3\n" in text
    assert "lunara_bot_rss_bytes 10485760\n" in text


@pytest.mark.slow
def test_idle_clients_neither_grow_threads_nor_shut_out_a_probe(tmp_path: Path) -> None:
    """900 clients that connect and send nothing (and one that sends half a request):
    the watchdog's threads stay as they were, no more than MAX_PENDING of them are held,
    a probe is still answered, and every idle one is dropped after READ_TIMEOUT_S."""
    import psutil

    from blueprint.health import MAX_PENDING, WORKERS

    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    port = free_port()
    clients: list[socket.socket] = []
    try:
        started = cli.run("start", "--wait", "30", extra_env={"LUNARA_HEALTH_PORT": str(port)})
        assert started.returncode == 0, started.stderr
        watchdog = psutil.Process(cli.status()["supervisor_pid"])
        for _ in range(WORKERS * 3):  # the answering threads exist from here on
            assert get(port, "/healthz")[0] == 200
        threads_before = watchdog.num_threads()

        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        clients.append(slow)
        for _ in range(900):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))

        def dropped() -> int:
            count = 0
            for client in clients:
                client.setblocking(False)
                try:
                    count += client.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    count += 1
            return count

        # Past MAX_PENDING the oldest are dropped at once, not after their timeout.
        wait_until(lambda: dropped() >= len(clients) - MAX_PENDING, 20, "the oldest dropped")
        held = [c for c in watchdog.net_connections("tcp") if c.laddr and c.laddr.port == port]
        assert len([c for c in held if c.status == psutil.CONN_ESTABLISHED]) <= MAX_PENDING
        assert get(port, "/healthz")[0] == 200  # a probe is answered all the same
        assert watchdog.num_threads() <= threads_before
        # And each idle one, the half request included, is dropped after its timeout.
        wait_until(lambda: dropped() == len(clients), 30, "every idle client dropped")
        assert watchdog.num_threads() <= threads_before
    finally:
        for client in clients:
            client.close()
        cli.run("stop", "--timeout", "5")


def test_a_request_head_past_the_limit_is_dropped_unanswered(tmp_path: Path) -> None:
    from blueprint.health import MAX_REQUEST_HEAD

    home = tmp_path / "home"
    home.mkdir()
    cli = Cli(home, write_manifest(tmp_path / "manifest.json", manifest_document()))
    port = free_port()
    try:
        started = cli.run("start", "--wait", "30", extra_env={"LUNARA_HEALTH_PORT": str(port)})
        assert started.returncode == 0, started.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * MAX_REQUEST_HEAD)
            try:
                answer = client.recv(1024)
            except ConnectionResetError:  # closed with the rest unread: a reset, no answer
                answer = b""
            assert answer == b""
        assert get(port, "/healthz")[0] == 200
    finally:
        cli.run("stop", "--timeout", "5")
