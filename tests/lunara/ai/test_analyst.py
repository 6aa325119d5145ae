"""The AI analyst without a key: off, says so, touches nothing else."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import pytest

from lunara.ai.analyst import (
    NOTE_BUSY,
    NOTE_OFF,
    USAGE_KIND,
    Analyst,
    MarketSummary,
    _day,
    build_prompt,
)
from lunara.storage import users
from lunara.storage.database import open_database
from tests.fakes.gemini_api import FakeGemini

SUMMARY = MarketSummary(
    symbol="BTCUSDT",
    interval="1m",
    candle_open_time=1_700_000_000_000,
    price=60_000.0,
    indicators={"rsi": 28.5, "atr": None},
    symptoms=["rsi_oversold"],
)


async def test_without_a_key_the_feature_is_off_and_google_genai_is_not_loaded(
    tmp_path: Path,
) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        analyst = Analyst(api_key=None, model="gemini-2.5-flash", base_url=None, db=db)
        commentary = await analyst.comment(1, "free", SUMMARY, limit=3)
        assert not analyst.enabled
        assert commentary.text is None
        assert commentary.note == NOTE_OFF
        assert analyst.requests_sent == 0
        assert "google.genai" not in sys.modules or analyst._client is None
    finally:
        await db.close()


def test_the_prompt_carries_the_indicators_and_symptoms_only() -> None:
    prompt = build_prompt(SUMMARY)
    assert "BTCUSDT" in prompt
    assert "rsi: 28.5" in prompt
    assert "atr: n/a" in prompt
    assert "rsi_oversold" in prompt


def _analyst(db: aiosqlite.Connection, fake: FakeGemini, key: str | None = None) -> Analyst:
    return Analyst(
        api_key=key or fake.api_key,
        model="gemini-2.5-flash",
        base_url=fake.base_url,
        db=db,
        timeout_ms=5_000,
        retry_initial_delay_s=0.01,
    )


async def test_answers_are_cached_per_symbol_and_candle_and_quota_counts_answers(
    tmp_path: Path,
) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(db, 1, "trader")
        with FakeGemini() as fake:
            analyst = _analyst(db, fake)
            first = await analyst.comment(1, "free", SUMMARY, limit=2)
            again = await analyst.comment(1, "free", SUMMARY, limit=2)
            assert first.text == fake.answer
            assert not first.cached
            assert again.text == fake.answer
            assert again.cached
            assert fake.requests == 1
            assert "rsi_oversold" in fake.prompts[0]
            later = replace(SUMMARY, candle_open_time=SUMMARY.candle_open_time + 60_000)
            assert (await analyst.comment(1, "free", later, limit=2)).text == fake.answer
            newest = replace(later, candle_open_time=later.candle_open_time + 60_000)
            refused = await analyst.comment(1, "free", newest, limit=2)
            assert refused.text is None
            assert "2 AI analyses" in (refused.note or "")
            assert fake.requests == 2
            await analyst.aclose()
    finally:
        await db.close()


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_service_becomes_a_short_note_and_costs_no_quota(
    tmp_path: Path, status: int
) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(db, 1, "trader")
        with FakeGemini() as fake:
            fake.inject(status, times=3)
            analyst = _analyst(db, fake)
            commentary = await analyst.comment(1, "free", SUMMARY, limit=5)
            assert commentary.text is None
            assert commentary.note == NOTE_BUSY
            assert fake.requests == 3  # the client's own retries, then a note
            assert await users.usage(db, 1, USAGE_KIND, _day(time.time())) == 0
            recovered = await analyst.comment(1, "free", SUMMARY, limit=5)
            assert recovered.text == fake.answer
            await analyst.aclose()
    finally:
        await db.close()


async def test_the_first_question_of_a_day_drops_the_counters_of_the_days_before(
    tmp_path: Path,
) -> None:
    db = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(db, 1, "trader")
        for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
            await users.increment_usage_and_check(db, 1, USAGE_KIND, day, limit=5)
        now = [datetime(2026, 11, 3, 12, tzinfo=UTC).timestamp()]
        with FakeGemini() as fake:
            analyst = Analyst(
                api_key=fake.api_key,
                model="gemini-2.5-flash",
                base_url=fake.base_url,
                db=db,
                clock=lambda: now[0],
            )
            refused = await analyst.comment(1, "free", SUMMARY, limit=1)
            assert refused.text is None
            assert "1 AI analyses" in (refused.note or "")
            assert fake.requests == 0
            assert await _counted_days(db) == ["2026-11-03"]

            now[0] += 86_400  # the next day: its first question starts a fresh count
            answered = await analyst.comment(1, "free", SUMMARY, limit=1)
            assert answered.text == fake.answer
            assert await _counted_days(db) == ["2026-11-04"]
            await analyst.aclose()
    finally:
        await db.close()


async def _counted_days(db: aiosqlite.Connection) -> list[str]:
    async with db.execute("SELECT day FROM usage_counters ORDER BY day") as cursor:
        return [row[0] for row in await cursor.fetchall()]
