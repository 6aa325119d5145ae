"""Which updates the bot asks Telegram for, and what each one is to the inbox.

The bot asks (`allowed_updates`) for exactly the kinds it handles, so Telegram neither
sends nor keeps for a day anything it would only drop. Of those, the inbox holds until
answered (`lunara.storage.handled`) every update with an effect the user cannot simply
repeat: a command, a plain text in a private chat (answered with a hint), an edit of a
command (answered: edits are not run; one that now carries keys is deleted), the
service message of a completed payment, and a private chat's member change (the user
blocked or unblocked the bot). Callback queries and pre-checkout queries are answered at
once and kept nowhere: Telegram asks again if the answer is lost.

An entry is keyed by its chat and its message id. An edit keeps the id of the message it
edits (whose own entry may be answered already) and a member change has none: both are
keyed by minus their update id, which Telegram keeps when it delivers one again and
which no message id (always positive) can equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import ChatMemberUpdated, Message, MessageEntity, Update, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.ext import filters

from lunara.telegram.parsing import addressed_to, command_name

ALLOWED_UPDATES = (
    Update.MESSAGE,
    Update.EDITED_MESSAGE,
    Update.CALLBACK_QUERY,
    Update.PRE_CHECKOUT_QUERY,
    Update.MY_CHAT_MEMBER,
)
"""The kinds of update the bot handles, and so the only ones it asks Telegram for."""
SECRET_COMMANDS = frozenset({"setkeys"})
BLANKED_TEXT = "…"
"""What the inbox keeps of a plain text's words."""
MEMBER_CHANGES = frozenset({ChatMemberStatus.BANNED, ChatMemberStatus.MEMBER})
"""A private chat's member statuses that mean something: blocked (`kicked`), unblocked."""


@dataclass(frozen=True)
class Entry:
    """One update as the inbox holds it: the chat and key it is answered under, who sent
    it, and what is kept to answer it again (None: nothing; it cannot be replayed)."""

    chat_id: int
    key: int
    user_id: int
    payload: str | None


def _text_from_a_person(update: Update, message: Message | None) -> tuple[Message, User] | None:
    """`message` and its sender when a person (not a bot) sent it with text, else None."""
    sender = update.effective_user
    if message is None or sender is None or sender.is_bot or not message.text:
        return None
    return message, sender


def _our_command(
    update: Update, username: str, message: Message | None
) -> tuple[Message, User] | None:
    """`message` and its sender when it is a command addressed to us, else None."""
    found = _text_from_a_person(update, message)
    if found is None or not filters.COMMAND.check_update(update):
        return None
    return found if addressed_to(found[0].text or "", username) else None


def command_of(update: Update, username: str) -> tuple[Message, User] | None:
    """The message and sender of a command the command handler answers, else None: a
    command addressed to another bot (`/buy@other_bot` in a group) is not ours, nor is
    an edit."""
    return _our_command(update, username, update.message)


def plain_text_of(update: Update) -> tuple[Message, User] | None:
    """The message and sender of a plain text in a private chat (answered with a hint),
    else None; plain text in a group is not for the bot."""
    found = _text_from_a_person(update, update.message)
    if found is None or found[0].chat.type != ChatType.PRIVATE:
        return None
    return None if filters.COMMAND.check_update(update) else found


def edit_of(update: Update, username: str) -> tuple[Message, User] | None:
    """The message and sender of an edited command of ours, else None. An edited plain
    text is left alone: it was not run before and is not now."""
    return _our_command(update, username, update.edited_message)


def member_change_of(update: Update) -> ChatMemberUpdated | None:
    """A user blocking (`kicked`) or unblocking (`member`) the bot in their private chat,
    else None: the bot leaving or joining a group changes nobody."""
    change = update.my_chat_member
    if change is None or change.chat.type != ChatType.PRIVATE:
        return None
    if change.new_chat_member.status not in MEMBER_CHANGES:
        return None
    return change


def paid_of(update: Update) -> tuple[Message, User] | None:
    """The service message of a completed payment and the payer, else None."""
    message = update.message
    sender = update.effective_user
    if message is None or sender is None or message.successful_payment is None:
        return None
    return message, sender


def inbox_entry_of(update: Update, username: str) -> Entry | None:
    """The inbox entry of an update the inbox holds until it is answered, else None."""
    found = command_of(update, username) or plain_text_of(update) or paid_of(update)
    if found is not None:
        message, sender = found
        return Entry(message.chat_id, message.message_id, sender.id, _kept(update, message))
    edit = edit_of(update, username)
    if edit is not None:
        message, sender = edit
        return Entry(message.chat_id, -update.update_id, sender.id, _kept_edit(update, message))
    change = member_change_of(update)
    if change is not None:
        return Entry(change.chat.id, -update.update_id, change.from_user.id, update.to_json())
    return None


def _kept(update: Update, message: Message) -> str | None:
    """What the inbox keeps to answer a message again: never the text of a secret
    command, nor the words of a plain text (its answer does not depend on them, and they
    may be anything a user pasted, an exchange key too): they are kept as `BLANKED_TEXT`."""
    if command_name(message.text or "") in SECRET_COMMANDS:
        return None
    if plain_text_of(update) is None:
        return update.to_json()
    # Only what the hint needs: no words, nor those of a message it replies to or quotes.
    blanked = Message(message.message_id, message.date, message.chat,
                      from_user=message.from_user, text=BLANKED_TEXT)  # fmt: skip
    return Update(update.update_id, message=blanked).to_json()


def _kept_edit(update: Update, message: Message) -> str:
    """An edit's answer depends only on which command it now carries (keys, or not): the
    inbox keeps `/name` and none of the arguments, so an edit carrying keys can be
    deleted and warned about again after a crash without the keys ever being stored."""
    head = "/" + command_name(message.text or "")
    blanked = Message(
        message.message_id, message.date, message.chat, from_user=message.from_user, text=head,
        entities=[MessageEntity(MessageEntity.BOT_COMMAND, 0, len(head))],
        edit_date=message.edit_date,
    )  # fmt: skip
    return Update(update.update_id, edited_message=blanked).to_json()
