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
from blueprint.manifest import Permission
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    from blueprint.audit import AuditLog
    from blueprint.control import Controller
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror
    from blueprint.options import Options


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


def open_session(options: Options, permission: Permission, action: str) -> Session:
    """Find the manifest that decides, identify the caller and authorize `permission`
    (audited): the running watchdog decides the verbs on a running deployment, else the
    manifest the home is bound to (see blueprint.authority)."""
    from blueprint.audit import AuditLog, authorize, identify
    from blueprint.authority import WATCHDOG_VERBS, check_bound
    from blueprint.identity import TOKEN_ENV
    from blueprint.locations import home_is_named
    from blueprint.manifest import load_manifest
    from blueprint.mirror import open_mirror

    token = os.environ.get(TOKEN_ENV)
    paths = HomePaths.resolve(options.home)
    decided = None
    if action in WATCHDOG_VERBS:
        decided = _watchdog_decision(paths, action, token, home_is_named(options.home))
    if decided is not None:
        manifest_path, principal = decided
        manifest = load_manifest(manifest_path)
        paths.ensure()
        mirror = open_mirror(
            os.environ.get("REDIS_URL") or None, manifest.name, audit_path=paths.audit
        )
        audit = AuditLog(paths.audit, mirror)
        return Session(paths, manifest, manifest_path, principal, audit, mirror, action)
    manifest_path = check_bound(paths, active_manifest_path(options))
    manifest = load_manifest(manifest_path)
    paths.ensure()
    mirror = open_mirror(os.environ.get("REDIS_URL") or None, manifest.name, audit_path=paths.audit)
    audit = AuditLog(paths.audit, mirror)
    principal = identify(manifest, audit, token, permission, action)
    authorize(manifest, audit, principal, permission, action)
    return Session(paths, manifest, manifest_path, principal, audit, mirror, action)


def _watchdog_decision(
    paths: HomePaths, verb: str, token: str | None, home_named: bool
) -> tuple[Path, str] | None:
    """Ask the running watchdog to authorize `verb`: (its manifest, the caller's
    principal) when allowed; None when no watchdog of ours answers. A refusal (decided
    and audited there) is raised as the watchdog worded it."""
    from blueprint.errors import BlueprintError, ExitCode
    from blueprint.statusclient import ask_authorization

    reply = ask_authorization(paths.control_socket, verb, token, home_named=home_named)
    if reply is None:
        return None
    if reply["exit_code"] != 0:
        code = reply["exit_code"]
        known = code in {int(member) for member in ExitCode}
        raise BlueprintError(reply["message"], ExitCode(code) if known else ExitCode.FAILURE)
    return Path(reply["manifest"]["path"]), str(reply["principal"])


def status_command(options: Options, as_json: bool, quiet: bool) -> int:
    """`lunara status` computed here: return 0 healthy / 3 stopped / 5 unhealthy."""
    from blueprint.ledger import Ledger
    from blueprint.status import compute_status

    session = open_session(options, Permission.STATUS, "status")
    ledger = Ledger(session.paths, session.manifest.name, session.mirror)
    report = compute_status(
        session.paths, session.manifest, ledger, session.mirror, session.principal
    )
    session.outcome(report.state)
    from blueprint.render import print_status

    print_status(report.to_json(), as_json, quiet)
    return int(report.exit_code())


def acts_for_another_user(options: Options) -> bool:
    """Whether the home belongs to another OS user: then the caller (a member of the
    manifest's control group, or root) can neither read it nor signal its processes, and
    the watchdog acts for them (`perform_remotely`)."""
    from blueprint.locations import resolve_home

    try:
        return os.stat(resolve_home(options.home)).st_uid != os.geteuid()
    except OSError:
        return False


def perform_remotely(options: Options, verb: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Have the deployment's watchdog authorize and run `verb`; its reply, or the
    refusal it decided (and audited) raised with its exit code."""
    from blueprint.errors import BlueprintError, ExitCode
    from blueprint.identity import TOKEN_ENV
    from blueprint.locations import control_socket, home_is_named, resolve_home
    from blueprint.statusclient import ask_to_perform

    home = resolve_home(options.home)
    reply = ask_to_perform(
        control_socket(home),
        verb,
        arguments,
        os.environ.get(TOKEN_ENV),
        home_named=home_is_named(options.home),
    )
    if reply is None:
        raise BlueprintError(
            f"{home} belongs to another user and no watchdog of it answers on "
            f"{control_socket(home)}: while it is stopped, only its owner can act on it"
        )
    if reply["exit_code"] != 0:
        code = reply["exit_code"]
        known = code in {int(member) for member in ExitCode}
        raise BlueprintError(reply["message"], ExitCode(code) if known else ExitCode.FAILURE)
    return reply
