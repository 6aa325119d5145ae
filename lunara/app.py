"""The bot's composition root: settings → logging → heartbeat → services → run.

This is the one place that decides which parts run, from the configuration, and
says in the log what is off and why. It builds every part (the database connection,
the one async Redis client, the instance lease, the trading engine and its clients,
Telegram) and closes them through one ``AsyncExitStack``, in the reverse order.
Optional parts are imported only when they are configured, so a bare install stays
small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from blueprint.errors import BlueprintError, ConfigError
from blueprint.exit_message import leave_exit_message
from blueprint.paths import HomePaths, use_private_umask
from lunara.config import Settings, load_settings
from lunara.dependencies import Dependencies
from lunara.logs import configure_logging
from lunara.runtime import Service, run_services

if TYPE_CHECKING:
    import aiosqlite
    from redis.asyncio import Redis

    from blueprint.manifest import Manifest
    from lunara.dependencies import DependencyReporter, Watch
    from lunara.instance import InstanceLease
    from lunara.services import TradingService
    from lunara.telegram.bot import TelegramBot
    from lunara.trading.binance import BinanceGateway
    from lunara.trading.engine import EngineRunner, TradingEngine
    from lunara.trading.executor import Notifier
    from lunara.trading.market import Market
    from lunara.trading.stops import StopStore

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


async def close_logged(what: str, close: Callable[[], Awaitable[None]]) -> None:
    """Close one part; an error is logged with what it was closing and closing goes on,
    so one failing part never keeps the others (the database, the lease) open."""
    try:
        await close()
    except Exception:  # the one error boundary of shutdown: logged with context
        logger.exception("error while closing %s", what)


def push_close(
    exits: contextlib.AsyncExitStack, what: str, close: Callable[[], Awaitable[None]]
) -> None:
    """Register `close` on the composition's exit stack under the one error policy."""
    exits.push_async_callback(close_logged, what, close)


def open_redis(settings: Settings, exits: contextlib.AsyncExitStack) -> Redis | None:
    """The bot's one async Redis client (``REDIS_URL``), closed with the stack; the
    instance lease, the stop store, the dependency probe and Telegram's poll lease all
    share it."""
    if settings.redis_url is None:
        return None
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url, socket_timeout=5.0)
    push_close(exits, "the Redis client", redis.aclose)
    return redis


@dataclass
class TradingRuntime:
    """The engine, its runner and the parts wired for them; ``aclose`` closes what
    ``open_trading`` opened (the parts handed in stay their owner's)."""

    engine: TradingEngine
    runner: EngineRunner
    exits: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    dependencies: Dependencies = field(default_factory=Dependencies)
    redis: Redis | None = None
    stops: StopStore | None = None
    gateway: BinanceGateway | None = None

    def dependency_reporter(self, path: Path) -> DependencyReporter:
        """The service that tells `lunara status` what trading reaches (and, through the
        same board, what Telegram does)."""
        from lunara.dependencies import DependencyReporter
        from lunara.trading.stops import REDIS_RETRY_S, RedisStopStore

        stops = self.stops
        return DependencyReporter(
            path,
            self.dependencies,
            redis=self.redis,
            stops_on_sqlite=(
                (lambda: stops.redis_down) if isinstance(stops, RedisStopStore) else None
            ),
            exchange_ping=None if self.gateway is None else self.gateway.ping,
            stops_retry_s=REDIS_RETRY_S,
        )

    async def aclose(self) -> None:
        await self.exits.aclose()


def build_market(settings: Settings, gateway: BinanceGateway | None, seed: int = 0) -> Market:
    """The market the settings ask for (``LUNARA_MARKET``)."""
    from lunara.config import MarketKind
    from lunara.services import TradingError
    from lunara.trading.market import BinanceMarket, ReplayMarket, SimMarket

    source = settings.market
    if source.kind is MarketKind.BINANCE:
        if gateway is None:
            raise TradingError("the Binance market needs the Binance gateway")
        return BinanceMarket(gateway)
    if source.kind is MarketKind.REPLAY:
        assert source.replay_file is not None
        try:
            return ReplayMarket(source.replay_file)
        except TradingError as error:
            # The bot then exits 6 with this one line, and the watchdog does not restart
            # it: the same file would fail the same way on every restart.
            raise ConfigError(f"invalid configuration: LUNARA_MARKET: {error.message}") from None
    return SimMarket(seed, tick_s=settings.tick_seconds)


async def open_trading(
    settings: Settings,
    *,
    name: str | None = None,
    db: aiosqlite.Connection | None = None,
    redis: Redis | None = None,
    notifier: Notifier | None = None,
    seed: int = 0,
    lease: InstanceLease | None = None,
    dependencies: Dependencies | None = None,
) -> TradingRuntime:
    """The engine and its runner, wired from the settings.

    ``db`` may be the connection the rest of the bot uses; the stop store writes through
    the same one. One connection per database means writers queue on its writer lock
    (``storage.database.transaction``) instead of contending for SQLite's file lock,
    where a busy event loop could hold a transaction past the busy timeout and make
    another connection fail with "database is locked".
    ``redis``: the bot's client (``open_redis``); without one, a client for ``REDIS_URL``
    is opened here when that is set. ``dependencies`` gets the Redis, exchange and
    Gemini watches marked by the clients built here.
    ``lease``: the instance lease this bot holds (``lunara.instance``); every order
    placement and Redis stop write is fenced by it.
    ``name``: the deployment's (its manifest's ``name``, the lease's; ``STORE_NAME`` when
    not given): its trailing stops live in Redis under ``lunara:<name>:stop:``, apart
    from every other deployment's sharing that Redis.
    """
    exits = contextlib.AsyncExitStack()
    try:
        runtime = await _wire_trading(
            settings, name, exits, db, redis, notifier, seed, dependencies or Dependencies(), lease
        )
    except BaseException:
        # A refused configuration (a bad replay file, a missing key) closes what was
        # opened: the database's thread must not keep the bot from exiting.
        await exits.aclose()
        raise
    runtime.exits = exits
    return runtime


async def _wire_trading(
    settings: Settings,
    name: str | None,
    exits: contextlib.AsyncExitStack,
    db: aiosqlite.Connection | None,
    redis: Redis | None,
    notifier: Notifier | None,
    seed: int,
    board: Dependencies,
    lease: InstanceLease | None,
) -> TradingRuntime:
    from lunara.ai.analyst import Analyst
    from lunara.config import MarketKind, Mode
    from lunara.storage.database import open_database
    from lunara.trading.binance import BinanceGateway
    from lunara.trading.engine import EngineConfig, EngineRunner, TradingEngine
    from lunara.trading.limiter import WeightLimiter
    from lunara.trading.stops import STORE_NAME, make_stop_store

    paths = settings.paths
    if db is None:
        db = await open_database(paths.database)
        push_close(exits, "the database", db.close)
    if redis is None:
        redis = open_redis(settings, exits)
    fence = None if lease is None else lease.fence
    stops = make_stop_store(name=name or STORE_NAME, db=db, redis=redis, fence=fence)
    board.redis.configured = redis is not None
    # The exchange is a dependency whenever Binance is asked: live trading, or its prices.
    needs_binance = settings.mode is Mode.LIVE or settings.market.kind is MarketKind.BINANCE
    board.exchange.configured = needs_binance
    gateway = (
        BinanceGateway(
            base_url=settings.binance_api_base_url, limiter=WeightLimiter(), watch=board.exchange
        )
        if needs_binance
        else None
    )
    if gateway is not None:
        push_close(exits, "the Binance gateway", gateway.aclose)
    keyring = None
    if settings.mode is Mode.LIVE:
        from lunara.keys import load_keyring

        keyring = load_keyring(settings)
    analyst: Analyst | None = None
    config = EngineConfig.from_settings(settings)
    if settings.gemini_api_key is not None:
        analyst = Analyst(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=settings.gemini_model,
            base_url=settings.gemini_api_base_url,
            db=db,
            watch=board.ai,
        )
        push_close(exits, "the AI analyst", analyst.aclose)
    board.ai.configured = analyst is not None
    engine = TradingEngine(
        db=db,
        stops=stops,
        market=build_market(settings, gateway, seed),
        config=config,
        gateway=gateway,
        keyring=keyring,
        analyst=analyst,
        notifier=notifier,
        may_act=None if lease is None else lease.check,
    )
    return TradingRuntime(
        engine,
        EngineRunner(engine, tick_seconds=settings.tick_seconds),
        dependencies=board,
        redis=redis,
        stops=stops,
        gateway=gateway,
    )


async def build_services(
    settings: Settings,
    paths: HomePaths,
    exits: contextlib.AsyncExitStack,
    *,
    db: aiosqlite.Connection,
    manifest: Manifest | None,
    name: str,
    redis: Redis | None = None,
    lease: InstanceLease | None = None,
) -> list[Service]:
    """The long-running parts the configuration asks for: the trading engine always,
    Telegram when a token is set (then also the crash report to the admins and the
    notices of plans that ended; it authorizes against `manifest`, which is then
    loaded). What they open is closed by `exits`, also when a part refuses its
    configuration (a bad replay file, manifest or key): the process must exit, or the
    watchdog never learns that the bot refused. ``name``: the deployment's (the
    lease's), under which its trailing stops live in Redis."""
    from lunara.plan_expiry import PlanExpiryNotices
    from lunara.telegram.polling import TelegramService

    trading = await open_trading(settings, name=name, db=db, redis=redis, lease=lease)
    push_close(exits, "trading", trading.aclose)
    services: list[Service] = [trading.runner]
    telegram = None
    if settings.telegram_bot_token is not None:
        assert manifest is not None  # loaded whenever Telegram is configured
        trading.dependencies.telegram.configured = True
        telegram = build_telegram(
            settings, paths, manifest, db, trading.engine, exits, redis, lease,
            trading.dependencies.telegram,
        )  # fmt: skip
        trading.engine.attach_notifier(telegram)
        services.append(TelegramService(telegram))
        services.append(CrashReporter(telegram, paths))
        services.append(PlanExpiryNotices(db, telegram.outbox.wakeup.set))
    services.append(MetricsWriter(paths, trading.engine, telegram))
    services.append(trading.dependency_reporter(paths.dependencies))
    return services


def build_telegram(
    settings: Settings,
    paths: HomePaths,
    manifest: Manifest,
    db: aiosqlite.Connection,
    trading: TradingService,
    exits: contextlib.AsyncExitStack,
    redis: Redis | None = None,
    lease: InstanceLease | None = None,
    watch: Watch | None = None,
) -> TelegramBot:
    from blueprint.audit import AuditLog
    from blueprint.mirror import open_mirror
    from lunara.telegram.bot import TelegramBot

    mirror = open_mirror(settings.redis_url, manifest.name, audit_path=paths.audit)

    async def close_mirror() -> None:
        mirror.close()

    push_close(exits, "the audit mirror", close_mirror)
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
        from blueprint.ledger import LedgerView
        from lunara.crash_report import ReportMarker, pending_report

        manifest = self.telegram.guard.manifest
        marker = ReportMarker(self.paths.root / "crash-report.json")
        document = LedgerView(self.paths, manifest.name).read().document
        policy = manifest.program.restart
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
    from lunara.trading.stops import STORE_NAME

    manifest_path = resolve_manifest(None)
    manifest = None
    if settings.telegram_bot_token is not None or manifest_path.exists():
        manifest = load_manifest(manifest_path)
    # The deployment's name keys its lease and its trailing stops in Redis. A bot run by
    # hand without a manifest (and without Telegram, which needs one) is the deployment
    # of the default name.
    name = STORE_NAME if manifest is None else manifest.name
    async with contextlib.AsyncExitStack() as exits:
        db = await open_database(paths.database)
        push_close(exits, "the database", db.close)
        redis = open_redis(settings, exits)
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
        # Closed after every part that may write under the lease has stopped.
        push_close(exits, "the instance lease", lease.release)
        ended: list[BlueprintError] = []
        keeper = LeaseKeeper(lease, ended.append)
        services = await build_services(
            settings, paths, exits, db=db, manifest=manifest, name=name, redis=redis, lease=lease
        )
        code = await run_services([*services, keeper], paths)
    if ended:
        raise ended[0]
    return code


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
