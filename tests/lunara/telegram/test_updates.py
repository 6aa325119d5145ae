"""What the inbox holds of each kind of update (`lunara.telegram.updates`)."""

from __future__ import annotations

import datetime
import json

from hypothesis import given
from hypothesis import strategies as st
from telegram import Chat, Message, MessageEntity, Update, User

from lunara.telegram.updates import SECRET_COMMANDS, inbox_entry_of

BOT = "lunara_test_bot"
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
WORD = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=12,
               max_size=64)  # fmt: skip
"""Key-like arguments, long enough never to be part of the JSON around them by chance."""


def message(text: str, message_id: int = 10, chat_type: str = Chat.PRIVATE) -> Message:
    user = User(7, "trader", is_bot=False)
    entities = []
    if text.startswith("/"):
        entities = [MessageEntity(MessageEntity.BOT_COMMAND, 0, len(text.split()[0]))]
    chat_id = 7 if chat_type == Chat.PRIVATE else -1000000007
    return Message(message_id, NOW, Chat(chat_id, chat_type), from_user=user, text=text,
                   entities=entities, edit_date=NOW)  # fmt: skip


@given(st.sampled_from(["setkeys", "buy", "settings"]), st.lists(WORD, min_size=1, max_size=3))
def test_an_edit_is_kept_as_its_command_name_alone_under_minus_its_update_id(
    name: str, words: list[str]
) -> None:
    text = " ".join([f"/{name}", *words])
    entry = inbox_entry_of(Update(55, edited_message=message(text)), BOT)
    assert entry is not None
    assert (entry.chat_id, entry.key) == (7, -55)
    assert entry.payload is not None
    kept = Update.de_json(json.loads(entry.payload), None)
    assert kept.edited_message is not None
    assert kept.edited_message.text == f"/{name}"
    assert not any(word in entry.payload for word in words)


def test_a_new_message_is_kept_under_its_own_id_and_a_secret_not_at_all() -> None:
    command = inbox_entry_of(Update(56, message=message("/plans", 11)), BOT)
    assert command is not None
    assert (command.chat_id, command.key) == (7, 11)
    secret = inbox_entry_of(Update(57, message=message("/setkeys a b", 12)), BOT)
    assert secret is not None
    assert secret.payload is None
    assert "setkeys" in SECRET_COMMANDS


def test_edits_of_plain_text_and_of_another_bots_commands_are_not_held() -> None:
    assert inbox_entry_of(Update(58, edited_message=message("just words")), BOT) is None
    other = message("/buy@other_bot BTCUSDT 5", chat_type=Chat.SUPERGROUP)
    assert inbox_entry_of(Update(59, edited_message=other), BOT) is None
