"""Where things are, from the command line and the environment, with nothing heavy imported.

The `status` client runs before anything else is loaded, so the rules for finding
LUNARA_HOME, the manifest and the watchdog's control socket live here, in one light
module that `HomePaths` and the manifest loader use too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOME = ".lunara"
DEFAULT_MANIFEST = "manifest.json"
MANIFEST_ENV = "LUNARA_MANIFEST"
CONTROL_SOCKET = "control.sock"


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The home given, else $LUNARA_HOME, else ./.lunara — always absolute. A blank
    LUNARA_HOME means the default, never the working directory."""
    raw = explicit if explicit is not None else os.environ.get("LUNARA_HOME", "").strip()
    return Path(raw or DEFAULT_HOME).expanduser().resolve()


def home_is_named(explicit: str | os.PathLike[str] | None = None) -> bool:
    """Whether the home was chosen (--home or LUNARA_HOME), not the ./.lunara default,
    which in a shared working directory could be anyone's."""
    return explicit is not None or bool(os.environ.get("LUNARA_HOME", "").strip())


def resolve_manifest(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The manifest given, else $LUNARA_MANIFEST, else ./manifest.json."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get(MANIFEST_ENV, "").strip() or DEFAULT_MANIFEST
    return Path(chosen).expanduser()


def control_socket(home: Path) -> Path:
    return home / CONTROL_SOCKET
