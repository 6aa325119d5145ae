"""Reading the end of a log, and only what one run appended to it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from blueprint.logtail import last_lines

text_lines = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40),
    max_size=30,
)


def write(path: Path, lines: list[str]) -> int:
    data = "".join(f"{line}\n" for line in lines).encode()
    with path.open("ab") as handle:
        handle.write(data)
    return len(data)


@given(earlier=text_lines, this_run=text_lines, count=st.integers(min_value=1, max_value=40))
def test_last_lines_since_an_offset_never_shows_what_came_before_it(
    earlier: list[str], this_run: list[str], count: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "bot-output.log"
        since = write(log, earlier)
        write(log, this_run)
        assert last_lines(log, count, since) == this_run[-count:]
        assert last_lines(log, count) == (earlier + this_run)[-count:]


def test_a_log_shorter_than_the_offset_was_rotated_and_is_read_from_its_start(
    tmp_path: Path,
) -> None:
    log = tmp_path / "bot-output.log"
    since = write(log, ["an earlier run"] * 10)
    log.unlink()  # rotated away when this run's bot was started
    write(log, ["this run"])
    assert last_lines(log, 5, since) == ["this run"]
