"""The one redactor: what a secret looks like, and how it is blanked out.

Every place that writes text someone else may read goes through `Redactor`: the bot's
log filter (`lunara.logs`), the CLI's error messages built from log lines
(`blueprint.control`), the audit log's details (`blueprint.audit`) and `config show`.
One set of rules means a shape learnt in one place protects all of them.

Two kinds of rule, applied in this order:
- the configured secrets themselves (the values of `TOKEN`/`KEY`/`SECRET`/... variables),
  longest first so that a short secret inside a longer one cannot leave the rest of the
  longer one behind;
- shapes of secrets we did not configure: credentials in a URL, `name=value` where the
  name says secret, Telegram bot tokens, 64-character exchange keys.

Stdlib only: the CLI imports it on every command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6
"""Shorter configured values are not searched for: blanking every "abc" would garble
whole log lines, and a 5-character secret is no secret anyway."""

SECRET_NAME = re.compile(
    r"token|secret|passw(?:or)?d|passphrase|credential|private|api[_-]?key"
    r"|(?<![a-z])key(?![a-z])",
    re.IGNORECASE,
)
"""A variable, field or parameter name whose value is a secret (`LUNARA_ENCRYPTION_KEY`,
`api_key`, `password`), but not a name that merely contains the letters (`keys`,
`monkey`)."""

_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:@/]*:)[^\s@]+@")
_NAMED_VALUE = re.compile(
    r"(?i)\b([\w.-]*?(?:" + SECRET_NAME.pattern + r")[\w.-]*)"  # the name
    r"(\"?'?\s*[=:]\s*[\"']?)"  # =, : or ": " with optional quotes
    r"(?!\[redacted\])([^\s\"'&,;]+)"  # the value, up to a separator
)
# Telegram bot tokens: the bot id, a colon, 35 url-safe characters (`-` and `_`
# included). No word boundary before the id: in `/bot123:ABC.../getMe` there is none.
_TELEGRAM_TOKEN = re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}")
# Binance API keys and secrets: 64 letters and digits. A lowercase hex string of that
# length is a SHA-256 digest (a manifest's content hash), not a key, and stays.
_EXCHANGE_KEY = re.compile(
    r"(?<![A-Za-z0-9])(?![0-9a-f]{64}(?![A-Za-z0-9]))[A-Za-z0-9]{64}(?![A-Za-z0-9])"
)


class Redactor:
    """Blanks out configured secrets and anything shaped like a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted(
            {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH},
            key=len,
            reverse=True,
        )

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
        text = _NAMED_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        text = _TELEGRAM_TOKEN.sub(REDACTED, text)
        return _EXCHANGE_KEY.sub(REDACTED, text)

    def redact_mapping(self, detail: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `detail`: values under secret names blanked, text redacted, at any
        depth (audit entries, JSON documents)."""
        clean: dict[str, Any] = {}
        for key, value in detail.items():
            name = str(key)
            if SECRET_NAME.search(name):
                clean[name] = REDACTED
            else:
                clean[name] = self._redact_value(value)
        return clean

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return self.redact_mapping(value)
        if isinstance(value, list | tuple):
            return [self._redact_value(item) for item in value]
        return value


def secrets_in_environ(environ: Mapping[str, str]) -> list[str]:
    """The values of secret-named variables, each comma-separated part too (a key ring
    such as `LUNARA_ENCRYPTION_KEY=new,old` must not leave `old` behind)."""
    values: list[str] = []
    for name, value in environ.items():
        if SECRET_NAME.search(name) and value:
            values.append(value)
            values.extend(part.strip() for part in value.split(",") if part.strip())
    return values


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with `secrets` and secret shapes blanked out (one-off use)."""
    return Redactor(secrets).redact(text)
