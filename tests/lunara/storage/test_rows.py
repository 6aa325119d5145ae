"""The row codec: what a table writes in its stored forms, it reads back as the same record."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum, StrEnum
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.storage.database import RecordNotFound, StorageError, connect, decimal_to_text
from lunara.storage.rows import RowCodec, fetch_one, required


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Rank(IntEnum):
    LOW = 0
    HIGH = 1


@dataclass(frozen=True)
class Sample:
    """One field of every kind a table's record has."""

    id: int
    name: str
    amount: Decimal
    side: Side
    rank: Rank
    flag: bool
    at: float  # a time: UTC epoch seconds
    price: Decimal | None
    closed_at: float | None
    note: str | None
    sold: Decimal = Decimal(0)  # NULL in the rows written before its column existed
    labels: dict[str, int] = field(default_factory=dict)  # JSON, by a named decoder


SAMPLES = RowCodec(Sample, labels=json.loads)

TABLE = (
    "CREATE TABLE samples (id INTEGER PRIMARY KEY, name TEXT NOT NULL, amount TEXT NOT NULL,"
    " side TEXT NOT NULL, rank INTEGER NOT NULL, flag INTEGER NOT NULL, at REAL NOT NULL,"
    " price TEXT, closed_at REAL, note TEXT, sold TEXT, labels TEXT)"
)


def _stored(sample: Sample, *, old: bool) -> tuple[object, ...]:
    """The sample as the stores write it; `old`: a row from before `sold` and `labels`."""
    return (
        sample.id,
        sample.name,
        decimal_to_text(sample.amount),
        sample.side.value,
        int(sample.rank),
        int(sample.flag),
        sample.at,
        None if sample.price is None else decimal_to_text(sample.price),
        sample.closed_at,
        sample.note,
        None if old else decimal_to_text(sample.sold),
        None if old else json.dumps(sample.labels),
    )


async def _round_trip(rows: list[tuple[object, ...]]) -> list[Sample]:
    with tempfile.TemporaryDirectory() as folder:
        connection = await connect(Path(folder) / "rows.db")
        try:
            await connection.execute(TABLE)
            await connection.executemany(
                "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            return await SAMPLES.all(connection, "SELECT * FROM samples ORDER BY id")
        finally:
            await connection.close()


decimals = st.decimals(min_value=-(10**15), max_value=10**15, places=12, allow_nan=False)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
samples = st.builds(
    Sample,
    id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    name=st.text(),
    amount=decimals,
    side=st.sampled_from(Side),
    rank=st.sampled_from(Rank),
    flag=st.booleans(),
    at=finite_floats,
    price=st.none() | decimals,
    closed_at=st.none() | finite_floats,
    note=st.none() | st.text(),
    sold=decimals,
    labels=st.dictionaries(st.text(), st.integers(min_value=-(2**53), max_value=2**53)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(samples, st.booleans()), max_size=4, unique_by=lambda pair: pair[0].id))
def test_a_row_written_in_the_stored_forms_reads_back_as_the_same_record(
    written: list[tuple[Sample, bool]],
) -> None:
    ordered = sorted(written, key=lambda pair: pair[0].id)
    read = asyncio.run(_round_trip([_stored(sample, old=old) for sample, old in ordered]))
    assert read == [
        Sample(**{**vars(sample), "sold": Decimal(0), "labels": {}}) if old else sample
        for sample, old in ordered
    ]
    kinds = {(type(r.side), type(r.rank), type(r.flag), type(r.amount)) for r in read}
    assert kinds <= {(Side, Rank, bool, Decimal)}


async def test_a_null_in_a_column_its_record_requires_is_refused(
    db: aiosqlite.Connection,
) -> None:
    @dataclass(frozen=True)
    class Flag:
        key: str
        updated_by: str

    with pytest.raises(StorageError, match="updated_by"):
        await RowCodec(Flag).one(db, "SELECT 'paused' AS key, NULL AS updated_by")


async def test_one_is_none_and_all_is_empty_without_rows(db: aiosqlite.Connection) -> None:
    sql = "SELECT * FROM users WHERE telegram_id = ?"
    assert await fetch_one(db, sql, (1,)) is None
    assert await SAMPLES.one(db, sql, (1,)) is None
    assert await SAMPLES.all(db, sql, (1,)) == []


def test_a_field_of_a_type_without_a_decoder_is_refused_when_the_codec_is_made() -> None:
    @dataclass(frozen=True)
    class Symbols:
        symbols: tuple[str, ...]

    with pytest.raises(TypeError, match="symbols"):
        RowCodec(Symbols)
    with pytest.raises(TypeError, match="missing"):
        RowCodec(Sample, missing=str)


def test_required_names_what_is_missing() -> None:
    assert required(0, "never raised") == 0
    with pytest.raises(RecordNotFound, match="order o-1 is not recorded"):
        required(None, "order o-1 is not recorded")
