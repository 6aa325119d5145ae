"""The CLI's global options and its one error boundary.

They sit below `cli.py`, `commands.py` and `session.py` so that each of those imports
downward: the entry point dispatches to the commands, and the commands and sessions
need the options and the boundary without importing the entry point back.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from blueprint.errors import BlueprintError, ExitCode


class Options:
    """Global options given before the command."""

    __slots__ = ("home", "manifest")

    def __init__(self, home: Path | None = None, manifest: Path | None = None) -> None:
        self.home = home
        self.manifest = manifest


def run_guarded(action: Callable[[], int]) -> int:
    """The CLI's one error boundary: expected failures become a message and an exit code."""
    try:
        return action()
    except BlueprintError as error:
        sys.stderr.write(f"lunara: {error.message}\n")
        return int(error.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lunara status | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as error:  # a home that is a file, a manifest that is a directory...
        where = f" ({error.filename})" if error.filename else ""
        sys.stderr.write(f"lunara: {error.strerror or error}{where}\n")
        return int(ExitCode.FAILURE)


__all__ = ["Options", "run_guarded"]
