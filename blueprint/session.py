"""An authorized CLI session: the manifest, who is asking, the audit log, the controller.

Every command opens one: load and validate the manifest, identify the caller,
authorize and audit the permission, then act and audit the outcome.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blueprint.locations import resolve_manifest
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    from blueprint.audit import AuditLog
    from blueprint.cli import Options
    from blueprint.control import Controller
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror


@dataclass
class Session:
    """Everything an authorized command works with."""

    paths: HomePaths
    manifest: Manifest
    manifest_path: Path
    principal: str
    audit: AuditLog
    mirror: Mirror
    action: str
    _controller: Controller | None = field(default=None, repr=False)

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            from blueprint.control import Controller
            from blueprint.ledger import Ledger

            ledger = Ledger(self.paths, self.manifest.name, self.mirror)
            self._controller = Controller(
                self.paths, self.manifest, self.manifest_path, ledger, self.mirror
            )
        return self._controller

    def outcome(self, outcome: str, detail: dict[str, Any] | None = None) -> None:
        """Audit what an allowed command ended with."""
        from blueprint.audit import Decision

        self.audit.record(self.principal, self.action, Decision.ALLOWED, outcome, detail)


def active_manifest_path(options: Options) -> Path:
    return resolve_manifest(str(options.manifest) if options.manifest else None)


def open_session(options: Options, permission: str, action: str) -> Session:
    """Load the manifest, identify the caller and authorize `permission` (audited)."""
    from blueprint.audit import AuditLog, authorize, identify
    from blueprint.identity import TOKEN_ENV
    from blueprint.manifest import load_manifest
    from blueprint.mirror import open_mirror

    manifest_path = active_manifest_path(options)
    manifest = load_manifest(manifest_path)
    paths = HomePaths.resolve(options.home)
    paths.ensure()
    mirror = open_mirror(os.environ.get("REDIS_URL") or None, manifest.name, audit_path=paths.audit)
    audit = AuditLog(paths.audit, mirror)
    principal = identify(manifest, audit, os.environ.get(TOKEN_ENV), permission, action)
    authorize(manifest, audit, principal, permission, action)
    return Session(paths, manifest, manifest_path, principal, audit, mirror, action)


def status_command(options: Options, as_json: bool, quiet: bool) -> int:
    """`lunara status` computed here: return 0 healthy / 3 stopped / 5 unhealthy."""
    from blueprint.ledger import Ledger
    from blueprint.status import compute_status

    session = open_session(options, "bot.status", "status")
    ledger = Ledger(session.paths, session.manifest.name, session.mirror)
    report = compute_status(
        session.paths, session.manifest, ledger, session.mirror, session.principal
    )
    session.outcome(report.state)
    from blueprint.render import print_status

    print_status(report.to_json(), as_json, quiet)
    return int(report.exit_code())
