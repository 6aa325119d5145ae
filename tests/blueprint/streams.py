"""Reading the mirror's Redis streams back in the tests."""

from __future__ import annotations

from typing import cast

from redis.typing import StreamRangeResponse


def stream_fields(entries: StreamRangeResponse | None) -> list[dict[bytes, bytes]]:
    """The fields of each entry XRANGE or XREVRANGE returned, in their order. redis-py
    types them loosely (str or bytes, None for a deleted entry); the tests' clients do
    not decode responses and read live entries, so every name and value is bytes."""
    return [cast("dict[bytes, bytes]", fields) for _, fields in entries or []]
