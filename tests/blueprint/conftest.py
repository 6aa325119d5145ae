"""Fixtures shared by the control-plane tests: supervised scratch installations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.programs.harness import Installation, installation

Factory = Callable[[dict[str, Any]], Installation]


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Factory]:
    """Make installations on demand; every one is torn down after the test."""
    made: list[Installation] = []

    def make(section: dict[str, Any]) -> Installation:
        made.append(installation(tmp_path / str(len(made)), section))
        return made[-1]

    yield make
    for each in made:
        each.tear_down()
