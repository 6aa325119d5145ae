"""The bot's own commands (config, keys, backup, restore, analyze) on the `lunara` CLI;
`data` and `backtest` are in `lunara.candle_commands`, registered from here.

They register on the control plane's Typer app; blueprint never imports them. Loaded
by `lunara.cli` only when a command other than a plain `status` is run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from blueprint.commands import JsonOption, app, guarded
from blueprint.errors import BlueprintError, ConfigError
from blueprint.manifest import Permission
from blueprint.session import Session
from lunara.command_settings import settings_of

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from lunara.analysis.candles import Candle
    from lunara.config import Settings
    from lunara.storage.backup import LiveStops
    from lunara.trading.stops import TrackedStop

config_app = typer.Typer(help="The bot's configuration.", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys for exchange credentials.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")

REDIS_TIMEOUT_S = 5.0


@config_app.command("show")
def config_show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The effective configuration, every secret redacted."""

    def body(session: Session) -> int:
        shown = settings_of(session).redacted()
        session.outcome("ok")
        if as_json:
            from blueprint.render import print_json

            print_json(shown)
        else:
            from blueprint.render import print_mapping

            print_mapping("configuration", shown)
        return 0

    guarded(ctx, Permission.CONFIG, "config show", body)


@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context) -> None:
    """Re-encrypt every stored secret under the newest key of LUNARA_ENCRYPTION_KEY."""

    def body(session: Session) -> int:
        from lunara.keys import load_keyring
        from lunara.storage.backup import rotate_keys

        settings = settings_of(session)
        keyring = load_keyring(settings)
        count = rotate_keys(settings.paths.database, keyring)
        session.outcome("ok", {"re_encrypted": count})
        typer.echo(f"re-encrypted {count} secrets under key {keyring.primary_key_id}")
        return 0

    guarded(ctx, Permission.KEYS, "keys rotate", body)


@app.command()
def backup(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="Where to write the backup; with --keep, a directory.")
    ],
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep",
            min=1,
            help="Write a timestamped backup into the directory PATH; keep the newest N.",
        ),
    ] = None,
) -> None:
    """A consistent copy of the database and the live trailing stops (safe while running)."""

    def body(session: Session) -> int:
        from lunara.storage.backup import backup_database, backup_into

        settings = settings_of(session)
        warnings: list[str] = []
        live: LiveStops | None = None
        if settings.redis_url is not None:
            live = _live_stops(settings.redis_url, session.manifest.name, warnings)
        if keep is None:
            summary = backup_database(settings.paths.database, path, live_stops=live)
            pruned: list[Path] = []
        else:
            summary, pruned = backup_into(path, settings.paths.database, keep=keep, live_stops=live)
        for warning in warnings:
            typer.echo(f"warning: {warning}", err=True)
        session.outcome("ok", {"path": str(summary.path), "pruned": len(pruned)})
        typer.echo(f"backup written to {summary.path} ({summary})")
        if pruned:
            typer.echo(f"removed {len(pruned)} older backups")
        return 0

    guarded(ctx, Permission.BACKUP, "backup", body)


def _live_stops(redis_url: str, name: str, warnings: list[str]) -> LiveStops:
    """Reads the trailing stops Redis holds for the deployment `name` for a backup; Redis
    down leaves the SQLite checkpoint (at most 5 s older) in the backup, with a warning,
    rather than no backup at all."""

    async def read() -> Mapping[int, TrackedStop]:
        from redis.exceptions import RedisError

        from lunara.trading.stops import read_live_stops

        redis = _redis_client(redis_url)
        try:
            return await read_live_stops(redis, name=name)
        except (RedisError, OSError) as error:
            warnings.append(
                f"Redis is unreachable ({type(error).__name__}): the backup holds the "
                "trailing stops as last checkpointed to SQLite (at most 5 s older)"
            )
            return {}
        finally:
            await redis.aclose()

    return read


async def _clear_live_stops(redis_url: str, name: str) -> int:
    """Deletes the deployment `name`'s trailing stops from Redis, and no other's."""
    from redis.exceptions import RedisError

    from lunara.trading.stops import clear_live_stops

    redis = _redis_client(redis_url)
    try:
        return await clear_live_stops(redis, name=name)
    except (RedisError, OSError) as error:
        raise BlueprintError(
            f"Redis is unreachable ({type(error).__name__}): nothing was restored. Its "
            "trailing stops must be cleared so that the restored ones win on start; "
            "bring Redis back (or unset REDIS_URL) and restore again"
        ) from None
    finally:
        await redis.aclose()


def _redis_client(redis_url: str) -> Redis:
    from redis.asyncio import Redis

    return Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


@app.command()
def restore(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A backup made by `lunara backup`.")],
) -> None:
    """Replace the database with a backup (refused while the bot runs).

    Only the backup's rows are restored, into Lunara's own schema; a file holding
    anything else (a trigger, a view) is refused, and commands or messages that were
    under way when it was taken are left out. With REDIS_URL set, this deployment's
    trailing stops in Redis (those under its manifest's name, no other deployment's) are
    deleted first: the restored file is the one truth, and the bot's start-up reconcile
    loads its stops into Redis.
    """

    def body(session: Session) -> int:
        from lunara.storage.backup import restore_database

        running = session.controller.status(session.principal).pid is not None
        if running:
            raise BlueprintError("the bot is running: run `lunara stop` first, then restore")
        settings = settings_of(session)
        cleared: list[int] = []
        redis_url = settings.redis_url

        def clear_redis() -> None:  # once the file has been copied: a bad file changes nothing
            if redis_url is not None:
                cleared.append(asyncio.run(_clear_live_stops(redis_url, session.manifest.name)))

        result = restore_database(
            path, settings.paths.database, is_running=False, before_replacing=clear_redis
        )
        session.outcome(
            "ok",
            {
                "path": str(path),
                "redis_stops_cleared": sum(cleared),
                "unanswered_commands_dropped": result.dropped_commands,
                "unsent_messages_dropped": result.dropped_messages,
            },
        )
        typer.echo(f"restored {path} ({result})")
        if settings.redis_url is not None:
            typer.echo(
                f"cleared {sum(cleared)} trailing stops from Redis; the restored ones load on start"
            )
        return 0

    guarded(ctx, Permission.RESTORE, "restore", body)


@app.command()
def analyze(
    ctx: typer.Context,
    symbol: Annotated[str, typer.Argument(help="A trading pair, e.g. BTCUSDT.")],
    as_json: JsonOption = False,
) -> None:
    """Indicators and symptoms at the latest closed candle of the configured market."""

    def body(session: Session) -> int:
        from lunara.analysis import InsufficientData, analyze_candles
        from lunara.services import TradingError
        from lunara.telegram.parsing import UsageError, parse_symbol
        from lunara.trading.exchange import ExchangeError

        try:
            name = parse_symbol(symbol)
        except UsageError as error:
            raise BlueprintError(str(error)) from None
        settings = settings_of(session)
        try:
            candles = asyncio.run(_history(settings, name))
            result = analyze_candles(candles, symbol=name)
        except (InsufficientData, TradingError, ExchangeError) as error:
            raise BlueprintError(str(error)) from None
        session.outcome("ok")
        if as_json:
            from blueprint.render import print_json

            print_json(result.to_json())
        else:
            from blueprint.render import print_mapping

            print_mapping(f"{name}", result.to_json())
        return 0

    guarded(ctx, Permission.ANALYZE, "analyze", body)


async def _history(settings: Settings, symbol: str) -> list[Candle]:
    """Candles of the configured market: a replay file up to its last candle, the sim
    market's seeded history, or Binance klines."""
    from lunara.analysis.candles import read_klines_csv
    from lunara.app import build_market
    from lunara.config import MarketKind
    from lunara.trading.engine import ANALYSIS_CANDLES

    if settings.market.kind is MarketKind.REPLAY:
        from lunara.analysis.candles import CandleFileError

        assert settings.market.replay_file is not None
        try:
            return read_klines_csv(settings.market.replay_file)
        except CandleFileError as error:
            raise ConfigError(f"invalid configuration: LUNARA_MARKET: {error}") from None
    gateway = None
    if settings.market.kind is MarketKind.BINANCE:
        from lunara.trading.binance import BinanceGateway
        from lunara.trading.limiter import WeightLimiter

        gateway = BinanceGateway(base_url=settings.binance_api_base_url, limiter=WeightLimiter())
    market = build_market(settings, gateway)
    return list(await market.history(symbol, ANALYSIS_CANDLES))


from lunara import candle_commands  # noqa: E402, F401  (registers `data` and `backtest`)
