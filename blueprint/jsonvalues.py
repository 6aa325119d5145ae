"""How the manifest and the ledger check a parsed JSON value and name it in an error.

Both files are JSON a person may have edited, so both validators refuse a value with a
message that says what was found (``got a list``, ``got "soon"``) rather than a
Python type name; one copy of these checks keeps their wording the same.
"""

from __future__ import annotations

import json
import math
from typing import TypeGuard

# A shown value longer than this is cut, so one bad field cannot flood an error line.
_SHOWN_LENGTH = 40


def is_int(value: object) -> TypeGuard[int]:
    """An integer, not a boolean (JSON's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """An integer or a float, not a boolean; infinities and NaN included."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    return is_number(value) and math.isfinite(value)


def kind_of(value: object) -> str:
    """The JSON kind of ``value`` as an error message says it: "a list", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def show(value: object) -> str:
    """A scalar as JSON (cut to 40 characters), anything else by its kind."""
    is_scalar = value is None or isinstance(value, str | int | float | bool)
    text = json.dumps(value) if is_scalar else kind_of(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."
