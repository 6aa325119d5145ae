"""The Redis mirror of the ledger and the audit log (interface; implementation to follow)."""

from __future__ import annotations

from typing import Any, Protocol


class Mirror(Protocol):
    """Where ledger writes and audit entries are copied. Never raises, never blocks long."""

    backend: str  # "redis" or "off"

    def publish_ledger(self, document: dict[str, Any]) -> None: ...

    def fetch_ledger(self) -> dict[str, Any] | None: ...

    def append_event(self, event: dict[str, Any]) -> None: ...

    def append_audit(self, entry: dict[str, Any]) -> None: ...

    def health(self) -> dict[str, Any]: ...


class NullMirror:
    """The mirror when REDIS_URL is not set: every call is a no-op."""

    backend = "off"

    def publish_ledger(self, document: dict[str, Any]) -> None:
        return None

    def fetch_ledger(self) -> dict[str, Any] | None:
        return None

    def append_event(self, event: dict[str, Any]) -> None:
        return None

    def append_audit(self, entry: dict[str, Any]) -> None:
        return None

    def health(self) -> dict[str, Any]:
        return {"backend": "off", "healthy": True, "synced_revision": None}
