from __future__ import annotations

import re
import string
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from blueprint.errors import ConfigError, ExitCode
from lunara.config import (
    CLI_ONLY_VARIABLES,
    NOT_SET,
    SECRET_FIELDS,
    SET_REDACTED,
    LogFormat,
    LogLevel,
    MarketKind,
    Mode,
    SettingsError,
    load_settings,
    parse_symbols,
    secret_variables,
    settings_variables,
)

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
FERNET_KEY_A = Fernet.generate_key().decode()
FERNET_KEY_B = Fernet.generate_key().decode()
TELEGRAM_TOKEN = "123456789:AAHsecretsecretsecretsecretsecret0"


def test_defaults_apply_when_nothing_is_configured() -> None:
    settings = load_settings({}, env_file=None)
    assert settings.home == Path(".lunara")
    assert settings.mode is Mode.PAPER
    assert settings.market.kind is MarketKind.SIM
    assert settings.symbols == ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
    assert settings.tick_seconds == 5
    assert settings.log_level is LogLevel.INFO
    assert settings.log_format is LogFormat.TEXT
    assert settings.redis_url is None
    assert settings.telegram_bot_token is None
    assert not settings.telegram_enabled
    assert settings.gemini_model == "gemini-2.5-flash"
    assert settings.paper_fee_rate == Decimal("0.001")
    assert settings.paper_slippage == Decimal("0.0005")
    assert settings.paper_start_balance == Decimal("10000")
    assert settings.rate_limit_per_minute == 20


def test_values_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "LUNARA_HOME": str(tmp_path),
            "LUNARA_MODE": "LIVE",
            "LUNARA_MARKET": "binance",
            "LUNARA_ENCRYPTION_KEY": FERNET_KEY_A,
            "LUNARA_SYMBOLS": " btcusdt , ethusdt ",
            "LUNARA_TICK_SECONDS": "0.5",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "JSON",
            "REDIS_URL": "redis://127.0.0.1:6379/2",
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "TELEGRAM_API_BASE_URL": "http://127.0.0.1:8081/bot/",
            "LUNARA_PAPER_FEE_RATE": "0.002",
            "LUNARA_RATE_LIMIT_PER_MINUTE": "5",
            "UNRELATED": "ignored",
        },
        env_file=None,
    )
    assert settings.home == tmp_path
    assert settings.paths.root == tmp_path.resolve()
    assert settings.mode is Mode.LIVE
    assert settings.market.kind is MarketKind.BINANCE
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")
    assert settings.tick_seconds == 0.5
    assert settings.log_level is LogLevel.DEBUG
    assert settings.log_format is LogFormat.JSON
    assert settings.redis_url == "redis://127.0.0.1:6379/2"
    assert settings.telegram_enabled
    assert settings.telegram_api_base_url == "http://127.0.0.1:8081/bot"
    assert settings.paper_fee_rate == Decimal("0.002")
    assert settings.rate_limit_per_minute == 5


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nLUNARA_TICK_SECONDS=7\nGEMINI_MODEL=gemini-pro\nLOG_LEVEL=WARNING\n"
    )
    settings = load_settings({"LOG_LEVEL": "ERROR"}, env_file=env_file)
    assert settings.tick_seconds == 7
    assert settings.gemini_model == "gemini-pro"
    assert settings.log_level is LogLevel.ERROR


def test_a_missing_env_file_is_fine(tmp_path: Path) -> None:
    settings = load_settings({"LUNARA_TICK_SECONDS": "3"}, env_file=tmp_path / "absent.env")
    assert settings.tick_seconds == 3


def test_an_env_file_that_is_a_directory_is_a_configuration_error_naming_it(
    tmp_path: Path,
) -> None:
    """What `docker run -v ./.env:/app/.env` leaves when the host has no .env: a directory,
    once silently taken for no file at all."""
    (tmp_path / ".env").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=tmp_path / ".env")
    assert caught.value.exit_code is ExitCode.INVALID_CONFIG
    message = caught.value.message
    assert f"cannot read {tmp_path / '.env'} (Is a directory)" in message
    assert "\n" not in message


def test_an_env_file_that_is_not_utf8_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(b"LUNARA_MODE=paper\nLOG_LEVEL=\xff\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=env_file)
    assert caught.value.exit_code is ExitCode.INVALID_CONFIG
    assert f"{env_file} is not UTF-8 text (byte 28)" in caught.value.message


def test_blank_values_mean_the_default(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REDIS_URL=\nTELEGRAM_BOT_TOKEN=\nLUNARA_TICK_SECONDS=\n")
    settings = load_settings({"LUNARA_MODE": "  "}, env_file=env_file)
    assert settings.redis_url is None
    assert settings.telegram_bot_token is None
    assert settings.tick_seconds == 5
    assert settings.mode is Mode.PAPER


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LUNARA_MODE", "demo"),
        ("LUNARA_MARKET", "kraken"),
        ("LUNARA_MARKET", "replay:"),
        ("LUNARA_SYMBOLS", "BTC/USDT"),
        ("LUNARA_SYMBOLS", "BTCUSDT,BTCUSDT"),
        ("LUNARA_SYMBOLS", ",,"),
        ("LUNARA_TICK_SECONDS", "0"),
        ("LUNARA_TICK_SECONDS", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_FORMAT", "xml"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("TELEGRAM_BOT_TOKEN", "not-a-token"),
        ("TELEGRAM_API_BASE_URL", "ftp://example"),
        ("BINANCE_API_BASE_URL", "127.0.0.1:9000"),
        ("GEMINI_API_BASE_URL", "http://"),
        ("GEMINI_API_KEY", "has space"),
        ("GEMINI_MODEL", "../etc"),
        ("LUNARA_ENCRYPTION_KEY", "short"),
        ("LUNARA_PAPER_FEE_RATE", "-0.1"),
        ("LUNARA_PAPER_FEE_RATE", "lots"),
        ("LUNARA_PAPER_SLIPPAGE", "0.5"),
        ("LUNARA_PAPER_START_BALANCE", "0"),
        ("LUNARA_RATE_LIMIT_PER_MINUTE", "1.5"),
        ("LUNARA_RATE_LIMIT_PER_MINUTE", "0"),
    ],
)
def test_each_bad_value_is_named(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value}, env_file=None)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.exit_code is ExitCode.INVALID_CONFIG
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"{variable}: ")


def test_every_bad_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {"LUNARA_MODE": "demo", "LOG_FORMAT": "xml", "LUNARA_TICK_SECONDS": "-1"},
            env_file=None,
        )
    named = {problem.split(":")[0] for problem in caught.value.problems}
    assert named == {"LUNARA_MODE", "LOG_FORMAT", "LUNARA_TICK_SECONDS"}
    assert caught.value.message == "invalid configuration: " + "; ".join(caught.value.problems)


def test_non_secret_bad_values_are_quoted_to_help_the_operator() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LOG_FORMAT": "xml"}, env_file=None)
    assert "'xml'" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TELEGRAM_BOT_TOKEN", "sup3rs3cr3tvalue"),
        ("GEMINI_API_KEY", "sup3r s3cr3tvalue"),
        ("LUNARA_ENCRYPTION_KEY", f"{FERNET_KEY_A},sup3rs3cr3tvalue"),
    ],
    ids=["TELEGRAM_BOT_TOKEN", "GEMINI_API_KEY", "LUNARA_ENCRYPTION_KEY"],  # the key is random
)
def test_secret_values_never_appear_in_errors(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value}, env_file=None)
    rendered = f"{caught.value} {caught.value!r} {caught.value.problems}"
    assert variable in rendered
    assert "sup3r" not in rendered
    assert FERNET_KEY_A not in rendered
    assert caught.value.__cause__ is None


def test_secrets_are_hidden_in_repr_and_redacted_view() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "LUNARA_ENCRYPTION_KEY": f"{FERNET_KEY_A},{FERNET_KEY_B}",
        },
        env_file=None,
    )
    shown = settings.redacted()
    rendered = f"{settings!r} {settings} {shown}"
    for secret in (TELEGRAM_TOKEN, FERNET_KEY_A, FERNET_KEY_B):
        assert secret not in rendered
    assert shown["TELEGRAM_BOT_TOKEN"] == SET_REDACTED
    assert shown["LUNARA_ENCRYPTION_KEY"] == SET_REDACTED
    assert shown["GEMINI_API_KEY"] == NOT_SET
    assert shown["REDIS_URL"] == NOT_SET
    assert shown["LUNARA_SYMBOLS"] == "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT"
    assert shown["LUNARA_MODE"] == "paper"
    assert set(shown) == set(settings_variables())


def test_secret_values_lists_each_key_for_log_redaction() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,
            "LUNARA_ENCRYPTION_KEY": f"{FERNET_KEY_A},{FERNET_KEY_B}",
        },
        env_file=None,
    )
    values = settings.secret_values()
    assert {TELEGRAM_TOKEN, FERNET_KEY_A, FERNET_KEY_B} <= set(values)


def test_the_secret_fields_are_the_documented_secrets() -> None:
    assert secret_variables() == {"TELEGRAM_BOT_TOKEN", "LUNARA_ENCRYPTION_KEY", "GEMINI_API_KEY"}
    assert len(SECRET_FIELDS) == 3


def test_live_mode_needs_a_real_exchange_and_an_encryption_key() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LUNARA_MODE": "live"}, env_file=None)
    text = str(caught.value)
    assert "LUNARA_MARKET" in text
    with pytest.raises(SettingsError) as caught:
        load_settings({"LUNARA_MODE": "live", "LUNARA_MARKET": "binance"}, env_file=None)
    assert "LUNARA_ENCRYPTION_KEY: required in live mode" in str(caught.value)


def test_replay_market_needs_an_existing_file(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    with pytest.raises(SettingsError, match=r"LUNARA_MARKET: replay file .* does not exist"):
        load_settings({"LUNARA_MARKET": f"replay:{prices}"}, env_file=None)
    prices.write_text("t,price\n")
    settings = load_settings({"LUNARA_MARKET": f"replay:{prices}"}, env_file=None)
    assert settings.market.kind is MarketKind.REPLAY
    assert settings.market.replay_file == prices
    assert settings.redacted()["LUNARA_MARKET"] == f"replay:{prices}"


def _parse_env_example() -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(variables in order, section names, comment lines just above each variable)."""
    variables: list[str] = []
    sections: list[str] = []
    comments: dict[str, list[str]] = {}
    block: list[str] = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        section = re.fullmatch(r"# ===== (.+) =====", line)
        # Paths are documented commented out (`# LUNARA_HOME=...`): a copied .env must
        # not override what an image or a unit sets.
        assignment = re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]*)=(.*)", line)
        if section:
            sections.append(section.group(1))
            block = []
        elif assignment:
            variables.append(assignment.group(1))
            comments[assignment.group(1)] = block
            block = []
        elif line.startswith("#"):
            block.append(line)
        elif not line.strip():
            block = []
        else:
            pytest.fail(f".env.example has a line that is neither comment nor VAR=value: {line}")
    return variables, sections, comments


def test_env_example_documents_exactly_the_settings_and_cli_variables() -> None:
    variables, _, _ = _parse_env_example()
    documented = set(variables)
    expected = set(settings_variables()) | CLI_ONLY_VARIABLES
    assert documented - expected == set(), "documented but read by nothing"
    assert expected - documented == set(), "read but not documented"
    assert not CLI_ONLY_VARIABLES & set(settings_variables())


def test_env_example_has_no_duplicates_and_every_variable_has_a_comment_and_default() -> None:
    variables, sections, comments = _parse_env_example()
    assert len(variables) == len(set(variables))
    assert sections == [
        "Core",
        "Logging",
        "Redis",
        "Telegram",
        "Exchange",
        "AI",
        "Paper trading",
        "CLI",
        "Health",
    ]
    for variable in variables:
        assert comments[variable], f"{variable} has no comment"
        assert any("Default:" in line for line in comments[variable]), f"{variable}: no default"


def test_env_example_defaults_are_the_real_defaults() -> None:
    from_example = load_settings({}, env_file=ENV_EXAMPLE)
    assert from_example == load_settings({}, env_file=None)


def test_env_example_marks_every_secret_as_secret() -> None:
    _, _, comments = _parse_env_example()
    for variable in secret_variables() | {"LUNARA_TOKEN"}:
        assert any("Secret." in line for line in comments[variable]), variable


symbol_strategy = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=5, max_size=20)


@given(
    st.lists(symbol_strategy, min_size=1, max_size=10, unique=True),
    st.sampled_from([",", " , ", ",\t"]),
)
def test_symbol_lists_parse_in_order_whatever_the_spacing_and_case(
    symbols: list[str], separator: str
) -> None:
    raw = separator.join(symbol.lower() for symbol in symbols)
    assert parse_symbols(raw) == tuple(symbols)
    assert load_settings({"LUNARA_SYMBOLS": raw}, env_file=None).symbols == tuple(symbols)


@given(st.decimals(min_value=0, max_value=Decimal("0.0999"), allow_nan=False, places=6))
def test_fee_rates_in_range_are_kept_exactly(rate: Decimal) -> None:
    settings = load_settings({"LUNARA_PAPER_FEE_RATE": str(rate)}, env_file=None)
    assert settings.paper_fee_rate == rate


@given(
    st.sampled_from(["LUNARA_MODE", "LUNARA_TICK_SECONDS", "LUNARA_MARKET", "LUNARA_SYMBOLS"]),
    st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        max_size=30,
    ),
)
def test_any_text_either_parses_or_names_the_variable(variable: str, value: str) -> None:
    # Either outcome passes (a value or a named error): pytest.raises cannot say so.
    try:
        load_settings({variable: value}, env_file=None)
    except SettingsError as error:
        assert all(problem.startswith(f"{variable}: ") for problem in error.problems)  # noqa: PT017
