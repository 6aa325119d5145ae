"""A running Telegram bot against the local fake Bot API, the real paper engine and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from blueprint.audit import AuditLog
from blueprint.manifest import load_manifest
from blueprint.mirror import NullMirror
from blueprint.paths import HomePaths
from lunara.config import Settings, load_settings
from lunara.storage.database import open_database
from lunara.telegram.bot import TelegramBot
from lunara.telegram.outbox import TELEGRAM_LIMITS, SendLimits
from lunara.telegram.polling import TelegramService
from tests.fakes.telegram_api import FakeTelegram
from tests.waiting import until

TOKEN = "7312345678:AAH3kq9ZxV0b1c2d3e4f5g6h7i8j9k0lMnOpQ"
ADMIN = 1001
TRADER = 2002
STRANGER = 3003  # has no entry; gets the default role unless the manifest has none


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """The Bot API with Telegram's flood limits."""
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def friendly_telegram() -> Iterator[FakeTelegram]:
    """The Bot API without flood limits, for a test that asks one user many questions in a
    row about something else than pacing (with `UNPACED`): at Telegram's one message a
    second per chat they would wait a second for each answer and prove nothing more."""
    with FakeTelegram(flood_limits=False) as fake:
        yield fake


UNPACED = SendLimits.unpaced()


def write_manifest(path: Path, *, default_role: str | None = "trader") -> Path:
    document = {
        "version": 1,
        "name": "lunara",
        "program": {"command": ["python", "-m", "lunara"]},
        "roles": {
            "owner": ["*"],
            "admin": ["tg.admin.*", "tg.trade.*", "tg.info.*"],
            "trader": ["tg.trade.*", "tg.info.*"],
            "viewer": ["tg.info.*"],
        },
        "principals": {f"telegram:{ADMIN}": "admin", f"telegram:{TRADER}": "trader"},
    }
    if default_role:
        document["defaults"] = {"telegram": default_role}
    path.write_text(json.dumps(document))
    path.chmod(0o644)
    return path


def bot_settings(home: Path, base_url: str, **extra: str) -> Settings:
    env = {
        "LUNARA_HOME": str(home),
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": base_url,
        "LUNARA_SYMBOLS": "BTCUSDT,ETHUSDT",
        "LUNARA_TICK_SECONDS": "1",
        **extra,
    }
    return load_settings(env, env_file=None)


@dataclass
class RunningBot:
    fake: FakeTelegram
    bot: TelegramBot
    home: Path

    async def ask(self, user_id: int, text: str, chat_type: str = "private") -> str:
        """Send a command and return the bot's reply to it (exactly one is expected)."""
        chat_id = user_id if chat_type == "private" else -1000000000 - user_id
        before = len(self.fake.messages_to(chat_id))
        self.fake.push_text(user_id, text, chat_type=chat_type, username=f"u{user_id}")
        await until(
            lambda: len(self.fake.messages_to(chat_id)) > before, what=f"a reply to {text!r}"
        )
        return self.fake.messages_to(chat_id)[before]


@contextlib.asynccontextmanager
async def built_bot(
    fake: FakeTelegram,
    home: Path,
    *,
    default_role: str | None = "trader",
    send_limits: SendLimits = TELEGRAM_LIMITS,
    **extra: str,
) -> AsyncIterator[tuple[TelegramBot, Any]]:
    """The bot and its trading engine as `python -m lunara` wires them, not yet running
    (`send_limits`: the outbox's pace, Telegram's unless a test is about something else)."""
    from lunara.app import open_trading

    manifest_path = write_manifest(home.parent / "manifest.json", default_role=default_role)
    settings = bot_settings(home, fake.base_url, **extra)
    paths = HomePaths.resolve(home)
    paths.ensure()
    db = await open_database(paths.database)
    trading = await open_trading(settings, db=db)
    try:
        await trading.engine.start()
        bot = TelegramBot(
            settings, paths, load_manifest(manifest_path), AuditLog(paths.audit, NullMirror()), db,
            trading.engine, send_limits=send_limits,
        )  # fmt: skip
        trading.engine.attach_notifier(bot)
        yield bot, trading
    finally:
        await trading.aclose()
        await db.close()


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeTelegram,
    home: Path,
    *,
    default_role: str | None = "trader",
    send_limits: SendLimits = TELEGRAM_LIMITS,
    **extra: str,
) -> AsyncIterator[RunningBot]:
    async with built_bot(
        fake, home, default_role=default_role, send_limits=send_limits, **extra
    ) as (bot, trading):
        stop = asyncio.Event()
        service = asyncio.create_task(TelegramService(bot).run(stop))
        engine_task = asyncio.create_task(trading.runner.run(stop))
        running = RunningBot(fake, bot, home)
        try:
            await until(lambda: fake.polls_by_token.get(TOKEN, 0) > 0, what="polling")
            yield running
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(service, engine_task, return_exceptions=True), 30)


@pytest.fixture
def bot_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home
