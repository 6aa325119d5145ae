"""The one timestamp format: written in milliseconds, read back with what older ledgers hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from blueprint.clock import format_utc, parse_iso, utc_iso

MOMENT = datetime(2026, 12, 6, 5, 11, 33, 900_000, tzinfo=UTC).timestamp()


def test_the_written_format_is_utc_with_milliseconds() -> None:
    assert utc_iso(MOMENT) == "2026-12-06T05:11:33.900+00:00"
    eastern = datetime(2026, 12, 6, 7, 11, 33, 900_000, tzinfo=timezone(timedelta(hours=2)))
    assert format_utc(eastern) == "2026-12-06T05:11:33.900+00:00"


def test_older_ledger_timestamps_are_read() -> None:
    assert parse_iso("2026-12-06T05:11:33.900000+00:00") == MOMENT
    assert parse_iso("2026-12-06T05:11:33.900Z") == MOMENT
    assert parse_iso("2026-12-06T05:11:33.900") == MOMENT  # no zone: UTC, not local time


def test_what_is_no_time_reads_as_none() -> None:
    assert parse_iso(None) is None
    assert parse_iso("") is None
    assert parse_iso("yesterday") is None


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_a_written_time_reads_back_to_the_millisecond(milliseconds: int) -> None:
    assert parse_iso(utc_iso(milliseconds / 1000)) == milliseconds / 1000
