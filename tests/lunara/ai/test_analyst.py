"""The Gemini analyst with the real google-genai client against a local fake server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from lunara.ai.analyst import NOTE_BUSY, NOTE_OFF, NOTE_QUOTA, Analyst, MarketSummary
from lunara.storage import users
from lunara.storage.database import open_database
from tests.fakes.gemini_api import FakeGemini

SUMMARY = MarketSummary(
    symbol="BTCUSDT",
    interval="1m",
    candle_open_time=1_700_000_000_000,
    price=50_000.0,
    indicators={"rsi": 28.5, "macd": -12.0},
    symptoms=("rsi_oversold",),
)


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    await users.register(connection, 7, "trader")
    yield connection
    await connection.close()


def analyst(fake: FakeGemini, db: aiosqlite.Connection, key: str | None = None) -> Analyst:
    return Analyst(
        api_key=key if key is not None else fake.api_key,
        model="gemini-2.5-flash",
        base_url=fake.base_url,
        db=db,
        attempts=2,
        retry_initial_delay_s=0.05,
    )


async def test_commentary_comes_from_a_prompt_built_from_the_analysis(
    gemini: FakeGemini, db: aiosqlite.Connection
) -> None:
    answer = await analyst(gemini, db).comment(7, "free", SUMMARY, limit=3)
    assert answer.text == gemini.answer
    assert "BTCUSDT" in gemini.prompts[0] and "rsi_oversold" in gemini.prompts[0]


async def test_the_same_candle_is_answered_from_the_cache(
    gemini: FakeGemini, db: aiosqlite.Connection
) -> None:
    ai = analyst(gemini, db)
    await ai.comment(7, "free", SUMMARY, limit=3)
    again = await ai.comment(7, "free", SUMMARY, limit=3)
    assert again.cached and gemini.requests == 1


async def test_the_daily_quota_is_enforced(gemini: FakeGemini, db: aiosqlite.Connection) -> None:
    ai = analyst(gemini, db)
    for minute in range(2):
        summary = MarketSummary(**{**SUMMARY.__dict__, "candle_open_time": minute})
        assert (await ai.comment(7, "free", summary, limit=2)).text
    refused = await ai.comment(7, "free", SUMMARY, limit=2)
    assert refused.text is None and refused.note == NOTE_QUOTA.format(limit=2, plan="free")


async def test_without_a_key_the_feature_says_it_is_off(
    gemini: FakeGemini, db: aiosqlite.Connection
) -> None:
    answer = await analyst(gemini, db, key="").comment(7, "free", SUMMARY, limit=3)
    assert answer.note == NOTE_OFF and gemini.requests == 0


async def test_429_then_success_is_retried_by_the_sdk(
    gemini: FakeGemini, db: aiosqlite.Connection
) -> None:
    gemini.inject(429)
    answer = await analyst(gemini, db).comment(7, "free", SUMMARY, limit=3)
    assert answer.text == gemini.answer and gemini.requests == 2


async def test_persistent_503_gives_a_short_note_not_an_error(
    gemini: FakeGemini, db: aiosqlite.Connection
) -> None:
    gemini.inject(503, times=5)
    answer = await analyst(gemini, db).comment(7, "free", SUMMARY, limit=3)
    assert answer.text is None and answer.note == NOTE_BUSY
