"""The composition root owns what it opens: one exit stack closes it, once, whatever
fails while closing or while building; what it is handed stays its owner's."""

from __future__ import annotations

import contextlib
import gc
import warnings
from pathlib import Path

import pytest
from redis.asyncio import Redis

from blueprint.errors import ConfigError
from lunara.app import open_trading, push_close
from lunara.config import load_settings


async def test_a_part_that_fails_to_close_is_logged_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    async def close_database() -> None:
        closed.append("database")

    async def close_redis() -> None:
        raise OSError("connection reset")

    async def close_telegram() -> None:
        closed.append("telegram")

    async with contextlib.AsyncExitStack() as exits:
        push_close(exits, "the database", close_database)
        push_close(exits, "the Redis client", close_redis)
        push_close(exits, "Telegram", close_telegram)
    assert closed == ["telegram", "database"]  # the reverse of opening, none skipped
    failures = [record for record in caplog.records if record.levelname == "ERROR"]
    assert [record.getMessage() for record in failures] == ["error while closing the Redis client"]
    assert failures[0].exc_info is not None


async def test_trading_closes_what_it_opened_and_leaves_the_bots_redis_client_open(
    home: Path, redis_db: str
) -> None:
    settings = load_settings({"LUNARA_HOME": str(home), "REDIS_URL": redis_db}, env_file=None)
    client = Redis.from_url(redis_db)
    try:
        runtime = await open_trading(settings, redis=client)
        assert runtime.redis is client  # the stop store and the probe share the bot's client
        database = runtime.engine.orders._db
        await runtime.aclose()
        with pytest.raises(ValueError, match="no active connection"):
            await database.execute("SELECT 1")
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_refused_configuration_closes_what_trading_had_opened(
    home: Path, redis_db: str
) -> None:
    replay = home / "prices.csv"
    replay.write_text("not,a,candle,file\n")  # it exists, so only the market refuses it
    settings = load_settings(
        {"LUNARA_HOME": str(home), "REDIS_URL": redis_db, "LUNARA_MARKET": f"replay:{replay}"},
        env_file=None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ConfigError, match="LUNARA_MARKET"):
            await open_trading(settings)
        gc.collect()  # an unclosed database connection warns when it is collected
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
