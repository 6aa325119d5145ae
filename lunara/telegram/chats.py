"""Where an answer goes: the chat a command came from, as Telegram moves chats about.

- A group upgraded to a supergroup gets a new chat id; Telegram refuses sends to the
  old one (400 with `migrate_to_chat_id`, which the outbox sender handles) and tells the
  bot in a service message in both chats. Either way the queued messages of the old id
  move to the new one (`lunara.storage.outbox.move_chat`), so every part of a long
  answer follows.
- In a forum supergroup a command comes from a topic; its answer goes to that topic
  (`message_thread_id`), every part of it: a message sent without one lands in the
  General topic.
"""

from __future__ import annotations

import logging

import aiosqlite
from telegram import Message

from lunara.storage import outbox as store

logger = logging.getLogger("lunara.telegram")


def topic_of(message: Message) -> int | None:
    """The forum topic `message` was posted in (None: not a forum topic)."""
    return message.message_thread_id if message.is_topic_message else None


def migration_of(message: Message) -> tuple[int, int] | None:
    """(old chat id, new chat id) when `message` is the service message of a group that
    became a supergroup, else None. Telegram sends it in both chats."""
    if message.migrate_to_chat_id is not None:
        return message.chat_id, message.migrate_to_chat_id
    if message.migrate_from_chat_id is not None:
        return message.migrate_from_chat_id, message.chat_id
    return None


async def follow_migration(db: aiosqlite.Connection, message: Message) -> int:
    """Move what is queued for a group that became a supergroup; returns how many rows."""
    moved_chat = migration_of(message)
    if moved_chat is None:
        return 0
    old, new = moved_chat
    moved = await store.move_chat(db, old, new)
    logger.info("group %d became supergroup %d; %d queued messages follow it", old, new, moved)
    return moved
