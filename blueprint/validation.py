"""Checks of values read from JSON, shared by the manifest's and the ledger's validators.

JSON has one number type, Python two, and `True` is an `int`: a field that wants a
number must refuse a boolean, and an error should name the kind of value it got in
the JSON's words ("a list"), not Python's ("list"). Stdlib only, no imports of ours.
"""

from __future__ import annotations

import math
from typing import TypeGuard

_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a boolean is an int to Python, not to JSON
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "an object"),
)


def is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: an `int` that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number: an `int` or `float` that is not a boolean (infinities included)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number that is neither infinite nor NaN."""
    return is_number(value) and math.isfinite(value)


def kind_of(value: object) -> str:
    """What `value` is, in the JSON's words, for an error message: "null", "a list"."""
    if value is None:
        return "null"
    for kind, name in _KINDS:
        if isinstance(value, kind):
            return name
    return type(value).__name__
