"""The bot's logging: secrets never reach a log line, files rotate, JSON is one object a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lunara.logs import REDACTED, RedactSecrets, configure_logging

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
