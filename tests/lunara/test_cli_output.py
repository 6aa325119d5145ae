"""What the CLI prints is for people: sentences, prices at their own precision, dates,
readable status lines; and a bad argument is a one-line usage error (exit 2)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.blueprint.cli_harness import Cli, manifest_document, write_manifest

ENTRY = (sys.executable, "-m", "lunara.cli")
CANDLES = 200


def _klines(path: Path, base: float) -> Path:
    rows = ["open_time,open,high,low,close,volume"]
    for index in range(CANDLES):
        close = base * (1 + 0.01 * ((index % 7) - 3) / 3)
        rows.append(
            f"{1_700_000_000_000 + index * 60_000},{close},{close * 1.001},{close * 0.999},{close},5"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


async def _create_database(path: Path) -> None:
    from lunara.storage.database import open_database

    connection = await open_database(path)
    await connection.close()


class Scratch:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        self.cli = Cli(self.home, write_manifest(root / "manifest.json", manifest_document()))
        self.market = _klines(root / "prices.csv", 0.55115)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        extra = {"LUNARA_HOME": str(self.home), "LUNARA_MARKET": f"replay:{self.market}", **env}
        return self.cli.run(*args, entry=ENTRY, extra_env=extra)


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    return Scratch(tmp_path)


def test_backup_and_restore_say_what_they_did_in_a_sentence(scratch: Scratch) -> None:
    asyncio.run(_create_database(scratch.home / "lunara.db"))
    copy = scratch.root / "copy.db"
    made = scratch.run("backup", str(copy))
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(
        rf"backup written to {re.escape(str(copy))} \(schema \d+, users: 0, positions: 0, "
        r"orders: 0, trailing stops: 0, \d+ KiB\)\n",
        made.stdout,
    )
    restored = scratch.run("restore", str(copy))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored {copy} (schema ")
    for text in (made.stdout, restored.stdout):
        assert "Summary(" not in text
        assert "Result(" not in text
        assert "PosixPath" not in text


def test_analyze_shows_prices_at_their_own_precision(scratch: Scratch) -> None:
    shown = scratch.run("analyze", "ADAUSDT")
    assert shown.returncode == 0, shown.stderr
    close = next(line for line in shown.stdout.splitlines() if line.startswith("close"))
    assert close.split()[-1] == "0.55115"


def test_the_backtest_report_shows_dates_and_precise_profits(scratch: Scratch) -> None:
    shown = scratch.run("backtest", "--symbol", "BTCUSDT", "--sim", "--days", "1")
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    period = next(line for line in lines if line.startswith("period"))
    assert re.fullmatch(rf"period\s+{date} to {date}", period), period
    best = next(line for line in lines if line.startswith("best trade"))
    entry = re.search(rf"\(([-0-9.]+)\) {date}", best)
    assert entry is not None, best
    profit = entry.group(1)
    assert len(profit.replace("-", "").replace(".", "")) >= 6  # not rounded to one decimal


def test_config_show_json_gives_numbers_and_flags_as_such(scratch: Scratch) -> None:
    shown = scratch.run("config", "show", "--json", LUNARA_TICK_SECONDS="2.5")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["LUNARA_TICK_SECONDS"] == 2.5
    assert document["LUNARA_PAPER_FEE_RATE"] == 0.001
    assert isinstance(document["LUNARA_RATE_LIMIT_PER_MINUTE"], int)


def test_status_prints_the_last_exit_and_the_mirror_as_lines(scratch: Scratch) -> None:
    assert scratch.cli.run("start", "--wait", "30").returncode == 0
    try:
        assert scratch.cli.run("stop", "--timeout", "10").returncode == 0
        shown = scratch.cli.run("status")
        fields = dict(line.split(None, 1) for line in shown.stdout.splitlines() if " " in line)
        assert fields["mirror"].strip() == "off"
        assert "{" not in fields["last_exit"]
        assert "at " in fields["last_exit"]
    finally:
        scratch.cli.run("stop", "--timeout", "10")


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--sim", "--plot", "out.txt"), "suffix picks the image format"),
        (("--sim", "--plot", "no/such/dir/out.png"), "does not exist"),
        (("--sim", "--stake", "nan"), "--stake must be a finite amount"),
        (("--sim", "--stake", "inf"), "--stake must be a finite amount"),
        (("--sim", "--stake", "-1"), "--stake"),
        (("--sim", "--stake", "0"), "--stake must be a finite amount from 1 to 1000000000, got 0"),
        (("--sim", "--stake", "1e300"), "--stake must be a finite amount from 1 to 1000000000"),
        (("--sim", "--stake", "1000000001"), "--stake must be a finite amount from 1 to"),
        (("--data", "DATA", "--days", "3"), "--days sets how much the sim makes"),
        (("--data", "HEADER_ONLY"), "needs at least"),
        (("--data", "ONE_CANDLE"), "needs at least"),
    ],
)
def test_a_bad_backtest_argument_is_a_one_line_usage_error(
    scratch: Scratch, arguments: tuple[str, ...], said: str
) -> None:
    header = "open_time,open,high,low,close,volume\n"
    (scratch.root / "header.csv").write_text(header)
    (scratch.root / "one.csv").write_text(header + "1700000000000,1,1,1,1,1\n")
    files = {
        "DATA": str(scratch.market),
        "HEADER_ONLY": str(scratch.root / "header.csv"),
        "ONE_CANDLE": str(scratch.root / "one.csv"),
    }
    given = [files.get(argument, argument) for argument in arguments]
    refused = scratch.run("backtest", "--symbol", "BTCUSDT", *given, NO_COLOR="1")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert said in " ".join(refused.stderr.replace("│", " ").split())
    assert "Traceback" not in refused.stderr
    assert not (scratch.root / "out.txt").exists()


def test_analyze_with_binance_unreachable_is_one_line_and_exit_1(scratch: Scratch) -> None:
    refused = scratch.run(
        "analyze",
        "BTCUSDT",
        LUNARA_MARKET="binance",
        BINANCE_API_BASE_URL="http://127.0.0.1:9",
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "Binance is unreachable" in refused.stderr
