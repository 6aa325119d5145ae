from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lunara.telegram import formatting as fmt
from tests.fakes.telegram_api import check_html

LIMIT = fmt.MESSAGE_LIMIT


def test_dynamic_values_are_escaped_inside_tags() -> None:
    assert fmt.bold("<script>&") == "<b>&lt;script&gt;&amp;</b>"
    assert fmt.code("a<b") == "<code>a&lt;b</code>"
    assert check_html(fmt.table([["<x>", "&"], ["1", "2"]])) is None


def test_a_short_reply_is_one_message() -> None:
    assert fmt.split_message("hello") == ["hello"]


def test_a_long_reply_is_split_at_line_ends() -> None:
    rows = [f"line {index:05d}" for index in range(1000)]
    chunks = fmt.split_message("\n".join(rows))
    assert len(chunks) > 1
    assert all(len(chunk) <= LIMIT for chunk in chunks)
    assert "\n".join(chunks).split("\n") == rows


def test_a_table_longer_than_a_message_stays_well_formed_in_every_chunk() -> None:
    table = fmt.table([[f"BTC{index}USDT", "&", "<1>"] for index in range(600)])
    chunks = fmt.split_message(fmt.lines(fmt.bold("Positions"), table))
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk) <= LIMIT
        assert check_html(chunk) is None, chunk[:80]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.text(max_size=300), max_size=60),
    long_line=st.text(alphabet="&<>ab ", max_size=9000),
)
def test_any_escaped_content_splits_into_valid_html_under_the_limit(
    values: list[str], long_line: str
) -> None:
    text = fmt.lines(
        *(fmt.bold(value) for value in values),
        fmt.escape(long_line),
        fmt.table([[value[:40], "x"] for value in values]),
    )
    for chunk in fmt.split_message(text):
        assert len(chunk) <= LIMIT
        assert check_html(chunk) is None
