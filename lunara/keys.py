"""Which keys the bot encrypts stored secrets with, chosen from its settings.

LUNARA_ENCRYPTION_KEY when it is set; in paper mode with no key configured, one is
generated once into LUNARA_HOME/encryption.key (0600) so a fresh machine just works;
live mode insists on an explicit key, because losing that file would lose every
trader's credentials.

It stands above both `lunara.config` and `lunara.crypto`: the settings check a
configured key with `crypto.parse_keys`, so the ring cannot be loaded from the
settings inside `crypto` without the two importing each other. The callers that need
a ring (the bot, the trading engine, `lunara keys rotate`) load it here.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from lunara.config import Mode, Settings, SettingsError
from lunara.crypto import (
    ENCRYPTION_KEY_VARIABLE,
    KEY_FILE_MODE,
    KEY_FILE_NAME,
    KeyRing,
    MalformedKey,
    generate_key,
    key_file_path,
    parse_keys,
)

logger = logging.getLogger("lunara.keys")


def keyring_from_setting(raw: str) -> KeyRing:
    """The ring from LUNARA_ENCRYPTION_KEY's value; a bad key is a configuration error."""
    try:
        return KeyRing([part for part in raw.split(",") if part.strip()])
    except MalformedKey as error:
        raise SettingsError([f"{ENCRYPTION_KEY_VARIABLE}: {error}"]) from None


def load_keyring(settings: Settings) -> KeyRing:
    """The ring from LUNARA_ENCRYPTION_KEY, else (paper mode only) from the generated file."""
    if settings.encryption_key is not None:
        return keyring_from_setting(settings.encryption_key.get_secret_value())
    if settings.mode is Mode.LIVE:
        raise SettingsError([f"{ENCRYPTION_KEY_VARIABLE}: required in live mode"])
    return KeyRing([_read_or_create_key_file(settings.paths.root)])


def _read_or_create_key_file(home: Path) -> str:
    path = key_file_path(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = home / f".{KEY_FILE_NAME}.{os.getpid()}.tmp"
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, KEY_FILE_MODE
        )
        try:
            os.fchmod(descriptor, KEY_FILE_MODE)
            os.write(descriptor, (generate_key() + "\n").encode("ascii"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            # link() refuses to replace: if another process won the race, its key stands.
            os.link(temporary, path)
            logger.warning(
                "%s is not set: generated an encryption key into %s (paper mode only; "
                "back it up, or set %s)",
                ENCRYPTION_KEY_VARIABLE,
                path,
                ENCRYPTION_KEY_VARIABLE,
            )
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SettingsError(
            [f"{path}: readable by other users (mode {mode:o}); run `chmod 600 {path}`"]
        )
    try:
        key = path.read_text(encoding="ascii").strip()
        parse_keys(key)
    except (MalformedKey, UnicodeDecodeError):
        raise SettingsError(
            [f"{path}: not a Fernet key; restore it from a backup or set {ENCRYPTION_KEY_VARIABLE}"]
        ) from None
    return key
