"""From files and directories to one series per symbol: names, merging, ranges, timeframes."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunara.data.load import DataSelectionError, load_paths, symbol_from_name
from tests.lunara.data.files import (
    JAN_2024,
    MINUTE,
    minute_rows,
    write_binance_zip,
    write_feather,
    write_json,
    write_lunara_csv,
)

FEB_2024 = JAN_2024 + 31 * 1440 * MINUTE


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("BTCUSDT-1m-2024-01.zip", "BTCUSDT"),
        ("BTCUSDT-1m-2024-01-05.csv", "BTCUSDT"),
        ("BTC_USDT-1m.feather", "BTCUSDT"),
        ("ETH_BTC-5m.json.gz", "ETHBTC"),
        ("BTC_USDT_USDT-1h-futures.feather", "BTCUSDT"),
        ("BTCUSDT-1m.feather", "BTCUSDT"),
        ("klines.csv", "KLINES"),
        ("a.csv", None),
        ("A_B_C-1m.feather", None),
    ],
)
def test_a_files_name_says_its_symbol_as_binance_and_freqtrade_write_it(
    name: str, symbol: str | None
) -> None:
    assert symbol_from_name(Path(name)) == symbol


def test_a_directory_of_monthly_zips_makes_one_series_per_symbol(tmp_path: Path) -> None:
    folder = tmp_path / "binance"
    folder.mkdir()
    write_binance_zip(folder / "BTCUSDT-1m-2024-01.zip", minute_rows(JAN_2024, 50))
    write_binance_zip(folder / "BTCUSDT-1m-2024-02.zip", minute_rows(FEB_2024, 30))
    write_binance_zip(folder / "ETHUSDT-1m-2024-01.zip", minute_rows(JAN_2024, 40, 2000.0))
    (folder / "BTCUSDT-1m-2024-01.zip.CHECKSUM").write_text("0" * 64 + "  x.zip\n")
    loaded = load_paths([folder], [])
    assert list(loaded) == ["BTCUSDT", "ETHUSDT"]
    btc = loaded["BTCUSDT"]
    assert len(btc.frame) == 80
    assert btc.quality.gaps == 1
    assert btc.quality.largest_gap is not None
    assert btc.quality.largest_gap.after_ms == JAN_2024 + 49 * MINUTE
    assert len(loaded["ETHUSDT"].frame) == 40
    assert len(load_paths([folder], ["ETHUSDT"])) == 1


def test_data_given_several_times_is_merged_and_duplicates_counted(tmp_path: Path) -> None:
    first = write_feather(tmp_path / "BTC_USDT-1m.feather", minute_rows(JAN_2024, 60))
    second = write_json(tmp_path / "BTCUSDT-1m.json", minute_rows(JAN_2024 + 50 * MINUTE, 20))
    loaded = load_paths([first, second], ["BTCUSDT"])["BTCUSDT"]
    assert len(loaded.frame) == 70
    assert (loaded.quality.rows, loaded.quality.duplicates, loaded.quality.gaps) == (80, 10, 0)


def test_one_symbol_and_files_only_takes_the_files_whatever_their_names(tmp_path: Path) -> None:
    path = write_lunara_csv(tmp_path / "prices.csv", minute_rows(JAN_2024, 5))
    assert list(load_paths([path], ["SOLUSDT"])) == ["SOLUSDT"]


def test_one_symbol_among_files_named_for_several_takes_its_own(tmp_path: Path) -> None:
    btc = write_feather(tmp_path / "BTC_USDT-1m.feather", minute_rows(JAN_2024, 5))
    eth = write_feather(tmp_path / "ETH_USDT-1m.feather", minute_rows(JAN_2024, 9, 2000.0))
    loaded = load_paths([btc, eth], ["ETHUSDT"])["ETHUSDT"]
    assert len(loaded.frame) == 9
    assert loaded.frame["close"].iloc[0] > 1000


def test_the_shortest_interval_of_a_symbol_is_read_and_the_others_named(tmp_path: Path) -> None:
    write_feather(tmp_path / "BTC_USDT-1m.feather", minute_rows(JAN_2024, 30))
    five = [(JAN_2024 + i * 5 * MINUTE, 1.0, 2.0, 0.5, 1.5, 1.0) for i in range(6)]
    write_feather(tmp_path / "BTC_USDT-5m.feather", five)
    loaded = load_paths([tmp_path], ["BTCUSDT"])["BTCUSDT"]
    assert loaded.quality.interval == "1m"
    assert len(loaded.frame) == 30
    assert len(loaded.skipped) == 1
    assert "BTC_USDT-5m.feather (5m candles; 1m read)" in (loaded.skipped[0])


def test_a_range_and_a_timeframe_select_and_resample(tmp_path: Path) -> None:
    path = write_feather(tmp_path / "BTC_USDT-1m.feather", minute_rows(JAN_2024, 120))
    loaded = load_paths(
        [path],
        ["BTCUSDT"],
        start_ms=JAN_2024 + 30 * MINUTE,
        end_ms=JAN_2024 + 90 * MINUTE,
        timeframe_ms=15 * MINUTE,
    )["BTCUSDT"]
    assert loaded.quality.rows == 60
    assert loaded.timeframe_ms == 15 * MINUTE
    assert list(loaded.frame["open_time"]) == [JAN_2024 + m * MINUTE for m in (30, 45, 60, 75)]


@pytest.mark.parametrize(
    ("symbols", "options", "said"),
    [
        (["ETHUSDT"], {}, "no file for ETHUSDT in the --data given"),
        (["BTCUSDT"], {"timeframe_ms": 90_000}, "resample only to a multiple"),
        (["BTCUSDT"], {"start_ms": FEB_2024}, "no candles in the range asked for"),
    ],
)
def test_a_selection_the_files_cannot_make_is_refused_in_one_line(
    tmp_path: Path, symbols: list[str], options: dict[str, int], said: str
) -> None:
    write_feather(tmp_path / "BTC_USDT-1m.feather", minute_rows(JAN_2024, 10))
    with pytest.raises(DataSelectionError, match=said):
        load_paths([tmp_path], symbols, **options)


def test_a_file_named_for_no_symbol_in_a_directory_is_refused_naming_it(tmp_path: Path) -> None:
    write_feather(tmp_path / "a.feather", minute_rows(JAN_2024, 10))
    with pytest.raises(DataSelectionError, match=r"a\.feather: the file's name says no symbol"):
        load_paths([tmp_path], [])
