"""`lunara data download` against a local server speaking Binance's public data layout:
real-format zips and .CHECKSUM files, a month that is not there, a corrupted zip, an
interrupted run resumed, and the stored candles read back by `lunara backtest`."""

from __future__ import annotations

import calendar
import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from lunara.data.download import Archive, Outcome, PublicData, plan
from lunara.data.formats import read_candle_file
from lunara.trading.market import simulated_candles
from tests.blueprint.cli_harness import (
    TOKENS,
    Cli,
    manifest_document,
    wait_until,
    write_manifest,
)
from tests.fakes.binance_public_data import PublicDataServer, archive_path
from tests.lunara.data.files import Row, binance_zip_bytes

ENTRY = (sys.executable, "-m", "lunara.cli")
HOUR = 3_600_000


def month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)


def hourly_rows(symbol: str, start_ms: int, count: int) -> list[Row]:
    """The sim market's walk for `symbol`, one candle an hour from `start_ms`."""
    candles = simulated_candles(symbol, count)
    return [  # at Binance's 8 decimals
        (
            start_ms + i * HOUR,
            round(c.open, 8),
            round(c.high, 8),
            round(c.low, 8),
            round(c.close, 8),
            1.0,
        )
        for i, c in enumerate(candles)
    ]


def month_rows(symbol: str, year: int, month: int) -> list[Row]:
    days = calendar.monthrange(year, month)[1]
    return hourly_rows(symbol, month_start(year, month), days * 24)


def month_zip(symbol: str, year: int, month: int) -> tuple[str, bytes, list[Row]]:
    period = f"{year:04d}-{month:02d}"
    rows = month_rows(symbol, year, month)
    name = f"{symbol}-1h-{period}"
    return archive_path(symbol, "1h", period), binance_zip_bytes(name, rows), rows


@pytest.fixture
def server() -> Iterator[PublicDataServer]:
    with PublicDataServer() as running:
        yield running


class Scratch:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        self.cli = Cli(self.home, write_manifest(root / "manifest.json", manifest_document()))

    def env(self, **extra: str) -> dict[str, str]:
        return self.cli.env(TOKENS["owner"], {"LUNARA_HOME": str(self.home), **extra})

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*args, entry=ENTRY, extra_env={"LUNARA_HOME": str(self.home), **extra})

    def command(self, *args: str) -> list[str]:
        return [*ENTRY, "--home", str(self.home), "--manifest", str(self.cli.manifest), *args]

    @property
    def cache(self) -> Path:
        return self.home / "data" / "binance"

    @property
    def stored(self) -> Path:
        return self.home / "data" / "BTCUSDT-1h.feather"


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    return Scratch(tmp_path)


@pytest.mark.slow
def test_a_good_month_a_missing_month_and_a_corrupted_zip(
    scratch: Scratch, server: PublicDataServer
) -> None:
    january, good, rows = month_zip("BTCUSDT", 2024, 1)
    server.publish(january, good)
    march, damaged, _ = month_zip("BTCUSDT", 2024, 3)
    server.publish(march, damaged[:-40] + b"\0" * 40, checksum_of=damaged)  # February: 404
    ran = scratch.run("data", "download", "BTCUSDT", "--interval", "1h", "--from", "2024-01",
                      "--to", "2024-03", "--base-url", server.base_url, "--json")  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # a refused file fails the run, after the summary
    summary = json.loads(ran.stdout)["symbols"]["BTCUSDT"]
    assert summary["fetched"] == [{"file": "BTCUSDT-1h-2024-01.zip"}]
    assert summary["missing"] == [{"file": "BTCUSDT-1h-2024-02.zip", "reason": "not found (404)"}]
    assert [item["file"] for item in summary["refused"]] == ["BTCUSDT-1h-2024-03.zip"]
    assert "checksum mismatch" in summary["refused"][0]["reason"]
    assert summary["stored"]["candles"] == len(rows) == 31 * 24
    assert summary["stored"]["first"] == "2024-01-01T00:00:00Z"
    assert summary["stored"]["last"] == "2024-01-31T23:00:00Z"
    kept = sorted(path.name for path in scratch.cache.rglob("*") if path.is_file())
    assert kept == ["BTCUSDT-1h-2024-01.zip", "BTCUSDT-1h-2024-01.zip.CHECKSUM"]  # nothing of March
    stored = read_candle_file(scratch.stored)
    assert stored.kind == "freqtrade feather"
    assert [tuple(row) for row in stored.frame.itertuples(index=False)] == rows


def test_the_stored_candles_feed_a_backtest_of_the_symbol(
    scratch: Scratch, server: PublicDataServer
) -> None:
    for month in (1, 2):
        path, content, _ = month_zip("BTCUSDT", 2024, month)
        server.publish(path, content)
    ran = scratch.run("data", "download", "BTCUSDT", "--interval", "1h", "--from", "2024-01",
                      "--to", "2024-02", LUNARA_PUBLIC_DATA_URL=server.base_url)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "BTCUSDT 1h: 2 files fetched" in ran.stdout
    assert "1440 candles from 2024-01-01 00:00 UTC to 2024-02-29 23:00 UTC (1440 new)" in ran.stdout
    tested = scratch.run("backtest", "--symbol", "BTCUSDT", "--from", "2024-02-01", "--json")
    assert tested.returncode == 0, tested.stderr
    report = json.loads(tested.stdout)
    assert report["candles"] == 29 * 24
    assert report["timeframe"] == "1h"
    assert report["period"]["from"] == "2024-02-01T00:00:00Z"


def test_a_second_run_merges_new_months_without_duplicates_or_fetching_again(
    scratch: Scratch, server: PublicDataServer
) -> None:
    january, content, _ = month_zip("BTCUSDT", 2024, 1)
    server.publish(january, content)
    arguments = ("data", "download", "BTCUSDT", "--interval", "1h", "--base-url",
                 server.base_url, "--json", "--from", "2024-01")  # fmt: skip
    assert scratch.run(*arguments, "--to", "2024-01").returncode == 0
    february, content, _ = month_zip("BTCUSDT", 2024, 2)
    server.publish(february, content)
    again = scratch.run(*arguments, "--to", "2024-02")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)["symbols"]["BTCUSDT"]
    assert summary["kept"] == [{"file": "BTCUSDT-1h-2024-01.zip"}]
    assert summary["fetched"] == [{"file": "BTCUSDT-1h-2024-02.zip"}]
    assert (summary["stored"]["added"], summary["stored"]["candles"]) == (29 * 24, 60 * 24)
    assert len(server.requested(january)) == 1  # verified on disk: never asked again
    times = read_candle_file(scratch.stored).frame["open_time"]
    assert times.is_monotonic_increasing
    assert times.is_unique


def test_an_interrupted_run_is_resumed_where_it_stopped(
    scratch: Scratch, server: PublicDataServer
) -> None:
    january, first, _ = month_zip("BTCUSDT", 2024, 1)
    february, second, _ = month_zip("BTCUSDT", 2024, 2)
    server.publish(january, first)
    server.publish(february, second)
    server.cut_short.add(february)
    command = scratch.command("data", "download", "BTCUSDT", "--interval", "1h", "--from",
                              "2024-01", "--to", "2024-02", "--base-url", server.base_url)  # fmt: skip
    process = subprocess.Popen(command, env=scratch.env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=scratch.root)  # fmt: skip
    part = scratch.cache / (february.removeprefix("data/") + ".part")
    try:
        assert server.half_sent.wait(60), "the download never reached February"
        wait_until(lambda: part.exists() and part.stat().st_size > 0, 30, "a part written")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert (scratch.cache / january.removeprefix("data/")).exists()
    half = part.stat().st_size
    assert 0 < half < len(second)
    assert not scratch.stored.exists()
    resumed = scratch.run("data", "download", "BTCUSDT", "--interval", "1h", "--from",
                          "2024-01", "--to", "2024-02", "--base-url", server.base_url, "--json")  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)["symbols"]["BTCUSDT"]
    assert summary["kept"] == [{"file": "BTCUSDT-1h-2024-01.zip"}]
    assert summary["fetched"] == [{"file": "BTCUSDT-1h-2024-02.zip"}]
    assert summary["bytes"] == len(second) - half  # only the rest was sent
    assert [request.range for request in server.requested(february)] == [None, f"bytes={half}-"]
    assert len(server.requested(january)) == 1
    assert summary["stored"]["candles"] == 60 * 24
    assert not part.exists()
    assert (scratch.cache / february.removeprefix("data/")).read_bytes() == second


def test_a_month_just_over_and_not_yet_published_is_fetched_by_its_days(
    tmp_path: Path, server: PublicDataServer
) -> None:
    today = date(2025, 1, 3)
    for day in (1, 2, 30, 31):
        start = int(datetime(2024 if day > 2 else 2025, 12 if day > 2 else 1, day,
                             tzinfo=UTC).timestamp() * 1000)  # fmt: skip
        period = f"2024-12-{day:02d}" if day > 2 else f"2025-01-{day:02d}"
        rows = hourly_rows("BTCUSDT", start, 24)
        server.publish(archive_path("BTCUSDT", "1h", period),
                       binance_zip_bytes(f"BTCUSDT-1h-{period}", rows, microseconds=day <= 2))  # fmt: skip
    client = PublicData(server.base_url, tmp_path)
    try:
        results = client.fetch_all(plan("BTCUSDT", "1h", (2024, 12), (2025, 1), today), today)
    finally:
        client.close()
    fetched = [r.archive.period for r in results if r.outcome is Outcome.FETCHED]
    assert fetched == ["2024-12-30", "2024-12-31", "2025-01-01", "2025-01-02"]
    missing = [r.archive.period for r in results if r.outcome is Outcome.MISSING]
    assert missing[0] == "2024-12"
    assert len(missing) == 1 + 29  # the month, then its days 1-29


def test_the_plan_takes_months_that_are_over_and_the_days_of_this_month() -> None:
    archives = plan("BTCUSDT", "1m", (2024, 11), (2025, 1), date(2025, 1, 4))
    assert [a.period for a in archives] == [
        "2024-11", "2024-12", "2025-01-01", "2025-01-02", "2025-01-03",
    ]  # fmt: skip
    assert archives[0].path == "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-11.zip"
    assert archives[2] == Archive("BTCUSDT", "1m", "2025-01-01")
    assert archives[2].path == "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-01.zip"
    assert plan("BTCUSDT", "1m", (2025, 1), (2025, 1), date(2025, 1, 1)) == []


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("BTCUSDT", "--interval", "7m"), "--interval 7m: expected one of 1s, 1m"),
        (("BTCUSDT", "--from", "2024-13"), "--from 2024-13: expected a month, YYYY-MM"),
        (("BTCUSDT", "--to", "2999-01"), "--to 2999-01: that month has not begun"),
        (("BTCUSDT", "--from", "2024-05", "--to", "2024-04"), "is after --to"),
        (("BTCUSDT", "--base-url", "ftp://example"), "expected an http:// or https:// URL"),
        (("BTC/USDT!",), "BTC/USDT!: a symbol is letters and digits"),
    ],
)
def test_bad_download_arguments_are_a_one_line_usage_error(
    scratch: Scratch, arguments: tuple[str, ...], said: str
) -> None:
    refused = scratch.run("data", "download", *arguments)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.replace("│", " ").split())
    assert said in message, message
    assert "Traceback" not in refused.stderr


def test_on_a_terminal_a_progress_bar_shows_files_and_bytes(
    scratch: Scratch, server: PublicDataServer
) -> None:
    path, content, _ = month_zip("BTCUSDT", 2024, 1)
    server.publish(path, content)
    env = scratch.env()
    env.pop("NO_COLOR", None)
    env["COLUMNS"], env["TERM"] = "120", "xterm"
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        scratch.command("data", "download", "BTCUSDT", "--interval", "1h", "--from", "2024-01",
                        "--to", "2024-01", "--base-url", server.base_url),
        env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, cwd=scratch.root,
    )  # fmt: skip
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(30) == 0, shown.decode(errors="replace")
    text = shown.decode(errors="replace")
    assert "1/1 files" in text
    assert "MiB" in text
    assert "BTCUSDT 1h: 1 files fetched" in text
