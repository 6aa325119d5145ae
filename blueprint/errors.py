"""Exit codes shared by every CLI command, and the one exception type that carries them.

The mapping from failures to exit codes lives here and nowhere else, so CI scripts
can branch on a code without caring which command produced it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """LSB-style exit codes (see DESIGN.md, "Exit codes")."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_RUNNING = 3
    PERMISSION_DENIED = 4
    UNHEALTHY = 5
    INVALID_CONFIG = 6
    START_FAILED = 7


class BlueprintError(Exception):
    """An expected failure with a message fit for an operator and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(BlueprintError):
    """The manifest or the configuration is invalid (exit 6)."""

    exit_code = ExitCode.INVALID_CONFIG


class PermissionDenied(BlueprintError):
    """The manifest does not grant the permission asked for (exit 4)."""

    exit_code = ExitCode.PERMISSION_DENIED


class StartFailed(BlueprintError):
    """The bot could not be started, died while starting, or --wait timed out (exit 7)."""

    exit_code = ExitCode.START_FAILED
