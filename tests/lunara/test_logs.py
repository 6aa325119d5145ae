"""The bot's logging: secrets never reach a log line, files rotate, JSON is one object a line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.redaction import REDACTED
from lunara.logs import RedactSecrets, configure_logging

TELEGRAM_TOKEN = "7312345678:AAH3kq9ZxV0b1c2d3e4f5g6h7i8j9k0lMnO"
EXCHANGE_SECRET = "Zq8x" * 16


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_configured_secret_is_redacted_in_message_args_and_traceback(tmp_path: Path) -> None:
    log_file = tmp_path / "bot.log"
    configure_logging("INFO", "text", ["my-gemini-key-123456"], log_file=log_file)
    logger = logging.getLogger("lunara.test")
    logger.info("calling with key %s", "my-gemini-key-123456")
    try:
        raise RuntimeError(f"token {TELEGRAM_TOKEN} rejected")
    except RuntimeError:
        logger.exception("request failed for secret=%s", EXCHANGE_SECRET)
    text = log_file.read_text()
    assert "my-gemini-key-123456" not in text
    assert TELEGRAM_TOKEN not in text
    assert EXCHANGE_SECRET not in text
    assert text.count(REDACTED) >= 3


@given(st.text(min_size=0, max_size=40), st.text(min_size=0, max_size=40))
def test_a_telegram_token_is_never_left_in_any_surrounding_text(before: str, after: str) -> None:
    redactor = RedactSecrets()
    assert TELEGRAM_TOKEN not in redactor.redact(f"{before} {TELEGRAM_TOKEN} {after}")


def test_json_format_is_one_object_per_line(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", [], stream=stream)
    logging.getLogger("lunara.test").warning("hello %s", "world")
    document = json.loads(stream.getvalue().strip())
    assert document["message"] == "hello world"
    assert document["level"] == "WARNING"


def test_log_file_rotates_with_bounded_backups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lunara.logs.LOG_MAX_BYTES", 2_000)
    monkeypatch.setattr("lunara.logs.LOG_BACKUPS", 2)
    log_file = tmp_path / "bot.log"
    configure_logging("INFO", "text", [], log_file=log_file)
    logger = logging.getLogger("lunara.test")
    for index in range(500):
        logger.info("line %d %s", index, "x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bot.log", "bot.log.1", "bot.log.2"]
    assert all(p.stat().st_size <= 2_200 for p in tmp_path.iterdir())


def test_a_telegram_error_a_library_logs_is_one_line_and_ours_keep_their_traceback(
    tmp_path: Path,
) -> None:
    from telegram.error import Conflict

    log_file = tmp_path / "bot.log"
    configure_logging("INFO", "text", [], log_file=log_file)
    for name in ("telegram.ext.Updater", "lunara.telegram"):
        try:
            raise Conflict("terminated by other getUpdates request")
        except Conflict:
            logging.getLogger(name).exception("final getUpdates failed")
    library, ours = log_file.read_text().split("\n", 1)
    assert "WARNING telegram.ext.Updater: final getUpdates failed" in library
    assert "(Conflict: terminated by other getUpdates request)" in library
    assert "ERROR lunara.telegram: final getUpdates failed" in ours
    assert "Traceback (most recent call last)" in ours
    assert log_file.read_text().count("Traceback") == 1


def test_an_uncaught_exceptions_traceback_is_logged_without_its_secrets(tmp_path: Path) -> None:
    log_file = tmp_path / "bot.log"
    program = f"""
import pathlib
from lunara.logs import configure_logging
configure_logging("INFO", "text", ["gem-key-0123456789"], log_file=pathlib.Path({str(log_file)!r}))
def connect():
    raise RuntimeError("login password=hunter2xyz key gem-key-0123456789 token {TELEGRAM_TOKEN}")
connect()
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 1
    text = log_file.read_text()
    assert "CRITICAL lunara: uncaught exception" in text
    assert "Traceback (most recent call last)" in text
    assert "in connect" in text
    for secret in ("hunter2xyz", "gem-key-0123456789", TELEGRAM_TOKEN):
        assert secret not in text
    assert f"password={REDACTED}" in text


def test_at_debug_sql_statements_and_their_parameters_are_not_logged(tmp_path: Path) -> None:
    import aiosqlite

    log_file = tmp_path / "bot.log"
    configure_logging("DEBUG", "text", [], log_file=log_file)

    async def write() -> None:
        async with aiosqlite.connect(tmp_path / "x.db") as db:
            await db.execute("CREATE TABLE chat (text TEXT)")
            await db.execute("INSERT INTO chat VALUES (?)", ("my private chat line",))
            await db.commit()

    asyncio.run(write())
    logging.getLogger("lunara.test").debug("our own debug line")
    text = log_file.read_text()
    assert "our own debug line" in text
    assert "my private chat line" not in text
    assert "INSERT INTO" not in text


@pytest.mark.parametrize("library", ["httpx", "httpx2", "google_genai.models", "aiosqlite"])
def test_at_debug_request_logging_libraries_stay_at_warning(library: str) -> None:
    configure_logging("DEBUG", "text", [], stream=io.StringIO())
    assert logging.getLogger(library).getEffectiveLevel() == logging.WARNING
