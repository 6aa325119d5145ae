"""The bot's composition root: settings → logging → heartbeat → services → run.

This is the one place that decides which parts run, from the configuration, and
says in the log what is off and why. Optional parts are imported only when they
are configured, so a bare install stays small.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from blueprint.errors import ExitCode
from blueprint.heartbeat import write_heartbeat
from blueprint.paths import HomePaths
from lunara.config import Settings, SettingsError, load_settings
from lunara.logs import configure_logging
from lunara.runtime import Service, run_services

logger = logging.getLogger("lunara")


def disabled_features(settings: Settings) -> list[str]:
    """What is switched off by the configuration, each with the reason, for the log."""
    notes: list[str] = []
    if settings.telegram_bot_token is None:
        notes.append("Telegram is off: TELEGRAM_BOT_TOKEN is not set")
    if settings.gemini_api_key is None:
        notes.append("AI commentary is off: GEMINI_API_KEY is not set")
    if settings.redis_url is None:
        notes.append("Redis is off: REDIS_URL is not set; trailing-stop state lives in SQLite only")
    return notes


async def build_services(settings: Settings, paths: HomePaths) -> Sequence[Service]:
    """The long-running parts the configuration asks for."""
    return []


async def serve(settings: Settings, paths: HomePaths) -> int:
    services = await build_services(settings, paths)
    return await run_services(services, paths)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"lunara: {error.message}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    paths = HomePaths.resolve(settings.home)
    paths.ensure()
    configure_logging(
        settings.log_level.value,
        settings.log_format.value,
        settings.secret_values(),
        log_file=paths.bot_log,
    )
    # The process is up: say so before the heavier parts load, so the watchdog's
    # `--wait` and crash-recovery clocks measure the bot, not its import time.
    write_heartbeat(paths.heartbeat)
    logger.info(
        "lunara starting: mode=%s market=%s home=%s",
        settings.mode.value,
        settings.market,
        paths.root,
    )
    for note in disabled_features(settings):
        logger.info(note)
    try:
        return asyncio.run(serve(settings, paths))
    except SettingsError as error:
        logger.error("%s", error.message)
        return int(ExitCode.INVALID_CONFIG)
