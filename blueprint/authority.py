"""Which manifest decides: the running watchdog's, else the one bound to the home.

Whoever runs the CLI picks `--manifest`, so the manifest given can never be what
authorizes a deployment that already has one, as supervisorctl cannot hand supervisord
a new configuration file. Two rules, like supervisord's:

- A running watchdog is the authority. It keeps the manifest it was started with (its
  path and the SHA-256 of its text) and answers over its control socket: the CLI asks
  it to authorize `status`, `stop`, `restart`, `logs` and `audit`, and it identifies
  the caller (SO_PEERCRED or the token), decides with its own manifest and audits.
- A home is bound to the manifest of its first start (`LUNARA_HOME/manifest.bound`,
  written by the watchdog). With no watchdog running, every command is checked against
  that manifest, and a command naming another one is refused: a forged manifest
  neither grants a role nor gets its `program.command` run. The home's owner rebinds
  by deleting `manifest.bound` (who can delete it could edit the home anyway).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blueprint.errors import ConfigError, ExitCode
from blueprint.manifest import Permission
from blueprint.paths import HomePaths

if TYPE_CHECKING:
    from blueprint.manifest import Manifest

WATCHDOG_VERBS: dict[str, Permission] = {
    "status": Permission.STATUS,
    "stop": Permission.STOP,
    "restart": Permission.RESTART,
    "logs": Permission.LOGS,
    "audit": Permission.AUDIT,
}
"""The verbs on a running deployment that its watchdog authorizes, with what they need."""


@dataclass(frozen=True)
class Binding:
    """The manifest a home belongs to."""

    path: Path
    sha256: str | None


class ManifestMismatch(ConfigError):
    """The manifest given is not the one this home is bound to (exit 6)."""


def read_binding(paths: HomePaths) -> Binding | None:
    """The home's binding; None when it has none (never started) or it is unreadable."""
    from blueprint.trust import open_private

    try:
        descriptor = open_private(paths.bound_manifest, os.O_RDONLY)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        raw = handle.read(64 * 1024)
    try:
        document = json.loads(raw)
        path = Path(document["path"])
        digest = document.get("sha256")
    except (ValueError, KeyError, TypeError):
        return None
    if not path.is_absolute():
        return None
    return Binding(path, digest if isinstance(digest, str) else None)


def write_binding(paths: HomePaths, manifest: Manifest) -> None:
    """Bind the home to the manifest a watchdog starts with (its path and hash)."""
    from blueprint.trust import replace_private

    if manifest.source is None:
        return
    document = {"path": os.path.realpath(manifest.source), "sha256": manifest.sha256}
    replace_private(paths.bound_manifest, (json.dumps(document) + "\n").encode())


def check_bound(paths: HomePaths, given: Path) -> Path:
    """The manifest to use for a command on this home: `given` when the home is unbound
    or bound to it; ManifestMismatch when the home is bound to another one."""
    binding = read_binding(paths)
    if binding is None or os.path.realpath(given) == os.path.realpath(binding.path):
        return given
    raise ManifestMismatch(
        f"{paths.root} belongs to the manifest {binding.path}, not {given}: a manifest "
        f"given on the command line never replaces a deployment's. Use --manifest "
        f"{binding.path}; to move the deployment to another manifest, its owner deletes "
        f"{paths.bound_manifest} while it is stopped",
        ExitCode.INVALID_CONFIG,
    )
