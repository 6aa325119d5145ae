"""The command menus, end to end: at start the bot sets one per audience, and the fake
Bot API (checking scopes and entries as Telegram does) records each scope's."""

from __future__ import annotations

from pathlib import Path

from lunara.telegram.commands import COMMANDS
from tests.fakes.telegram_api import FakeTelegram
from tests.lunara.telegram.conftest import ADMIN, TRADER, running_bot
from tests.waiting import until

ADMIN_ONLY = {name for name, c in COMMANDS.items() if c.permission.startswith("tg.admin.")}
PRIVATE_ONLY = {name for name, c in COMMANDS.items() if c.private_only}


async def test_each_audience_gets_its_own_command_menu_and_the_default_has_nothing_admin_only(
    fake_telegram: FakeTelegram, bot_home: Path
) -> None:
    async with running_bot(fake_telegram, bot_home):
        await until(lambda: len(fake_telegram.menus) == 3, what="three menus")
    menus = fake_telegram.menus
    assert set(menus) == {"default", "all_private_chats", f"chat:{ADMIN}"}
    default, private, admin = menus["default"], menus["all_private_chats"], menus[f"chat:{ADMIN}"]
    assert ADMIN_ONLY
    assert not ADMIN_ONLY & set(default)
    assert not ADMIN_ONLY & set(private)
    assert not PRIVATE_ONLY & set(default)  # a group is told to go private for those
    assert {"buy", "sell", "positions", "setkeys", "subscribe", "paysupport"} <= set(private)
    assert set(admin) == set(COMMANDS)  # the manifest's admin may run every command
    assert f"chat:{TRADER}" not in menus  # a trader's chat uses the private chats' menu
