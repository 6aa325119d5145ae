"""The bot's composition root: settings → logging → heartbeat → services → run.

This is the one place that decides which parts run, from the configuration, and
says in the log what is off and why. Optional parts are imported only when they
are configured, so a bare install stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from blueprint.errors import BlueprintError, ConfigError
from blueprint.exit_message import leave_exit_message
from blueprint.paths import HomePaths, use_private_umask
from lunara.config import Settings, load_settings
from lunara.logs import configure_logging
from lunara.runtime import Service, run_services

if TYPE_CHECKING:
    import aiosqlite
    from redis.asyncio import Redis

    from blueprint.manifest import Manifest
    from lunara.dependencies import Watch
    from lunara.instance import InstanceLease
    from lunara.services import TradingService
    from lunara.telegram.bot import TelegramBot
    from lunara.trading.engine import TradingEngine

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


@dataclass
class Composition:
    """The running parts and what to close after they stop."""

    services: list[Service] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:  # closing must go on; the error is logged with context
                logger.exception("error while closing")


async def build_services(
    settings: Settings,
    paths: HomePaths,
    *,
    db: aiosqlite.Connection,
    manifest: Manifest | None,
    redis: Redis | None = None,
    lease: InstanceLease | None = None,
) -> Composition:
    """The long-running parts the configuration asks for: the trading engine always,
    Telegram when a token is set (then also the crash report to the admins and the
    notices of plans that ended; it authorizes against `manifest`, which is then
    loaded)."""
    composition = Composition()
    try:
        await _compose(composition, settings, paths, db, manifest, redis, lease)
    except BaseException:
        # A part refused its configuration (a bad replay file, manifest or key): close
        # what was opened, or the process may not exit and the watchdog never learns
        # that the bot refused.
        await composition.aclose()
        raise
    return composition


async def _compose(
    composition: Composition,
    settings: Settings,
    paths: HomePaths,
    db: aiosqlite.Connection,
    manifest: Manifest | None,
    redis: Redis | None,
    lease: InstanceLease | None,
) -> None:
    from lunara.plan_expiry import PlanExpiryNotices
    from lunara.telegram.polling import TelegramService
    from lunara.trading.engine import open_trading

    trading = await open_trading(settings, db=db, redis=redis, lease=lease)
    composition.closers.append(trading.aclose)
    composition.services.append(trading.runner)
    telegram = None
    if settings.telegram_bot_token is not None:
        assert manifest is not None  # loaded whenever Telegram is configured
        trading.dependencies.telegram.configured = True
        telegram = build_telegram(
            settings, paths, manifest, db, trading.engine, redis, lease,
            trading.dependencies.telegram,
        )  # fmt: skip
        trading.engine.attach_notifier(telegram)
        composition.services.append(TelegramService(telegram))
        composition.services.append(CrashReporter(telegram, paths))
        composition.services.append(PlanExpiryNotices(db, telegram.outbox.wakeup.set))
    composition.services.append(MetricsWriter(paths, trading.engine, telegram))
    composition.services.append(trading.dependency_reporter(paths.dependencies))


def build_telegram(
    settings: Settings,
    paths: HomePaths,
    manifest: Manifest,
    db: aiosqlite.Connection,
    trading: TradingService,
    redis: Redis | None = None,
    lease: InstanceLease | None = None,
    watch: Watch | None = None,
) -> TelegramBot:
    from blueprint.audit import AuditLog
    from blueprint.mirror import open_mirror
    from lunara.telegram.bot import TelegramBot

    mirror = open_mirror(settings.redis_url, manifest.name, audit_path=paths.audit)
    return TelegramBot(
        settings,
        paths,
        manifest,
        AuditLog(paths.audit, mirror),
        db,
        trading,
        redis=redis,
        may_send=None if lease is None else lease.may_act,
        watch=watch,
    )


class MetricsWriter:
    """Hands the bot's counters to the watchdog's /metrics (blueprint.metrics)."""

    name = "metrics"
    every_s = 5.0

    def __init__(
        self, paths: HomePaths, engine: TradingEngine, telegram: TelegramBot | None
    ) -> None:
        self.path = paths.root / "metrics.json"
        self.engine = engine
        self.telegram = telegram

    def values(self) -> dict[str, float]:
        report = self.engine.executor.last_report
        values = {
            "orders_placed_total": float(self.engine.orders.placed),
            "orders_failed_total": float(self.engine.orders.failed),
        }
        if report is not None:
            values["tick_duration_seconds"] = float(report.duration_s)
        binance = self.engine.binance_limits()
        if binance:
            values["binance_weight_used"] = float(binance["binance_weight_used_1m"])
            values["binance_weight_budget"] = float(binance["binance_weight_budget_1m"])
            values["binance_ban_seconds"] = float(binance["binance_banned_for_s"])
        if self.telegram is not None:
            values["telegram_updates_total"] = float(self.telegram.updates_handled)
            values["telegram_conflicts_total"] = float(self.telegram.state.conflicts)
        return values

    async def run(self, stop: asyncio.Event) -> None:
        from blueprint.metrics import write_metrics

        while not stop.is_set():
            write_metrics(self.path, self.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        write_metrics(self.path, self.values())


class CrashReporter:
    """Tell the admins why the previous bot ended (if abnormally), through the outbox:
    queued once per exit (a restart before it went out does not queue it twice), and
    sent when Telegram allows, however long an outage lasts."""

    name = "crash-report"

    def __init__(self, telegram: TelegramBot, paths: HomePaths) -> None:
        self.telegram = telegram
        self.paths = paths

    async def run(self, stop: asyncio.Event) -> None:
        from blueprint.ledger import Ledger
        from blueprint.mirror import NullMirror
        from lunara.crash_report import ReportMarker, pending_report

        marker = ReportMarker(self.paths.root / "crash-report.json")
        document = Ledger(self.paths, "lunara", NullMirror()).read().document
        policy = self.telegram.guard.manifest.program.restart
        report = pending_report(document, policy, marker.load())
        if report is None:
            return
        admins = await self.telegram.report_crash(report.to_html(), report.exit.at)
        marker.save(report.exit.at)
        logger.info("crash report queued for %d admins", admins)


async def serve(settings: Settings, paths: HomePaths) -> int:
    """Wait for the instance lease (as `standby` while another instance of this
    deployment holds it), then run the bot's services until stopped.

    Refused (InstanceConflict, exit 6) when another deployment under the same name holds
    the lease; a bot that loses the lease stops and exits (LeaseLost): restarted by its
    watchdog, it waits as standby.
    """
    from blueprint.locations import resolve_manifest
    from blueprint.manifest import load_manifest
    from lunara.instance import InstanceLease, LeaseKeeper, Standby
    from lunara.storage.database import open_database
    from lunara.storage.deployment import deployment_id
    from lunara.trading.stopstore import STORE_NAME

    manifest_path = resolve_manifest(None)
    manifest = None
    if settings.telegram_bot_token is not None or manifest_path.exists():
        manifest = load_manifest(manifest_path)
    # A bot run by hand without a manifest (and without Telegram, which needs one) is the
    # deployment of the default name, the one its stop keys live under.
    name = STORE_NAME if manifest is None else manifest.name
    db = await open_database(paths.database)
    redis = None
    try:
        if settings.redis_url is not None:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url, socket_timeout=5.0)
        lease = InstanceLease(
            name=name, deployment_id=await deployment_id(db), home=paths.root, redis=redis
        )
        standby = Standby(lease)
        code = await run_services([standby], paths)
        if standby.refused is not None:
            raise standby.refused
        if not standby.acquired:
            await lease.release()
            return code
        ended: list[BlueprintError] = []
        keeper = LeaseKeeper(lease, ended.append)
        composition = await build_services(
            settings, paths, db=db, manifest=manifest, redis=redis, lease=lease
        )
        try:
            code = await run_services([*composition.services, keeper], paths)
        finally:
            await composition.aclose()
            await lease.release()
        if ended:
            raise ended[0]
        return code
    finally:
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bot; exit 6 when its configuration is invalid (the watchdog then does not
    restart it), leaving the one-line reason for the watchdog (blueprint.exit_message)."""
    use_private_umask()  # the database, its WAL, logs and state files: the owner's alone
    try:
        settings = load_settings()
    except ConfigError as error:  # a bad variable, an unreadable .env
        print(f"lunara: {error.message}", file=sys.stderr, flush=True)
        leave_exit_message(HomePaths.resolve(None), error.message)
        return int(error.exit_code)
    paths = HomePaths.resolve(settings.home)
    paths.ensure()
    configure_logging(
        settings.log_level.value,
        settings.log_format.value,
        settings.secret_values(),
        log_file=paths.bot_log,
    )
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
    except BlueprintError as error:  # a bad manifest, key or replay file: say which, exit
        logger.error("%s", error.message)
        leave_exit_message(paths, error.message)
        return int(error.exit_code)
