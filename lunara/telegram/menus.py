"""The command menus Telegram shows, one per audience (`setMyCommands` with a scope).

- Every chat by default (groups included): the commands anyone may send there, that is
  no admin command and none that answers only in private (those would only be told to
  go to the private chat).
- Every private chat: the traders' commands (everything but the admins').
- Each admin's private chat (the manifest's admins): every command that admin may run.

Telegram picks the narrowest scope that applies, so an admin sees the admin list in
their chat with the bot and nowhere else. The menus are published once the bot holds
the poller lease; one Telegram refuses is logged, never fatal: commands still work
typed by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from telegram import (
    Bot,
    BotCommand,
    BotCommandScope,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BotCommandScopeDefault,
)
from telegram.error import TelegramError

from blueprint.manifest import Permission
from lunara.telegram.guard import Command

logger = logging.getLogger("lunara.telegram")

ADMIN_PREFIX = "tg.admin."


@dataclass(frozen=True)
class Menu:
    scope: BotCommandScope
    commands: tuple[BotCommand, ...]


def _entries(commands: Iterable[Command[Any]]) -> tuple[BotCommand, ...]:
    return tuple(BotCommand(command.name, command.description) for command in commands)


def menus(
    commands: Iterable[Command[Any]],
    admin_ids: Iterable[int],
    may: Callable[[int, Permission], bool],
) -> list[Menu]:
    """The menu of each scope: the default, all private chats, each admin's chat
    (`may(user, permission)`: what the manifest allows that admin)."""
    table = list(commands)
    everyone = [c for c in table if not c.permission.startswith(ADMIN_PREFIX)]
    found = [
        Menu(BotCommandScopeDefault(), _entries(c for c in everyone if not c.private_only)),
        Menu(BotCommandScopeAllPrivateChats(), _entries(everyone)),
    ]
    for admin in admin_ids:
        found.append(
            Menu(BotCommandScopeChat(admin), _entries(c for c in table if may(admin, c.permission)))
        )
    return found


async def publish(bot: Bot, chosen: Iterable[Menu]) -> int:
    """Set each menu; returns how many Telegram took."""
    taken = 0
    for menu in chosen:
        try:
            await bot.set_my_commands(menu.commands, scope=menu.scope)
        except TelegramError as error:
            logger.warning("Telegram refused the %s command menu: %s", menu.scope.type,
                           type(error).__name__)  # fmt: skip
            continue
        taken += 1
    return taken
