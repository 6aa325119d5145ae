"""The one redactor, value by value: each shape of secret is blanked and its name kept,
and what is not a secret (a digest, a host, a count) stays readable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.redaction import (
    MIN_SECRET_LENGTH,
    REDACTED,
    Redactor,
    redact,
    secrets_in_environ,
)

EXCHANGE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
TELEGRAM_TOKEN_WITH_DASH = "7312345678:AAH3kq9-xV0b1c2d3e4f5g6h7i8j9k0lMn-pQr"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2xyz", f"password={REDACTED}"),
        ("login user=ann password=hunter2xyz ok", f"login user=ann password={REDACTED} ok"),
        ("?api_key=abc123&symbol=BTCUSDT", f"?api_key={REDACTED}&symbol=BTCUSDT"),
        ('{"token": "s3cr3t-value"}', f'{{"token": "{REDACTED}"}}'),
        ("LUNARA_ENCRYPTION_KEY=Zm9vYmFy", f"LUNARA_ENCRYPTION_KEY={REDACTED}"),
        ("keys=3 monkey=george", "keys=3 monkey=george"),
    ],
)
def test_a_named_secret_keeps_its_name_and_loses_its_value(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_bare_64_character_exchange_key_is_blanked() -> None:
    assert redact(f"signing with {EXCHANGE_KEY} now") == f"signing with {REDACTED} now"


def test_a_sha256_digest_is_not_mistaken_for_a_key() -> None:
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    assert redact(f"manifest {digest}") == f"manifest {digest}"


@pytest.mark.parametrize(
    "text",
    [
        f"token {TELEGRAM_TOKEN_WITH_DASH} rejected",
        f"POST https://api.telegram.org/bot{TELEGRAM_TOKEN_WITH_DASH}/getMe",
        f"{TELEGRAM_TOKEN_WITH_DASH}-",
    ],
)
def test_a_telegram_token_with_dashes_is_blanked_whole(text: str) -> None:
    cleaned = redact(text)
    assert REDACTED in cleaned
    for part in TELEGRAM_TOKEN_WITH_DASH.split("-"):  # nothing left on either side of a -
        assert part not in cleaned


def test_a_short_secret_inside_a_longer_one_leaves_nothing_of_either() -> None:
    short, long = "hunter2", "hunter2-and-much-more"
    cleaned = Redactor([short, long]).redact(f"a {long} b {short} c")
    assert cleaned == f"a {REDACTED} b {REDACTED} c"


def test_the_longer_secret_goes_first_even_when_it_sorts_first() -> None:
    """Longest first, not in reverse alphabetical order: here the short one sorts last."""
    short, long = "zzzzzz9", "a-zzzzzz9-b"
    assert Redactor([short, long]).redact(f"x {long} y") == f"x {REDACTED} y"


def test_a_configured_secret_of_the_minimum_length_is_blanked_a_shorter_one_not() -> None:
    at_minimum, shorter = "q" * MIN_SECRET_LENGTH, "w" * (MIN_SECRET_LENGTH - 1)
    redactor = Redactor([at_minimum, shorter])
    assert redactor.redact(f"{at_minimum} {shorter}") == f"{REDACTED} {shorter}"


def test_credentials_in_a_url_are_blanked_and_the_location_kept() -> None:
    assert (
        redact("redis://lunara:hunter2xyz@10.0.0.5:6379/2 down")
        == f"redis://lunara:{REDACTED}@10.0.0.5:6379/2 down"
    )
    assert redact("rediss://:pa55word@cache:6380") == f"rediss://:{REDACTED}@cache:6380"


def test_secret_variables_of_an_environment_and_each_key_of_a_ring() -> None:
    environ = {
        "LUNARA_ENCRYPTION_KEY": "newkey-aaaa,oldkey-bbbb",
        "TELEGRAM_BOT_TOKEN": "x",
        "HOME": "/root",
        "KEYS_DIR": "/etc/keys",
    }
    found = secrets_in_environ(environ)
    assert "newkey-aaaa" in found
    assert "oldkey-bbbb" in found
    assert "/root" not in found
    assert "/etc/keys" not in found
    cleaned = Redactor(found).redact("decrypt with oldkey-bbbb under /root")
    assert cleaned == f"decrypt with {REDACTED} under /root"


def test_a_mapping_is_redacted_by_name_and_by_shape_at_any_depth() -> None:
    detail = {
        "password": "hunter2xyz",
        "nested": {"note": f"key {EXCHANGE_KEY}", "items": ["password=abc123"]},
        "count": 3,
    }
    assert Redactor().redact_mapping(detail) == {
        "password": REDACTED,
        "nested": {"note": f"key {REDACTED}", "items": [f"password={REDACTED}"]},
        "count": 3,
    }


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_configured_secret_never_survives_whatever_surrounds_it(before: str, after: str) -> None:
    secret = "Zq8x-secret-value"
    assert secret not in Redactor([secret]).redact(f"{before}{secret}{after}")
