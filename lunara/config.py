"""The bot's settings: one typed object built from the environment and an optional `.env`.

Every variable documented in `.env.example` is either a field here or listed in
`CLI_ONLY_VARIABLES` (read by the control plane (CLI and watchdog), never by the bot); a test keeps
the two in sync. Errors name the variable and what is wrong, and never echo a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from blueprint.envfile import read_env_file
from blueprint.errors import ConfigError
from blueprint.paths import HomePaths
from blueprint.redaction import Redactor
from lunara.trading.symbols import is_symbol, symbol_name

DEFAULT_ENV_FILE = Path(".env")

# Read by the control plane (CLI and watchdog: identity, manifest, health endpoint), never by the bot.
CLI_ONLY_VARIABLES: frozenset[str] = frozenset(
    {"LUNARA_TOKEN", "LUNARA_MANIFEST", "LUNARA_HEALTH_PORT", "PORT", "LUNARA_HEALTH_HOST"}
)

SET_REDACTED = "set (redacted)"
MIN_TICK_SECONDS = 0.05
"""A faster tick only burns CPU and memory (each tick allocates per symbol); below this,
LUNARA_TICK_SECONDS=1e-9 would leave no time between ticks to handle SIGTERM."""
NOT_SET = "not set"

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TELEGRAM_TOKEN_PATTERN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{10,100}$")
MAX_SYMBOLS = 50
MAX_START_BALANCE = Decimal("1000000000")
"""The most quote currency a simulated account starts with (paper trading, a backtest's
--stake): beyond any real account, a larger figure is a typo, and floats lose the fees."""
REPLAY_PREFIX = "replay:"


class SettingsError(ConfigError):
    """The configuration is invalid (exit 6); `problems` holds one line per bad variable.

    The message is one line (problems joined by "; "): the watchdog records it as the
    reason the bot exited, and `start --wait` prints it.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"invalid configuration: {'; '.join(problems)}")


class Mode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class MarketKind(StrEnum):
    SIM = "sim"
    BINANCE = "binance"
    REPLAY = "replay"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class MarketSource:
    """Where prices come from: the offline simulator, Binance, or a recorded file."""

    kind: MarketKind
    replay_file: Path | None = None

    def __str__(self) -> str:
        if self.kind is MarketKind.REPLAY:
            return f"{REPLAY_PREFIX}{self.replay_file}"
        return self.kind.value

    @classmethod
    def parse(cls, raw: str) -> MarketSource:
        text = raw.strip()
        if text.lower().startswith(REPLAY_PREFIX):
            file_name = text[len(REPLAY_PREFIX) :].strip()
            if not file_name:
                raise ValueError("replay needs a file: replay:/path/to/prices.csv")
            path = Path(file_name).expanduser()
            if not path.is_file():
                raise ValueError(f"replay file {path} does not exist")
            return cls(MarketKind.REPLAY, path)
        lowered = text.lower()
        if lowered in (MarketKind.SIM.value, MarketKind.BINANCE.value):
            return cls(MarketKind(lowered))
        raise ValueError(f"must be sim, binance or replay:FILE (got {text[:40]!r})")


class Settings(BaseSettings):
    """Everything the bot reads from its environment. Build it with `load_settings`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", arbitrary_types_allowed=True)

    # Core
    home: Path = Field(Path(".lunara"), validation_alias="LUNARA_HOME")
    mode: Mode = Field(Mode.PAPER, validation_alias="LUNARA_MODE")
    market: MarketSource = Field(MarketSource(MarketKind.SIM), validation_alias="LUNARA_MARKET")
    symbols: tuple[str, ...] = Field(
        ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT"), validation_alias="LUNARA_SYMBOLS"
    )
    tick_seconds: float = Field(
        5.0, ge=MIN_TICK_SECONDS, le=3600, validation_alias="LUNARA_TICK_SECONDS"
    )
    encryption_key: SecretStr | None = Field(None, validation_alias="LUNARA_ENCRYPTION_KEY")
    # Logging
    log_level: LogLevel = Field(LogLevel.INFO, validation_alias="LOG_LEVEL")
    log_format: LogFormat = Field(LogFormat.TEXT, validation_alias="LOG_FORMAT")
    # Redis
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    # Telegram
    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_api_base_url: str | None = Field(None, validation_alias="TELEGRAM_API_BASE_URL")
    rate_limit_per_minute: int = Field(
        20, ge=1, le=10_000, validation_alias="LUNARA_RATE_LIMIT_PER_MINUTE"
    )
    command_max_age_s: float = Field(
        60.0, gt=0, le=86_400, validation_alias="LUNARA_COMMAND_MAX_AGE_SECONDS"
    )
    paysupport_text: str | None = Field(
        None, max_length=3000, validation_alias="LUNARA_PAYSUPPORT_TEXT"
    )
    terms_text: str | None = Field(None, max_length=3000, validation_alias="LUNARA_TERMS_TEXT")
    # Exchange
    binance_api_base_url: str | None = Field(None, validation_alias="BINANCE_API_BASE_URL")
    public_data_url: str = Field(
        "https://data.binance.vision", validation_alias="LUNARA_PUBLIC_DATA_URL"
    )
    # AI
    gemini_api_key: SecretStr | None = Field(None, validation_alias="GEMINI_API_KEY")
    gemini_model: str = Field("gemini-2.5-flash", validation_alias="GEMINI_MODEL")
    gemini_api_base_url: str | None = Field(None, validation_alias="GEMINI_API_BASE_URL")
    # Paper trading
    paper_fee_rate: Decimal = Field(
        Decimal("0.001"), ge=0, lt=Decimal("0.1"), validation_alias="LUNARA_PAPER_FEE_RATE"
    )
    paper_slippage: Decimal = Field(
        Decimal("0.0005"), ge=0, lt=Decimal("0.1"), validation_alias="LUNARA_PAPER_SLIPPAGE"
    )
    paper_start_balance: Decimal = Field(
        Decimal("10000"),
        gt=0,
        le=MAX_START_BALANCE,
        validation_alias="LUNARA_PAPER_START_BALANCE",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges .env and the environment itself so that callers (and tests)
        # can pass an explicit environment instead of the process-wide os.environ.
        return (init_settings,)

    @field_validator("market", mode="before")
    @classmethod
    def _parse_market(cls, value: Any) -> Any:
        return MarketSource.parse(value) if isinstance(value, str) else value

    @field_validator("mode", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("symbols", mode="before")
    @classmethod
    def _parse_symbols(cls, value: Any) -> Any:
        return parse_symbols(value) if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator(
        "telegram_api_base_url", "binance_api_base_url", "gemini_api_base_url", "public_data_url"
    )
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.strip().rstrip("/")

    @field_validator("telegram_bot_token")
    @classmethod
    def _check_telegram_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not TELEGRAM_TOKEN_PATTERN.match(value.get_secret_value()):
            raise ValueError("does not look like a bot token from @BotFather (digits:letters)")
        return value

    @field_validator("gemini_api_key")
    @classmethod
    def _check_gemini_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and any(c.isspace() for c in value.get_secret_value()):
            raise ValueError("must not contain whitespace")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from lunara.crypto import parse_keys  # cryptography stays off the import path

            parse_keys(value.get_secret_value())
        return value

    @field_validator("gemini_model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not MODEL_NAME_PATTERN.match(value.strip()):
            raise ValueError("must be a model name such as gemini-2.5-flash")
        return value.strip()

    @model_validator(mode="after")
    def _check_live_mode(self) -> Settings:
        if self.mode is Mode.LIVE:
            if self.market.kind is not MarketKind.BINANCE:
                raise ValueError("LUNARA_MARKET: live mode trades on a real exchange; set binance")
            if self.encryption_key is None:
                raise ValueError(
                    "LUNARA_ENCRYPTION_KEY: required in live mode (generate one with "
                    "`python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`)"
                )
        return self

    @property
    def paths(self) -> HomePaths:
        return HomePaths.resolve(self.home)

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def ai_enabled(self) -> bool:
        return self.gemini_api_key is not None

    def secret_values(self) -> list[str]:
        """The configured secrets, for the log redaction filter."""
        values: list[str] = []
        for name in SECRET_FIELDS:
            secret = getattr(self, name)
            if secret is not None:
                raw = secret.get_secret_value()
                values.append(raw)
                values.extend(part.strip() for part in raw.split(",") if part.strip())
        return values

    def redacted(self) -> dict[str, str | int | float | bool]:
        """Every variable and its effective value, secrets reduced to whether they are set;
        numbers and flags stay numbers and flags (``config show --json``). Other text
        goes through the redactor too: `REDIS_URL` may carry a password."""
        redactor = Redactor()
        shown: dict[str, str | int | float | bool] = {}
        for name, field in type(self).model_fields.items():
            variable = str(field.validation_alias)
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                shown[variable] = NOT_SET if value is None else SET_REDACTED
            elif value is None:
                shown[variable] = NOT_SET
            elif isinstance(value, tuple):
                shown[variable] = ",".join(value)
            elif isinstance(value, StrEnum):
                shown[variable] = value.value
            elif isinstance(value, bool | int | float):
                shown[variable] = value
            elif isinstance(value, Decimal):
                shown[variable] = float(value)
            else:
                shown[variable] = redactor.redact(str(value))
        return shown


SECRET_FIELDS: frozenset[str] = frozenset(
    name for name, field in Settings.model_fields.items() if field.annotation == SecretStr | None
)


def settings_variables() -> dict[str, str]:
    """Environment variable name → field name, for every setting."""
    return {str(field.validation_alias): name for name, field in Settings.model_fields.items()}


def secret_variables() -> frozenset[str]:
    variables = settings_variables()
    return frozenset(variable for variable, name in variables.items() if name in SECRET_FIELDS)


def parse_symbols(raw: str) -> tuple[str, ...]:
    """Comma-separated trading pairs → upper-case tuple, order kept, no duplicates."""
    symbols = tuple(symbol_name(part) for part in raw.split(",") if part.strip())
    if not symbols:
        raise ValueError("needs at least one symbol, e.g. BTCUSDT,ETHUSDT")
    if len(symbols) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols")
    bad = [symbol for symbol in symbols if not is_symbol(symbol)]
    if bad:
        raise ValueError(f"not a trading pair: {', '.join(b[:24] for b in bad[:3])}")
    duplicates = sorted({symbol for symbol in symbols if symbols.count(symbol) > 1})
    if duplicates:
        raise ValueError(f"listed twice: {', '.join(duplicates)}")
    return symbols


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: Path | None = DEFAULT_ENV_FILE
) -> Settings:
    """Settings from `env_file` overlaid by `environ` (default os.environ).

    An empty value counts as unset, so a `.env` copied from `.env.example` with blank
    optional lines means "use the default".
    """
    environment = os.environ if environ is None else environ
    known = settings_variables()
    merged = {key: value for key, value in read_env_file(env_file).items() if key in known}
    merged.update({key: value for key, value in environment.items() if key in known})
    values: dict[str, Any] = {key: value for key, value in merged.items() if value.strip()}
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_describe(error, values)) from None


def _describe(error: ValidationError, values: Mapping[str, Any]) -> list[str]:
    secrets = secret_variables()
    problems: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        location = item["loc"]
        if not location:
            problems.append(message)
            continue
        variable = str(location[0])
        if variable not in secrets and variable in values and "got " not in message:
            message = f"{message} (got {values[variable][:40]!r})"
        problems.append(f"{variable}: {message}")
    return problems
