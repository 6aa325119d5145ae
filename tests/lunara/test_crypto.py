from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from blueprint.errors import ExitCode
from lunara.config import Mode, Settings, SettingsError, load_settings
from lunara.crypto import (
    KEY_FILE_NAME,
    KeyMismatch,
    KeyRing,
    MalformedKey,
    generate_key,
    parse_keys,
)
from lunara.keys import keyring_from_setting, load_keyring


def test_encrypts_and_decrypts_without_plaintext_in_the_token() -> None:
    ring = KeyRing([generate_key()])
    token = ring.encrypt("my-api-secret-value")
    assert b"my-api-secret-value" not in token
    assert ring.decrypt(token, "test record") == "my-api-secret-value"


def test_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = generate_key(), generate_key()
    token_under_old = KeyRing([old]).encrypt("secret")
    ring = KeyRing([new, old])
    assert ring.decrypt(token_under_old, "record") == "secret"
    fresh = ring.encrypt("secret")
    assert KeyRing([new]).decrypt(fresh, "record") == "secret"
    with pytest.raises(KeyMismatch):
        KeyRing([old]).decrypt(fresh, "record")


def test_rotate_moves_a_token_to_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    token = KeyRing([old]).encrypt("secret")
    ring = KeyRing([new, old])
    assert not ring.is_primary(token)
    rotated = ring.rotate(token, "record")
    assert ring.is_primary(rotated)
    assert KeyRing([new]).decrypt(rotated, "record") == "secret"


def test_key_mismatch_names_the_record_and_says_what_to_do() -> None:
    token = KeyRing([generate_key()]).encrypt("secret")
    with pytest.raises(KeyMismatch) as caught:
        KeyRing([generate_key()]).decrypt(token, "the binance API key of user 42")
    message = str(caught.value)
    assert "the binance API key of user 42" in message
    assert "LUNARA_ENCRYPTION_KEY" in message
    assert "lunara keys rotate" in message
    assert caught.value.exit_code is ExitCode.INVALID_CONFIG


def test_malformed_keys_are_named_by_position_never_by_value() -> None:
    good = generate_key()
    with pytest.raises(MalformedKey) as caught:
        parse_keys(f"{good},not-a-key-value")
    assert "key 2 of 2" in str(caught.value)
    assert "not-a-key-value" not in str(caught.value)
    with pytest.raises(SettingsError) as setting_error:
        keyring_from_setting("not-a-key-value")
    assert "LUNARA_ENCRYPTION_KEY" in str(setting_error.value)
    assert "not-a-key-value" not in str(setting_error.value)
    with pytest.raises(MalformedKey):
        parse_keys(" , ")


def test_keyring_repr_shows_no_key_material() -> None:
    key = generate_key()
    ring = KeyRing([key])
    assert key not in repr(ring)
    assert ring.primary_key_id in repr(ring)
    assert ring.key_count == 1


def _paper_settings(home: Path, **extra: str) -> Settings:
    return load_settings({"LUNARA_HOME": str(home), **extra}, env_file=None)


def test_configured_key_is_used_and_no_file_is_written(home: Path) -> None:
    key = generate_key()
    ring = load_keyring(_paper_settings(home, LUNARA_ENCRYPTION_KEY=key))
    assert Fernet(key.encode()).decrypt(ring.encrypt("x")) == b"x"
    assert not (home / KEY_FILE_NAME).exists()


def test_paper_mode_generates_a_private_key_file_once(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _paper_settings(home)
    with caplog.at_level(logging.WARNING, logger="lunara.keys"):
        first = load_keyring(settings)
    key_file = home / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "generated an encryption key" in warnings[0].getMessage()
    assert key not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lunara.keys"):
        second = load_keyring(settings)
    assert caplog.records == []
    assert key_file.read_text().strip() == key
    assert second.decrypt(first.encrypt("secret"), "record") == "secret"
    assert list(home.iterdir()) == [key_file]


def test_a_key_file_readable_by_others_is_refused(home: Path) -> None:
    key_file = home / KEY_FILE_NAME
    key_file.write_text(generate_key())
    key_file.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_keyring(_paper_settings(home))


def test_a_damaged_key_file_is_a_clear_error(home: Path) -> None:
    key_file = home / KEY_FILE_NAME
    key_file.write_text("garbage")
    key_file.chmod(0o600)
    with pytest.raises(SettingsError, match="not a Fernet key") as caught:
        load_keyring(_paper_settings(home))
    assert "garbage" not in str(caught.value)


def test_live_mode_never_generates_a_key(home: Path) -> None:
    settings = Settings.model_construct(home=home, mode=Mode.LIVE, encryption_key=None)
    with pytest.raises(SettingsError, match="LUNARA_ENCRYPTION_KEY: required in live mode"):
        load_keyring(settings)
    assert not (home / KEY_FILE_NAME).exists()
