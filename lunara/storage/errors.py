"""The storage layer's expected failures, each with a message fit for an operator or a trader.

A leaf: the database edge, the migrations and the stores all raise these, and none of
them has to import another to do so.
"""

from __future__ import annotations

from blueprint.errors import BlueprintError


class StorageError(BlueprintError):
    """An expected storage failure with a message fit for an operator or a trader."""


class RecordNotFound(StorageError):
    """The row asked for does not exist."""


class InvalidValue(StorageError):
    """A value was refused before it reached the database; names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class StateConflict(StorageError):
    """A change that contradicts the recorded state (closing a closed position, ...)."""


class SchemaError(StorageError):
    """The file is not a Lunara database, or its schema is newer than this code."""
