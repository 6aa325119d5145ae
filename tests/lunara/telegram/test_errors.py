from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiosqlite
import pytest
from telegram import Chat, Message, Update, User
from telegram.error import BadRequest, Conflict, Forbidden, NetworkError, RetryAfter, TimedOut

from lunara.storage import users
from lunara.storage.database import open_database
from lunara.telegram.errors import (
    MAX_RETRY_AFTER_S,
    STATE_FILE,
    ErrorHandler,
    TelegramState,
    is_retryable,
    retry_after_seconds,
)

USER = 5005
ADMIN = 1001
SECRET = "sk-very-secret-value"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await open_database(tmp_path / "lunara.db")
    try:
        await users.register(connection, USER, "someone")
        yield connection
    finally:
        await connection.close()


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send(self, chat_id: int, text: str, reply_to: int | None = None) -> None:
        self.sent.append((chat_id, text))


def update_from(user_id: int) -> Update:
    sender = User(user_id, "someone", is_bot=False)
    chat = Chat(user_id, Chat.PRIVATE)
    message = Message(1, datetime.now(), chat, from_user=sender, text="/status")
    return Update(1, message=message)


def handler_for(db: aiosqlite.Connection, home: Path, outbox: Outbox) -> ErrorHandler:
    return ErrorHandler(db, TelegramState(home / STATE_FILE), outbox.send, lambda: [ADMIN])


def test_timeouts_and_network_errors_are_retryable_bad_requests_are_not() -> None:
    assert is_retryable(TimedOut())
    assert is_retryable(NetworkError("reset"))
    assert not is_retryable(BadRequest("bad"))
    assert not is_retryable(ValueError())


def test_retry_after_is_honoured_but_capped() -> None:
    assert retry_after_seconds(RetryAfter(3)) == 3
    assert retry_after_seconds(RetryAfter(3600)) == MAX_RETRY_AFTER_S


async def test_an_unexpected_error_apologises_with_a_reference_and_tells_admins(
    db: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox()
    await handler_for(db, tmp_path, outbox).on_error(
        update_from(USER), RuntimeError(f"boom {SECRET}")
    )
    (user_chat, apology), (admin_chat, notice) = outbox.sent
    assert user_chat == USER
    assert "reference" in apology
    assert admin_chat == ADMIN
    assert "RuntimeError" in notice
    reference = apology.split("<code>")[1].split("</code>")[0]
    assert reference in notice
    assert reference in caplog.text
    assert all(SECRET not in text for _, text in outbox.sent)


async def test_forbidden_deactivates_nobody_and_replies_nothing(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    # Which chat refused says nothing about who sent the update (a group removed the
    # bot, say); the outbox marks a user inactive when their own chat refuses a message.
    outbox = Outbox()
    await handler_for(db, tmp_path, outbox).on_error(update_from(USER), Forbidden("blocked"))
    user = await users.get(db, USER)
    assert user is not None
    assert user.active
    assert not outbox.sent


async def test_forbidden_from_an_unregistered_user_is_not_an_error(
    db: aiosqlite.Connection, tmp_path: Path
) -> None:
    outbox = Outbox()
    await handler_for(db, tmp_path, outbox).on_error(update_from(9999), Forbidden("blocked"))
    assert not outbox.sent


async def test_conflicts_are_counted_to_the_state_file_and_logged_once_per_burst(
    db: aiosqlite.Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = handler_for(db, tmp_path, Outbox())
    for _ in range(3):
        handler.on_polling_error(Conflict("terminated by other getUpdates request"))
    await handler.on_error(None, Conflict("again"))
    assert json.loads((tmp_path / STATE_FILE).read_text())["conflicts"] == 4
    assert caplog.text.count("409 Conflict") == 1
