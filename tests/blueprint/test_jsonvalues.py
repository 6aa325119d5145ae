"""The manifest's and the ledger's shared wording for a JSON value found where it should not be."""

from __future__ import annotations

import json

import pytest

from blueprint.jsonvalues import is_finite_number, is_int, is_number, kind_of, show


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("null", "null"),
        ("true", "a boolean"),
        ("3", "a number"),
        ("2.5", "a number"),
        ('"x"', "a string"),
        ("[1]", "a list"),
        ('{"a": 1}', "an object"),
    ],
)
def test_each_json_kind_is_named_as_a_person_reads_it(text: str, kind: str) -> None:
    assert kind_of(json.loads(text)) == kind


def test_a_boolean_is_neither_an_integer_nor_a_number() -> None:
    assert not is_int(True) and not is_number(False) and not is_finite_number(True)
    assert is_int(3) and not is_int(3.0)


def test_infinity_is_a_number_but_not_a_finite_one() -> None:
    infinite = json.loads("Infinity")
    assert is_number(infinite) and not is_finite_number(infinite)
    assert not is_finite_number(json.loads("NaN"))


def test_a_scalar_is_shown_as_json_and_cut_to_forty_characters() -> None:
    assert show("soon") == '"soon"'
    assert show(None) == "null"
    assert show([1, 2]) == "a list"
    long = show("x" * 100)
    assert len(long) == 40 and long.endswith("...")
