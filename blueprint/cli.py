"""The `lunara` command line: entry point, sessions and the one error boundary.

Every command follows the same path: load and validate the manifest, work out who is
asking, authorize and audit, act, audit the outcome. Failures surface as
`BlueprintError`s and become a message and an exit code in exactly one place
(`run_guarded`).

The commands themselves are a Typer app (`blueprint.commands`). `lunara status` is
the hot path — container HEALTHCHECKs and CI loops call it every few seconds — so a
plain `status [--json] [--quiet]` is answered without importing Typer at all; it runs
the very same `status_command` the Typer command runs, and anything else (other
flags, `--help`, typos) goes through Typer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blueprint.errors import BlueprintError, ExitCode
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    import typer

    from blueprint.audit import AuditLog
    from blueprint.control import Controller
    from blueprint.manifest import Manifest
    from blueprint.mirror import Mirror


@dataclass
class Options:
    """Global options given before the command."""

    home: Path | None = None
    manifest: Path | None = None


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
    from blueprint.manifest import resolve_manifest_path

    return resolve_manifest_path(str(options.manifest) if options.manifest else None)


def open_session(options: Options, permission: str, action: str) -> Session:
    """Load the manifest, identify the caller and authorize `permission` (audited)."""
    from blueprint.audit import AuditLog, authorize
    from blueprint.identity import cli_principal
    from blueprint.manifest import load_manifest
    from blueprint.mirror import open_mirror

    manifest_path = active_manifest_path(options)
    manifest = load_manifest(manifest_path)
    paths = HomePaths.resolve(options.home)
    paths.ensure()
    mirror = open_mirror(os.environ.get("REDIS_URL") or None, manifest.name, audit_path=paths.audit)
    audit = AuditLog(paths.audit, mirror)
    principal = cli_principal(manifest, os.environ)
    authorize(manifest, audit, principal, permission, action)
    return Session(paths, manifest, manifest_path, principal, audit, mirror, action)


def status_command(options: Options, as_json: bool, quiet: bool) -> int:
    """`lunara status`: print the report, return 0 healthy / 3 stopped / 5 unhealthy."""
    session = open_session(options, "bot.status", "status")
    report = session.controller.status(session.principal)
    session.outcome(report.state)
    if quiet:
        pass
    elif as_json:
        from blueprint.render import print_json

        print_json(report.to_json())
    else:
        from blueprint.render import print_mapping

        print_mapping(f"lunara: {report.state}", report.to_json())
    return int(report.exit_code())


def run_guarded(action: Callable[[], int]) -> int:
    """The CLI's one error boundary: expected failures become a message and an exit code."""
    try:
        return action()
    except BlueprintError as error:
        sys.stderr.write(f"lunara: {error.message}\n")
        return int(error.exit_code)
    except KeyboardInterrupt:
        return 130


def _fast_status(argv: Sequence[str]) -> tuple[Options, bool, bool] | None:
    """Recognise exactly `[--home X] [--manifest Y] status [--json] [--quiet|-q]`."""
    options = Options()
    index = 0
    while index < len(argv) and argv[index] in ("--home", "--manifest"):
        if index + 1 >= len(argv):
            return None
        value = Path(argv[index + 1])
        if argv[index] == "--home":
            options.home = value
        else:
            options.manifest = value
        index += 2
    if index >= len(argv) or argv[index] != "status":
        return None
    flags = argv[index + 1 :]
    allowed = {"--json", "--quiet", "-q"}
    if any(flag not in allowed for flag in flags) or len(set(flags)) != len(flags):
        return None
    return options, "--json" in flags, "--quiet" in flags or "-q" in flags


def main(
    argv: Sequence[str] | None = None, load_app: Callable[[], typer.Typer] | None = None
) -> None:
    """Run the CLI. `load_app` lets the bot add its own commands (lunara.cli) to the
    control plane's app without blueprint ever importing the bot."""
    arguments = list(argv if argv is not None else sys.argv[1:])
    fast = _fast_status(arguments)
    if fast is not None:
        options, as_json, quiet = fast
        sys.exit(run_guarded(lambda: status_command(options, as_json, quiet)))
    if load_app is None:
        from blueprint.commands import app
    else:
        app = load_app()
    app(args=arguments, prog_name="lunara")


__all__ = ["ExitCode", "Options", "Session", "main", "open_session", "run_guarded"]
