"""Encryption of stored exchange secrets, with key rotation.

LUNARA_ENCRYPTION_KEY holds Fernet keys, comma-separated: the first encrypts, all
decrypt. Rotating means putting a new key first, keeping the old one after it until
`lunara keys rotate` has re-encrypted every record under the new key.

This module works on plain values (keys, a home) and knows nothing of the settings:
which keys the bot uses, from LUNARA_ENCRYPTION_KEY or a generated file, is decided
in `lunara.keys`, so the settings can check a configured key with `parse_keys`
without the two modules importing each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from blueprint.errors import ConfigError

ENCRYPTION_KEY_VARIABLE = "LUNARA_ENCRYPTION_KEY"
KEY_FILE_NAME = "encryption.key"
KEY_FILE_MODE = 0o600


class MalformedKey(ValueError):
    """A configured key is not a Fernet key; says which one, never what it is."""


class KeyMismatch(ConfigError):
    """A stored record was encrypted with a key the ring does not hold (exit 6)."""

    def __init__(self, record: str) -> None:
        self.record = record
        super().__init__(
            f"could not decrypt {record}: it was encrypted with a key that is not in "
            f"{ENCRYPTION_KEY_VARIABLE}. Put the old key after the new one in "
            f"{ENCRYPTION_KEY_VARIABLE} (comma-separated; a generated key lives in "
            f"LUNARA_HOME/{KEY_FILE_NAME}), restart, then run `lunara keys rotate`."
        )


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def parse_keys(raw: str) -> tuple[Fernet, ...]:
    """Comma-separated Fernet keys → Fernet objects, first one primary."""
    parts = [part.strip() for part in raw.split(",")]
    parts = [part for part in parts if part]
    if not parts:
        raise MalformedKey("holds no key")
    fernets: list[Fernet] = []
    for index, part in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(part.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            position = f"key {index} of {len(parts)}" if len(parts) > 1 else "the key"
            raise MalformedKey(
                f"{position} is not a Fernet key (44 characters of url-safe base64); "
                "separate several keys with commas"
            ) from None
    return tuple(fernets)


class KeyRing:
    """The keys in use: encrypts under the first, decrypts under any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise MalformedKey("holds no key")
        self._fernets = parse_keys(",".join(keys))
        self._multi = MultiFernet(list(self._fernets))
        self._primary_id = _key_id(keys[0].strip())

    @property
    def key_count(self) -> int:
        return len(self._fernets)

    @property
    def primary_key_id(self) -> str:
        """A short, non-secret name for the encrypting key, safe to log."""
        return self._primary_id

    def encrypt(self, plaintext: str) -> bytes:
        return self._multi.encrypt(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes, record: str) -> str:
        """`record` names what is being decrypted, for the error an operator will read."""
        try:
            return self._multi.decrypt(token).decode("utf-8")
        except (InvalidToken, UnicodeDecodeError, TypeError):
            raise KeyMismatch(record) from None

    def rotate(self, token: bytes, record: str) -> bytes:
        """Re-encrypt under the primary key (a token already under it is re-issued too)."""
        try:
            return self._multi.rotate(token)
        except (InvalidToken, TypeError):
            raise KeyMismatch(record) from None

    def is_primary(self, token: bytes) -> bool:
        try:
            self._fernets[0].decrypt(token)
        except (InvalidToken, TypeError):
            return False
        return True

    def __repr__(self) -> str:
        return f"KeyRing(keys={self.key_count}, primary={self._primary_id})"


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode("ascii", "replace")).hexdigest()[:8]


def key_file_path(home: Path) -> Path:
    return home / KEY_FILE_NAME
