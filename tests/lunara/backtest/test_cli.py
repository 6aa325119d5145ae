"""`lunara backtest` on the data traders have, through the real CLI in a subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lunara.trading.market import simulated_candles
from tests.blueprint.cli_harness import TOKENS, Cli, manifest_document, write_manifest
from tests.lunara.data.files import (
    JAN_2024,
    JAN_2025,
    MINUTE,
    Row,
    write_binance_csv,
    write_binance_zip,
    write_feather,
)

ENTRY = (sys.executable, "-m", "lunara.cli")


def market_rows(symbol: str, start_ms: int, count: int) -> list[Row]:
    """The sim market's walk for `symbol` (it trades), moved to start at `start_ms`."""
    candles = simulated_candles(symbol, count)
    shift = start_ms - candles[0].open_time
    return [(c.open_time + shift, c.open, c.high, c.low, c.close, c.volume or 1.0) for c in candles]


class Scratch:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(mode=0o700)
        self.cli = Cli(self.home, write_manifest(root / "manifest.json", manifest_document()))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run(
            *args,
            entry=ENTRY,
            token=TOKENS["owner"],
            extra_env={"LUNARA_HOME": str(self.home), "NO_COLOR": "1"},
        )


@pytest.fixture
def scratch(tmp_path: Path) -> Scratch:
    return Scratch(tmp_path)


def test_a_directory_of_binance_files_backtests_every_symbol_on_one_stake(
    scratch: Scratch,
) -> None:
    folder = scratch.root / "binance"
    folder.mkdir()
    btc = market_rows("BTCUSDT", JAN_2025 - 600 * MINUTE, 1800)  # across 2025-01-01
    december = [row for row in btc if row[0] < JAN_2025]
    january = [row for row in btc if row[0] >= JAN_2025]
    write_binance_zip(folder / "BTCUSDT-1m-2024-12.zip", december)
    write_binance_zip(folder / "BTCUSDT-1m-2025-01.zip", january, microseconds=True)
    eth = market_rows("ETHUSDT", JAN_2025 - 600 * MINUTE, 1500)
    write_binance_csv(folder / "ETHUSDT-1m-2024-12.csv", eth[:1000], header=True)
    write_binance_csv(folder / "ETHUSDT-1m-2025-01.csv", eth[990:1200] + eth[1300:])
    export, plot = scratch.root / "trades.csv", scratch.root / "backtest.png"
    ran = scratch.run("backtest", "--data", str(folder), "--stake", "1000", "--json",
                      "--export", str(export), "--plot", str(plot))  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert report["timeframe"] == "1m"
    per = report["per_symbol"]
    assert per["BTCUSDT"]["candles"] == 1800
    assert per["BTCUSDT"]["data"]["gaps"] == 0
    assert per["ETHUSDT"]["candles"] == 1400
    eth_data = per["ETHUSDT"]["data"]
    assert (eth_data["rows_read"], eth_data["duplicates"], eth_data["gaps"]) == (1410, 10, 1)
    assert eth_data["largest_gap"]["missing_candles"] == 100
    assert report["candles"] == 3200
    assert report["period"]["from"] == "2024-12-31T14:00:00Z"
    symbols_traded = {trade["symbol"] for trade in report["trades"]}
    assert symbols_traded == {"BTCUSDT", "ETHUSDT"}
    assert report["final_balance"] == pytest.approx(1000 + report["total"]["profit"])
    exported = list(csv.DictReader(export.read_text().splitlines()))
    assert len(exported) == len(report["trades"])
    assert [row["entry_time"] for row in exported] == [t["entry_time"] for t in report["trades"]]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_timeframe_resamples_one_minute_candles(scratch: Scratch) -> None:
    path = write_feather(
        scratch.root / "BTC_USDT-1m.feather", market_rows("BTCUSDT", JAN_2024, 3000)
    )
    ran = scratch.run("backtest", "--data", str(path), "--timeframe", "15m", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["timeframe"] == "15m"
    assert report["candles"] == 200
    assert report["per_symbol"]["BTCUSDT"]["data"]["rows_read"] == 3000


def test_the_human_report_starts_with_the_period_and_the_candles_read(scratch: Scratch) -> None:
    path = write_feather(
        scratch.root / "BTC_USDT-1m.feather", market_rows("BTCUSDT", JAN_2024, 600)
    )
    ran = scratch.run("backtest", "--data", str(path))
    assert ran.returncode == 0, ran.stderr
    lines = [line.strip() for line in ran.stdout.splitlines()]
    assert lines[0] == "backtest"
    assert lines[1] == "period            2024-01-01 00:00 UTC to 2024-01-01 09:59 UTC"
    assert any(line.startswith("candles BTCUSDT   600 candles of 1m") for line in lines)
    for title in ("per symbol", "exit reasons", "summary"):
        assert title in lines


def test_stored_candles_are_read_for_a_symbol_within_from_and_to(scratch: Scratch) -> None:
    from lunara.data.store import CandleStore
    from tests.lunara.data.test_quality import frame_of

    rows = market_rows("BTCUSDT", JAN_2024, 3 * 1440)
    CandleStore(scratch.home / "data").merge("BTCUSDT", "1m", frame_of(rows))
    ran = scratch.run("backtest", "--symbol", "BTCUSDT", "--from", "2024-01-02",
                      "--to", "2024-01-02", "--json")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["candles"] == 1440
    assert report["period"] == {"from": "2024-01-02T00:00:00Z", "to": "2024-01-02T23:59:00Z"}


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ("--symbol", "BTCUSDT", "--data", "JUNK"),
            "junk.txt: line 1: not a candle file; expected",
        ),
        (("--data", "JUNK"), "junk.txt: the file's name says no symbol"),
        (("--data", "BAD_ROW"), "BTCUSDT-1m-2024-01.csv: line 3 ("),
        (("--symbol", "BTCUSDT"), "no stored candles for BTCUSDT"),
        (("--symbol", "BTCUSDT", "--data", "GOOD", "--timeframe", "5x"), "--timeframe"),
        (("--data", "GOOD", "--timeframe", "30s"), "resample only to a multiple of 1m"),
        (("--data", "GOOD", "--from", "2024-02-30"), "expected a date, YYYY-MM-DD"),
        (("--data", "GOOD", "--from", "2024-03-01"), "no candles in the range asked for"),
        (("--data", "GOOD", "--data", "FIVE"), "give --timeframe 5m to run them together"),
        (("--symbol", "BTCUSDT", "--sim", "--from", "2024-01-01"), "not the sim's"),
        (("--data", "GOOD", "--export", "no/such/dir/t.csv"), "does not exist"),
    ],
)
def test_bad_data_or_options_are_a_one_line_usage_error(
    scratch: Scratch, arguments: tuple[str, ...], said: str
) -> None:
    (scratch.root / "junk.txt").write_text("date;price\n2024-01-01;5\n")
    bad = write_binance_csv(scratch.root / "BTCUSDT-1m-2024-01.csv", market_rows("X", JAN_2024, 5))
    lines = bad.read_text().splitlines()
    lines[2] = lines[2].replace(".", ";")
    bad.write_text("\n".join(lines) + "\n")
    files = {
        "JUNK": scratch.root / "junk.txt",
        "BAD_ROW": bad,
        "GOOD": write_feather(scratch.root / "BTC_USDT-1m.feather",
                              market_rows("BTCUSDT", JAN_2024, 100)),
        "FIVE": write_feather(scratch.root / "ETH_USDT-5m.feather",
                              market_rows("ETHUSDT", JAN_2024, 100)[::5]),
    }  # fmt: skip
    refused = scratch.run("backtest", *(str(files.get(a, a)) for a in arguments))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.replace("│", " ").split())
    assert said in message, message
    assert "Traceback" not in refused.stderr


HEADER = b"open_time,open,high,low,close,volume\n"
FIELD_128_KIB = b"1" * (128 * 1024)


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("BTCUSDT-1m.csv", HEADER + b"1704067200000,1,2,0.5,1.5,10\n\xff\xfe,1,2,0.5,1.5,10\n",
         "not readable as CSV ('utf-8' codec can't decode byte 0xff"),
        ("BTCUSDT-1m.json", b'[[1704067200000, 1, 2, 0.5, 1.5, 10], ["\xff\xfe"]]',
         "not UTF-8 text (bad byte at offset"),
        ("BTCUSDT-1m.json", b"[[" + FIELD_128_KIB + b", 1, 2, 0.5, 1.5, 10]]",
         "not readable JSON (a number too long)"),
        ("BTCUSDT-1m.csv", HEADER + b"1704067200000," + FIELD_128_KIB + b",2,0.5,1.5,10\n",
         "line 2 ("),
        ("BTCUSDT-1m.csv", HEADER + b'1704067200000,"' + FIELD_128_KIB + b'x",2,0.5,1.5,10\n',
         "line 2 ("),
    ],
    ids=["csv-not-utf8", "json-not-utf8", "json-128KiB-number", "csv-128KiB", "csv-128KiB-quoted"],
)  # fmt: skip
def test_odd_bytes_or_a_huge_field_in_a_data_file_are_a_one_line_usage_error(
    scratch: Scratch, name: str, content: bytes, said: str
) -> None:
    path = scratch.root / name
    path.write_bytes(content)
    refused = scratch.run("backtest", "--data", str(path))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.replace("│", " ").split())
    assert said in message, message
    assert len(refused.stderr) < 2000  # the huge field is not echoed whole
