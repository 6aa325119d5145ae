"""Reading rows: a query's rows, and a row decoded into the typed record of its table.

The tables keep their values in the stored forms of `lunara.storage.codec` (Decimals as
text, times as UTC epoch seconds), enums by their value and flags as 0 or 1. A
`RowCodec` reads a row back into its table's frozen dataclass, column by field name,
by the type each field declares, so every table decodes its rows by the same rules:

- a `Decimal` field from its text (`text_to_decimal`); an `int`, `float` (a time),
  `bool`, `str` or enum field by that type;
- NULL as None where the field is optional (`X | None`), else as the field's default
  (a column added by a later migration is NULL in the rows written before it);
- any other type (JSON, a list kept as text) by a decoder the table names.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import types
import typing
from collections.abc import Callable, Iterable
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiosqlite

from lunara.storage.codec import text_to_decimal
from lunara.storage.errors import RecordNotFound, StorageError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Record = TypeVar("Record", bound="DataclassInstance")
Found = TypeVar("Found")
Decoder = Callable[[Any], object]
"""Turns a column's stored value (never NULL) into the value of its field."""

_DECODERS: dict[object, Decoder] = {
    Decimal: text_to_decimal,
    int: int,
    float: float,
    bool: bool,
    str: str,
}


async def fetch_one(
    connection: aiosqlite.Connection, sql: str, parameters: Iterable[object] = ()
) -> sqlite3.Row | None:
    """The query's first row, or None (for all rows: `connection.execute_fetchall`)."""
    async with connection.execute(sql, parameters) as cursor:
        return await cursor.fetchone()


def required(found: Found | None, missing: str) -> Found:
    """`found`, or RecordNotFound saying what is `missing`."""
    if found is None:
        raise RecordNotFound(missing)
    return found


@dataclasses.dataclass(frozen=True)
class _Column:
    name: str
    decode: Decoder
    optional: bool
    default: Callable[[], object] | None  # None: the column must hold a value

    def read(self, row: sqlite3.Row) -> object:
        value = row[self.name]
        if value is not None:
            return self.decode(value)
        if self.optional:
            return None
        if self.default is None:
            raise StorageError(f"the stored {self.name} is missing")
        return self.default()


def _column(field: dataclasses.Field[Any], hint: object, decoder: Decoder | None) -> _Column:
    optional = False
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) == 1:
            hint = members[0]
    if decoder is None:
        is_enum = isinstance(hint, type) and issubclass(hint, Enum)
        decoder = typing.cast(Decoder, hint) if is_enum else _DECODERS.get(hint)
    if decoder is None:
        raise TypeError(f"no decoder for field {field.name} of type {hint}; name one")
    return _Column(field.name, decoder, optional, _default_of(field))


def _default_of(field: dataclasses.Field[Any]) -> Callable[[], object] | None:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    if field.default is not dataclasses.MISSING:
        value = field.default
        return lambda: value
    return None


class RowCodec(Generic[Record]):
    """Decodes a table's rows into `record_type`; `decoders` name the decoder of a field
    whose type has none of its own (field name: function of the stored value)."""

    def __init__(self, record_type: type[Record], **decoders: Decoder) -> None:
        fields = [field for field in dataclasses.fields(record_type) if field.init]
        unknown = set(decoders) - {field.name for field in fields}
        if unknown:
            raise TypeError(f"{record_type.__name__} has no fields {sorted(unknown)}")
        hints = typing.get_type_hints(record_type)
        self._record_type = record_type
        self._columns = tuple(
            _column(field, hints[field.name], decoders.get(field.name)) for field in fields
        )

    def decode(self, row: sqlite3.Row) -> Record:
        return self._record_type(**{column.name: column.read(row) for column in self._columns})

    async def one(
        self, connection: aiosqlite.Connection, sql: str, parameters: Iterable[object] = ()
    ) -> Record | None:
        """The query's first row as a record, or None."""
        row = await fetch_one(connection, sql, parameters)
        return None if row is None else self.decode(row)

    async def all(
        self, connection: aiosqlite.Connection, sql: str, parameters: Iterable[object] = ()
    ) -> list[Record]:
        """Every row of the query as a record, in the query's order."""
        return [self.decode(row) for row in await connection.execute_fetchall(sql, parameters)]
