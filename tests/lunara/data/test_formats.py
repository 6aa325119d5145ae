"""Every candle file format is recognised from its content and read to the same candles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.data.formats import DataFileError, read_candle_file
from tests.lunara.data.files import (
    JAN_2024,
    JAN_2025,
    MINUTE,
    Row,
    binance_csv,
    minute_rows,
    write_binance_csv,
    write_binance_zip,
    write_feather,
    write_json,
    write_lunara_csv,
    write_parquet,
)


def rows_of(path: Path) -> list[Row]:
    frame = read_candle_file(path).frame
    return [tuple(row) for row in frame.itertuples(index=False)]


def test_a_2024_binance_spot_csv_has_no_header_and_millisecond_times(tmp_path: Path) -> None:
    rows = minute_rows(JAN_2024, 3)
    path = write_binance_csv(tmp_path / "BTCUSDT-1m-2024-01.csv", rows)
    assert path.read_text().startswith("1704067200000,")
    assert read_candle_file(path).kind == "binance csv"
    assert rows_of(path) == rows


def test_a_2025_binance_spot_csv_has_microsecond_times_read_as_milliseconds(
    tmp_path: Path,
) -> None:
    rows = minute_rows(JAN_2025, 3)
    path = write_binance_csv(tmp_path / "BTCUSDT-1m-2025-01.csv", rows, microseconds=True)
    assert path.read_text().startswith("1735689600000000,")
    assert rows_of(path) == rows


def test_milliseconds_and_microseconds_are_told_apart_row_by_row(tmp_path: Path) -> None:
    december, january = minute_rows(JAN_2025 - MINUTE, 1), minute_rows(JAN_2025, 1)
    text = binance_csv(december) + binance_csv(january, microseconds=True)
    path = tmp_path / "joined.csv"
    path.write_text(text)
    assert [row[0] for row in rows_of(path)] == [JAN_2025 - MINUTE, JAN_2025]


def test_a_binance_zip_is_read_without_unpacking(tmp_path: Path) -> None:
    rows = minute_rows(JAN_2024, 5)
    path = write_binance_zip(tmp_path / "BTCUSDT-1m-2024-01.zip", rows)
    assert read_candle_file(path).kind == "binance zip"
    assert rows_of(path) == rows


def test_a_futures_csv_with_its_header_is_read(tmp_path: Path) -> None:
    rows = minute_rows(JAN_2024, 4)
    path = write_binance_csv(tmp_path / "BTCUSDT-1m-2024-01.csv", rows, header=True)
    assert path.read_text().startswith("open_time,open,high,low,close,volume,close_time")
    assert rows_of(path) == rows


@pytest.mark.parametrize(
    ("name", "writer", "kind"),
    [
        ("BTC_USDT-1m.feather", write_feather, "freqtrade feather"),
        ("BTC_USDT-1m.parquet", write_parquet, "freqtrade parquet"),
        ("BTC_USDT-1m.json", write_json, "freqtrade json"),
        ("BTC_USDT-1m.json.gz", lambda p, r: write_json(p, r, gz=True), "freqtrade json.gz"),
        ("klines.csv", write_lunara_csv, "lunara csv"),
    ],
)
def test_freqtrade_files_and_our_csv_are_read(
    tmp_path: Path, name: str, writer: Callable[[Path, list[Row]], Path], kind: str
) -> None:
    rows = minute_rows(JAN_2024, 6)
    path = writer(tmp_path / name, rows)
    read = read_candle_file(path)
    assert read.kind == kind
    assert rows_of(path) == rows


@pytest.mark.parametrize("compression", ["lz4", "zstd", "uncompressed"])
def test_feather_is_read_whatever_its_compression(tmp_path: Path, compression: str) -> None:
    import pyarrow as pa
    import pyarrow.feather

    rows = minute_rows(JAN_2024, 4)
    source = write_feather(tmp_path / "source.feather", rows)
    table = pyarrow.feather.read_table(source)
    path = tmp_path / "BTC_USDT-1m.feather"
    pyarrow.feather.write_feather(table, path, compression=compression)
    assert isinstance(table, pa.Table)
    assert rows_of(path) == rows


def test_the_format_comes_from_the_content_not_the_name(tmp_path: Path) -> None:
    rows = minute_rows(JAN_2024, 3)
    disguised = write_feather(tmp_path / "prices.csv", rows)
    assert read_candle_file(disguised).kind == "freqtrade feather"
    assert rows_of(disguised) == rows


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("hello,world\n", "line 1: not a candle file; expected our CSV"),
        ("", "empty"),
        (
            "open_time,open,high,low,close,volume\n1,2,3,1,2,1\n\n2,x,3,1,2,1\n",
            "line 4 ('2,x,3,1,2,1'): expected numbers",
        ),
        (
            "open_time,open,high,low,close,volume\n1,2,3,1,2,1\n2,2,1,1,2,1\n",
            "line 3 ('2,2,1,1,2,1'): high/low do not contain open and close",
        ),
        ("open_time,open,high,low,close,volume\n1,2,3,1,2,-1\n", "line 2 ('1,2,3,1,2,-1')"),
        ("[[1,2,3,1,2,1],[2,2,3]]", "row 2"),
        ("[[1,2,3,1,2,1],", "line 1: not valid JSON"),
    ],
)
def test_a_file_that_is_not_candles_names_what_was_expected_and_the_first_bad_line(
    tmp_path: Path, content: str, said: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataFileError) as refused:
        read_candle_file(path)
    message = str(refused.value)
    assert str(path) in message
    assert said in message
    assert "\n" not in message


def test_a_binance_row_with_an_extra_field_is_named_by_its_line(tmp_path: Path) -> None:
    rows = minute_rows(JAN_2024, 3)
    lines = binance_csv(rows).splitlines()
    lines[1] += ",9"
    path = tmp_path / "BTCUSDT-1m-2024-01.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match="line 2: a row with more fields"):
        read_candle_file(path)


def test_a_zip_of_something_else_is_refused(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "BTCUSDT-1m-2024-01.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(DataFileError, match=r"holds notes\.txt; expected one Binance kline CSV"):
        read_candle_file(path)


def test_a_feather_file_without_the_candle_columns_is_refused(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "BTC_USDT-1m.feather"
    pd.DataFrame({"date": [1], "price": [2.0]}).to_feather(path)
    with pytest.raises(DataFileError, match=r"without the column\(s\) open, high, low, close"):
        read_candle_file(path)


prices = st.decimals(min_value="0.00000001", max_value="99999", places=8).map(float)


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(st.tuples(prices, prices, prices, prices), min_size=1, max_size=20),
    microseconds=st.booleans(),
)
def test_binance_csv_round_trips_any_prices_at_their_precision(
    tmp_path_factory: pytest.TempPathFactory, data: list[tuple[float, ...]], microseconds: bool
) -> None:
    start = JAN_2025 if microseconds else JAN_2024
    rows: list[Row] = []
    for index, (a, b, c, volume) in enumerate(data):
        low, high = min(a, b, c), max(a, b, c)
        rows.append((start + index * MINUTE, b, high, low, a, volume))
    path = tmp_path_factory.mktemp("csv") / "X.csv"
    write_binance_csv(path, rows, microseconds=microseconds)
    assert rows_of(path) == rows
